package api

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProtect(t *testing.T) {
	t.Parallel()
	const token = "s3cret-token-0123456789"
	h := Protect(token, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot) // reached the API
	}))
	for _, c := range []struct {
		path, auth string
		want       int
	}{
		{"/v1/status", "", http.StatusUnauthorized},
		{"/v1/hardware/web-01", "Bearer wrong", http.StatusUnauthorized},
		{"/v1/runs", "Bearer " + token + "x", http.StatusUnauthorized},
		{"/v1/runs", "Bearer " + token[:len(token)-1], http.StatusUnauthorized},
		{"/v1/runs", "Basic " + token, http.StatusUnauthorized},
		{"/v1/runs", token, http.StatusUnauthorized},
		{"/v1/status", "Bearer " + token, http.StatusTeapot},
		{"/v1/runs/r1/logs", "Bearer " + token, http.StatusTeapot},
		// Open: their own checks, or nothing of any machine's.
		{"/v1/hooks/git", "", http.StatusTeapot},
		{"/v1/agent/hello", "", http.StatusTeapot},
		{"/healthz", "", http.StatusTeapot},
		{"/metrics", "", http.StatusTeapot},
		{"/ipxe/52:54:00:00:00:01/boot.ipxe", "", http.StatusTeapot},
		// No way around it through the path.
		{"/v1//status", "", http.StatusUnauthorized},
		{"/v1/agent/../status", "", http.StatusUnauthorized},
		{"/ipxe/../v1/hardware", "", http.StatusUnauthorized},
	} {
		req := httptest.NewRequest("GET", "http://gitmetal"+c.path, nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("%s with %q: got %d, want %d", c.path, c.auth, rec.Code, c.want)
		}
		if rec.Code == http.StatusUnauthorized && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: 401 without a Bearer challenge", c.path)
		}
	}
}

func TestReadToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct {
		content, want, err string
	}{
		{"0123456789abcdef\n", "0123456789abcdef", ""},
		{"  tok-0123456789abcdef  \n", "tok-0123456789abcdef", ""},
		{"short\n", "", "at least 16"},
		{"0123456789 abcdef", "", "printable ASCII without spaces"},
	} {
		p := filepath.Join(dir, "token")
		if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadToken(p)
		if c.err == "" && (err != nil || got != c.want) || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("ReadToken(%q): %q, %v; want %q, error containing %q", c.content, got, err, c.want, c.err)
		}
	}
}

package netlab

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestAccessLog: each answered request is recorded with its status, the
// bytes of its body, its range and the client's address.
func TestAccessLog(t *testing.T) {
	t.Parallel()
	var lines strings.Builder
	a := NewAccessLog(zerolog.New(&lines))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /file", func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "file", time.Time{}, strings.NewReader("0123456789"))
	})
	srv := httptest.NewServer(a.Wrap(mux))
	defer srv.Close()
	get := func(path, rng string) {
		t.Helper()
		req, err := http.NewRequest("GET", srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get("/file", "")
	get("/file", "bytes=4-")
	get("/missing", "")

	got := a.Requests("/file")
	want := []Access{
		{Method: "GET", Path: "/file", Remote: "127.0.0.1", Status: 200, Bytes: 10},
		{Method: "GET", Path: "/file", Range: "bytes=4-", Remote: "127.0.0.1", Status: 206, Bytes: 6},
	}
	if len(got) != len(want) {
		t.Fatalf("Requests(/file): got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if m := a.Requests("/missing"); len(m) != 1 || m[0].Status != 404 {
		t.Errorf("Requests(/missing): got %+v, want one 404", m)
	}
	if n := strings.Count(lines.String(), `"message":"http request"`); n != 3 {
		t.Errorf("log: %d request lines, want 3:\n%s", n, lines.String())
	}
}

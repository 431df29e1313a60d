package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"strings"
)

// Protect puts h behind a bearer token: a request under /v1/ needs the
// header "Authorization: Bearer <token>", or gets 401. Three things stay
// open: the webhook (/v1/hooks/, which checks its own signature), the
// agent protocol (/v1/agent/, which checks its per-boot tokens), and what
// is outside /v1/ (health, readiness and metrics, which hold no machine's
// data; iPXE scripts, binaries and the installer, which machines fetch).
//
// The comparison takes the same time whatever the header holds: both
// sides are hashed first, so neither the token's length nor its prefix
// can be timed.
func Protect(token string, h http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Decide on the path as the mux will route it ("/v1/agent/../runs"
		// is "/v1/runs").
		p := path.Clean(r.URL.Path)
		if strings.HasSuffix(r.URL.Path, "/") && p != "/" {
			p += "/"
		}
		if !strings.HasPrefix(p, "/v1/") || strings.HasPrefix(p, "/v1/hooks/") || strings.HasPrefix(p, "/v1/agent/") {
			h.ServeHTTP(w, r)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gitmetal"`)
			http.Error(w, "this API needs its bearer token (gitmetal status --api-token-file)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// MinTokenLength is the shortest API token ReadToken accepts.
const MinTokenLength = 16

// ReadToken reads an API token from path: the file's content without
// surrounding white space, at least MinTokenLength characters, printable
// ASCII without spaces.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < MinTokenLength {
		return "", fmt.Errorf("%s: the token has %d characters, want at least %d (for example: head -c 32 /dev/urandom | base64 > %s)", path, len(tok), MinTokenLength, path)
	}
	for _, c := range tok {
		if c <= ' ' || c > '~' {
			return "", errors.New(path + ": the token must be printable ASCII without spaces")
		}
	}
	return tok, nil
}

package hegel

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// FuzzServe sends arbitrary paths, queries and headers from web-01's
// address and from the trusted proxy: hegel must not panic, must answer
// with a status it documents, and must never answer with db-01's data
// unless the trusted proxy forwarded for db-01.
func FuzzServe(f *testing.F) {
	for _, seed := range []struct{ target, xff, token string }{
		{"/latest/meta-data/", "", ""},
		{"/latest/meta-data/network/interfaces/macs/52:54:00:00:02:01/local-ipv4s", dbAddr, ""},
		{"/v1/metadata?index=0&wait=1ms", "", "x"},
		{"/nocloud/meta-data", "10.77.1.3, 10.77.9.1", ""},
		{"/latest/meta-data/instance/network/addresses/0/address", "::ffff:10.77.1.3", ""},
		{"/latest/api/token", "", ""},
	} {
		f.Add(seed.target, seed.xff, seed.token, false)
		f.Add(seed.target, seed.xff, seed.token, true)
	}
	// The fuzz target may not log through f.
	s, _ := newTestServer(f, func(c *Config) { c.Log = zerolog.Nop() })
	h := s.Handler()
	f.Fuzz(func(t *testing.T, target, xff, token string, viaProxy bool) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t#") {
			return // not a request line net/http would accept
		}
		r, err := http.NewRequest(http.MethodGet, "http://hegel"+target, nil)
		if err != nil {
			return
		}
		// A long poll takes the first wait=: keep the fuzzer from
		// waiting a minute on one.
		r.URL.RawQuery = "wait=1ms&" + r.URL.RawQuery
		from := webAddr
		if viaProxy {
			from = proxyAddr
		}
		r.RemoteAddr = from + ":40000"
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		if token != "" {
			r.Header.Set(HeaderToken, token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case 200, 400, 401, 404, 405, 414:
		default:
			t.Fatalf("GET %q (xff %q): got status %d", target, xff, w.Code)
		}
		if !viaProxy || !strings.Contains(xff, "10.77.1.3") {
			if l := leaks(w.Body.String(), dbMarkers); len(l) > 0 && !strings.Contains(target, "10.77.1.3") {
				t.Fatalf("GET %q from %s (xff %q): answer contains db-01's %q", target, from, xff, l)
			}
		}
	})
}

package hegel

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkHostname is the handler alone (no network) answering the
// benchmark's request; the wrk comparison is in ./bench.
func BenchmarkHostname(b *testing.B) {
	s, _ := newTestServer(b, nil)
	h := s.Handler()
	r := httptest.NewRequest(http.MethodGet, "/latest/meta-data/hostname", nil)
	r.RemoteAddr = webAddr + ":40000"
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatalf("got %d", w.Code)
		}
	}
}

package netlab

import (
	"net"
	"net/http"
	"sync"

	"github.com/rs/zerolog"
)

// AccessLog records the requests an HTTP server in a lab answered: the
// server side of what a machine fetched, for tests to check who got what.
type AccessLog struct {
	log zerolog.Logger
	mu  sync.Mutex
	all []Access
}

// Access is one answered request.
type Access struct {
	Method, Path, Range string
	Remote              string // the client's address, without port
	Status              int
	Bytes               int64 // of the body written
}

// NewAccessLog returns an empty log that also writes a line per request
// to log (zerolog.Nop() for none).
func NewAccessLog(log zerolog.Logger) *AccessLog {
	return &AccessLog{log: log}
}

// Wrap returns h, recording each request it answers.
func (a *AccessLog) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &recorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rw, r)
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		e := Access{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"), Remote: host, Status: rw.status, Bytes: rw.bytes}
		a.log.Info().Str("method", e.Method).Str("path", e.Path).Str("remote", e.Remote).
			Int("status", e.Status).Int64("bytes", e.Bytes).Str("range", e.Range).Msg("http request")
		a.mu.Lock()
		a.all = append(a.all, e)
		a.mu.Unlock()
	})
}

// Requests returns the requests for path so far, oldest first.
func (a *AccessLog) Requests(path string) []Access {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Access
	for _, e := range a.all {
		if e.Path == path {
			out = append(out, e)
		}
	}
	return out
}

// recorder notes the status and the body size a handler wrote.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

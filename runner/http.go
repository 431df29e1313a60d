package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/runner/journal"
	"github.com/gitmetal/gitmetal/runner/protocol"
)

// httpError is an error with the status it answers.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func errorf(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

// writeError answers err as JSON with its status: an httpError's, 404 for
// a missing run, 500 otherwise.
func writeError(w http.ResponseWriter, log zerolog.Logger, err error) {
	code := http.StatusInternalServerError
	var he *httpError
	switch {
	case errors.As(err, &he):
		code = he.code
	case errors.Is(err, journal.ErrNotFound):
		code = http.StatusNotFound
	}
	if code >= 500 {
		log.Error().Err(err).Msg("request failed")
	} else {
		log.Debug().Err(err).Int("status", code).Msg("request refused")
	}
	writeJSON(w, code, protocol.Error{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// recovered turns a panic in a handler into a 500 for that request alone.
func (r *Runner) recovered(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		log := r.log.With().Str("method", req.Method).Str("path", req.URL.Path).Logger()
		defer func() {
			if p := recover(); p != nil {
				log.Error().Interface("panic", p).Msg("handler panicked")
				writeJSON(w, http.StatusInternalServerError, protocol.Error{Error: "internal error"})
			}
		}()
		if err := h(w, req); err != nil {
			writeError(w, log, err)
		}
	}
}

func decode(req *http.Request, v any) error {
	req.Body = http.MaxBytesReader(nil, req.Body, protocol.MaxBody)
	if err := json.NewDecoder(req.Body).Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "request body: %v", err)
	}
	return nil
}

// truncate cuts s to at most n bytes on a rune boundary and makes it
// valid UTF-8.
func truncate(s string, n int) string {
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + " [truncated]"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

package hegel

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/hashicorp/go-memdb"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

// Header names hegel reads or writes.
const (
	// HeaderRevision carries the applied revision on every answer.
	HeaderRevision = "X-Gitmetal-Revision"
	// HeaderIndex carries a long poll's index: pass it back as index=.
	HeaderIndex = "X-Gitmetal-Index"
	// HeaderToken carries an IMDSv2 session token.
	HeaderToken = "X-Aws-Ec2-Metadata-Token"
	// HeaderTokenTTL asks for (on the PUT) and reports a token's life in
	// seconds.
	HeaderTokenTTL = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	// headerForwarded is X-Forwarded-For.
	headerForwarded = "X-Forwarded-For"
)

// Content types of the answers.
const (
	typeText   = "text/plain"
	typeBinary = "application/octet-stream"
	typeJSON   = "application/json"
)

// The bodies of the error answers. They are the same for every caller, so
// they tell nothing about the store.
const (
	bodyNotFound     = "404 - Not Found\n"
	bodyUnauthorized = "401 - Unauthorized\n"
	bodyForbidden    = "403 - Forbidden\n"
	bodyNotAllowed   = "405 - Method Not Allowed\n"
	bodyTooLong      = "414 - URI Too Long\n"
	bodyInternal     = "500 - Internal Server Error\n"
	bodyUnavailable  = "503 - Service Unavailable\n"
)

// tokenPath is where IMDSv2 tokens are minted.
const tokenPath = "/latest/api/token"

// caller is who sent a request: the machine, the interface the request
// came from, and the revision they were read at.
type caller struct {
	addr netip.Addr
	hw   *schema.Hardware // nil: no machine has addr
	ifc  *schema.Interface
	rev  store.Revision
}

// route is the kind of endpoint a path belongs to, which decides whether
// RequireToken applies.
type route uint8

const (
	routeNone    route = iota
	routeEC2           // /, /latest/..., /2009-04-04/...
	routeNoCloud       // /nocloud/...
	routeJSON          // /metadata, /v1/metadata
)

func routeOf(path string) route {
	switch {
	case path == "/", path == "/latest", path == "/2009-04-04",
		strings.HasPrefix(path, "/latest/"), strings.HasPrefix(path, "/2009-04-04/"):
		return routeEC2
	case strings.HasPrefix(path, "/nocloud/"):
		return routeNoCloud
	case path == "/metadata", path == "/v1/metadata":
		return routeJSON
	}
	return routeNone
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler { // net/http's own signal to abort quietly
			panic(v)
		}
		s.metrics.count(resultError)
		s.log.Error().Str("panic", fmt.Sprint(v)).Str("stack", string(debug.Stack())).
			Str("remote", r.RemoteAddr).Str("path", truncate(r.URL.Path, 128)).Msg("request panicked")
		// The header may be out already; then this only ends the body.
		text(w, http.StatusInternalServerError, bodyInternal)
	}()
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)

	path := r.URL.Path
	if len(path) > MaxPathLen || len(r.URL.RawQuery) > maxQueryLen {
		s.metrics.count(resultBadRequest)
		s.setRevision(w)
		text(w, http.StatusRequestURITooLong, bodyTooLong)
		return
	}
	addr, err := s.clientAddr(r)
	if err != nil {
		// Only a trusted proxy can get here; an untrusted caller's
		// headers are never parsed.
		s.metrics.count(resultBadRequest)
		s.log.Warn().Err(err).Str("remote", r.RemoteAddr).Msg("bad forwarded address from trusted proxy")
		s.setRevision(w)
		// The body does not echo the header: the log has the details.
		text(w, http.StatusBadRequest, "400 - Bad Request: unusable X-Forwarded-For\n")
		return
	}
	c, err := s.lookup(nil, addr)
	if errors.Is(err, errRacing) {
		s.metrics.count(resultError)
		s.setRevision(w)
		text(w, http.StatusServiceUnavailable, bodyUnavailable)
		return
	}
	if err != nil {
		s.metrics.count(resultError)
		s.setRevision(w)
		s.log.Error().Err(err).Str("addr", addr.String()).Msg("look up caller")
		text(w, http.StatusInternalServerError, bodyInternal)
		return
	}
	w.Header().Set(HeaderRevision, c.rev.ID)
	if c.hw == nil {
		s.metrics.count(resultUnknown)
		if e := s.log.Debug(); e.Enabled() {
			e.Str("addr", addr.String()).Str("path", truncate(path, 128)).Msg("unknown caller")
		}
		notFound(w)
		return
	}

	rt := routeOf(path)
	switch {
	case path == tokenPath && r.Method == http.MethodPut:
		s.mintToken(w, r, c)
		return
	case path == tokenPath:
		s.notAllowed(w, http.MethodPut)
		return
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		s.notAllowed(w, "GET, HEAD")
		return
	case rt == routeNone:
		s.metrics.count(resultNotFound)
		notFound(w)
		return
	}
	if !s.checkToken(w, r, c, rt) {
		return
	}
	switch rt {
	case routeEC2:
		s.serveEC2(w, c, path)
	case routeNoCloud:
		s.serveNoCloud(w, c, path)
	case routeJSON:
		if path == "/metadata" {
			s.serveMetadata(w, c)
		} else {
			s.serveLongPoll(w, r, c)
		}
	}
}

// setRevision sets the revision header on an answer given before the
// caller was looked up, so that every answer carries it.
func (s *Server) setRevision(w http.ResponseWriter) {
	if rev, err := s.store.Revision(nil); err == nil {
		w.Header().Set(HeaderRevision, rev.ID)
	}
}

// errRacing is lookup's error when Applies kept changing the store under
// it.
var errRacing = errors.New("store changed during every read")

// lookupTries bounds lookup's attempts at a consistent read; Applies come
// with commits, so a second try almost always succeeds.
const lookupTries = 8

// snapshotter is a Store that reads a consistent view in one
// transaction (*store.Store does); its snapshot answers the Store's
// lookups.
type snapshotter interface {
	Snapshot() *store.Snapshot
}

// lookup finds the machine with address addr, adding the channel that
// closes when that changes to ws. The machine and the revision are read in
// one revision: from one snapshot when the store offers them, else
// bracketed by two Revision reads with the same Index (every writing
// Apply bumps it).
func (s *Server) lookup(ws memdb.WatchSet, addr netip.Addr) (caller, error) {
	ip := addr.String()
	for range lookupTries {
		var (
			h             *schema.Hardware
			before, after store.Revision
			err           error
		)
		if ss, ok := s.store.(snapshotter); ok {
			snap := ss.Snapshot()
			if h, err = snap.HardwareByIP(ws, ip); err != nil {
				return caller{}, err
			}
			if after, err = snap.Revision(nil); err != nil {
				return caller{}, err
			}
			before = after
		} else {
			if before, err = s.store.Revision(nil); err != nil {
				return caller{}, err
			}
			if h, err = s.store.HardwareByIP(ws, ip); err != nil {
				return caller{}, err
			}
			if after, err = s.store.Revision(nil); err != nil {
				return caller{}, err
			}
		}
		if before.Index != after.Index {
			continue
		}
		c := caller{addr: addr, rev: after}
		if h == nil {
			return c, nil
		}
		for i := range h.Interfaces {
			if p, ok := h.Interfaces[i].Prefix(); ok && p.Addr().Unmap() == addr {
				c.hw, c.ifc = h, &h.Interfaces[i]
				return c, nil
			}
		}
		// The index and the interfaces disagree: a store bug, and not a
		// reason to answer with a machine we cannot place the caller on.
		return caller{}, fmt.Errorf("hardware %q is indexed under %s but has no interface with that address", h.Name, ip)
	}
	return caller{}, errRacing
}

// clientAddr returns the address of the client: the connection's source,
// or, from a trusted proxy, the rightmost X-Forwarded-For entry that is
// not a trusted proxy itself (the leftmost when all are). Entries left of
// it were written by the client and prove nothing.
func (s *Server) clientAddr(r *http.Request) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		// Not a TCP peer (a unix socket): nobody. The zero Addr finds no
		// machine.
		return netip.Addr{}, nil
	}
	a := ap.Addr().Unmap().WithZone("")
	if !s.isTrusted(a) {
		return a, nil
	}
	vals := r.Header.Values(headerForwarded)
	n := 0
	for i := len(vals) - 1; i >= 0; i-- {
		v := vals[i]
		for done := false; !done; {
			var e string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				e, v = v[j+1:], v[:j]
			} else {
				e, done = v, true
			}
			if n++; n > maxForwarded {
				return netip.Addr{}, fmt.Errorf("x-forwarded-for: more than %d entries", maxForwarded)
			}
			fa, err := parseForwarded(strings.TrimSpace(e))
			if err != nil {
				return netip.Addr{}, err
			}
			a = fa
			if !s.isTrusted(fa) {
				return fa, nil
			}
		}
	}
	return a, nil
}

// parseForwarded parses one X-Forwarded-For entry: an address, or an
// address with a port.
func parseForwarded(e string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(e); err == nil {
		return a.Unmap().WithZone(""), nil
	}
	if ap, err := netip.ParseAddrPort(e); err == nil {
		return ap.Addr().Unmap().WithZone(""), nil
	}
	return netip.Addr{}, fmt.Errorf("x-forwarded-for: entry %q is not an address", truncate(e, 64))
}

func (s *Server) isTrusted(a netip.Addr) bool {
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// checkToken applies the IMDSv2 rules to a read: a token, when sent, must
// be valid for the caller; without one, the read is allowed unless
// RequireToken covers the route. It answers 401 and returns false when
// the read is refused.
func (s *Server) checkToken(w http.ResponseWriter, r *http.Request, c caller, rt route) bool {
	vals := r.Header.Values(HeaderToken)
	switch {
	case len(vals) == 0:
		if !s.requireToken || rt == routeNoCloud {
			return true
		}
	case len(vals) == 1 && s.tokens.valid(vals[0], c.addr, s.now()):
		return true
	}
	s.metrics.count(resultUnauthorized)
	text(w, http.StatusUnauthorized, bodyUnauthorized)
	return false
}

// mintToken answers PUT /latest/api/token as EC2 does: 400 without a TTL
// in 1..21600, 403 when the request came through a proxy, else a token
// bound to the caller's address with its TTL echoed in a header.
func (s *Server) mintToken(w http.ResponseWriter, r *http.Request, c caller) {
	if len(r.Header.Values(headerForwarded)) > 0 {
		s.metrics.count(resultForbidden)
		text(w, http.StatusForbidden, bodyForbidden)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get(HeaderTokenTTL))
	if err != nil || ttl < 1 || ttl > maxTokenTTL {
		s.metrics.count(resultBadRequest)
		text(w, http.StatusBadRequest, fmt.Sprintf("400 - Bad Request: %s must be a whole number of seconds from 1 to %d\n", HeaderTokenTTL, maxTokenTTL))
		return
	}
	tok := s.tokens.mint(c.addr, s.now(), ttl)
	s.metrics.count(resultToken)
	w.Header().Set(HeaderTokenTTL, strconv.Itoa(ttl))
	text(w, http.StatusOK, tok)
}

func (s *Server) notAllowed(w http.ResponseWriter, allow string) {
	s.metrics.count(resultBadRequest)
	w.Header().Set("Allow", allow)
	text(w, http.StatusMethodNotAllowed, bodyNotAllowed)
}

// notFound is the one 404 hegel sends, to unknown callers and for missing
// paths alike.
func notFound(w http.ResponseWriter) { text(w, http.StatusNotFound, bodyNotFound) }

// text writes a text/plain answer.
func text(w http.ResponseWriter, status int, body string) { write(w, status, typeText, body) }

func write(w http.ResponseWriter, status int, ctype, body string) {
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	// A write error means the client went away; nothing to do.
	_, _ = io.WriteString(w, body)
}

// truncate cuts s to at most n bytes for a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

package hegel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/gitmetal/gitmetal/schema"
)

// Document is the JSON of /metadata and /v1/metadata: the machine's record
// (without its BMC) and what hegel derives from it for the caller.
type Document struct {
	InstanceID string `json:"instanceID"`
	Hostname   string `json:"hostname"`
	// Address and MAC are the calling interface's.
	Address  string           `json:"address"`
	MAC      string           `json:"mac"`
	Revision string           `json:"revision"`
	Hardware *schema.Hardware `json:"hardware"`
}

func document(c caller) Document {
	h := *c.hw // a shallow copy: only BMC is replaced, nothing shared is written
	h.BMC = nil
	return Document{
		InstanceID: instanceID(c.hw),
		Hostname:   hostname(c),
		Address:    c.addr.String(),
		MAC:        c.ifc.MAC,
		Revision:   c.rev.ID,
		Hardware:   &h,
	}
}

func (s *Server) serveMetadata(w http.ResponseWriter, c caller) {
	b, err := json.Marshal(document(c))
	if err != nil {
		s.fail(w, c, err, "encode metadata")
		return
	}
	s.ok(w, typeJSON, string(b))
}

// serveLongPoll answers GET /v1/metadata?index=N&wait=D: the Document once
// the machine's index is above N, or when D (default DefaultWait, at most
// MaxWait) has passed, or when the client goes away or Close is called —
// always with the current data and its index in X-Gitmetal-Index. index=0
// or none answers at once.
func (s *Server) serveLongPoll(w http.ResponseWriter, r *http.Request, c caller) {
	q := r.URL.Query()
	var minIndex uint64
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.badRequest(w, "index must be a whole number")
			return
		}
		minIndex = n
	}
	wait := DefaultWait
	if v := q.Get("wait"); v != "" {
		d, err := parseWait(v)
		if err != nil {
			s.badRequest(w, err.Error())
			return
		}
		wait = d
	}
	wait = min(wait, s.maxWait)

	// The write deadline must outlast the wait, whatever the http.Server's
	// WriteTimeout; a ResponseWriter that cannot (a test recorder) has none.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + 30*time.Second))
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()

	idx := s.seen.index(c.hw, c.rev.Index)
	for waiting := idx <= minIndex; waiting; {
		// A fresh read to watch: the first one had no watch set, and the
		// machine may have changed since. After the wait ends, one more
		// read (with nothing to watch) answers with the current revision.
		ws := memdb.NewWatchSet()
		if ctx.Err() != nil {
			ws, waiting = nil, false
		}
		next, err := s.lookup(ws, c.addr)
		if errors.Is(err, errRacing) {
			s.metrics.count(resultError)
			text(w, http.StatusServiceUnavailable, bodyUnavailable)
			return
		}
		if err != nil {
			s.fail(w, c, err, "long poll: look up caller")
			return
		}
		if next.hw == nil {
			// The machine left the fleet (or its address changed).
			w.Header().Set(HeaderRevision, next.rev.ID)
			s.metrics.count(resultNotFound)
			notFound(w)
			return
		}
		c = next
		if idx = s.seen.index(c.hw, c.rev.Index); idx > minIndex || !waiting {
			break
		}
		if s.pollWaiting != nil {
			s.pollWaiting()
		}
		// An error is the end of the wait; the loop reads once more.
		_ = ws.WatchCtx(ctx)
	}
	b, err := json.Marshal(document(c))
	if err != nil {
		s.fail(w, c, err, "encode metadata")
		return
	}
	w.Header().Set(HeaderRevision, c.rev.ID)
	w.Header().Set(HeaderIndex, strconv.FormatUint(idx, 10))
	s.ok(w, typeJSON, string(b))
}

// parseWait parses wait=: a Go duration ("30s", "5m") or whole seconds.
func parseWait(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.ParseUint(v, 10, 32)
		if nerr != nil {
			return 0, fmt.Errorf("wait %q: want a duration such as 30s or 5m", truncate(v, 32))
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 {
		return 0, fmt.Errorf("wait %q: want a positive duration", truncate(v, 32))
	}
	return d, nil
}

func (s *Server) badRequest(w http.ResponseWriter, msg string) {
	s.metrics.count(resultBadRequest)
	text(w, http.StatusBadRequest, "400 - Bad Request: "+msg+"\n")
}

// seenIndex gives each machine's record an index that grows only when the
// record changes, so a long poll wakes for its own machine and not for
// every Apply. The store shares unchanged objects between revisions and
// replaces changed ones, so a record changed exactly when its pointer did;
// its index is the revision index at which hegel first saw the pointer,
// never less than the Apply that wrote it and above every index hegel
// gave out for the record before.
type seenIndex struct {
	mu   sync.Mutex
	seen map[string]seenEntry // by machine name
}

type seenEntry struct {
	hw    *schema.Hardware
	index uint64
}

// maxSeen bounds the map; past it, it starts over, which can only wake a
// long poll early (with unchanged data), never miss a change.
const maxSeen = 1 << 16

func newSeenIndex() *seenIndex { return &seenIndex{seen: make(map[string]seenEntry)} }

// index returns h's index, h read at revision index rev.
func (s *seenIndex) index(h *schema.Hardware, rev uint64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.seen[h.Name]
	switch {
	case ok && e.hw == h:
		return e.index
	case ok && rev < e.index:
		// A read older than the recorded one (requests race): answer as
		// of that read; the caller's next poll sees the newer record.
		return rev
	}
	if len(s.seen) >= maxSeen {
		clear(s.seen)
	}
	s.seen[h.Name] = seenEntry{hw: h, index: rev}
	return rev
}

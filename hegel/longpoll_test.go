package hegel

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

// pollServer returns a test server whose long polls report on the
// returned channel each time they start waiting.
func pollServer(t *testing.T) (*Server, *store.Store, *schema.Fleet, http.Handler, chan struct{}) {
	t.Helper()
	s, st, f := newTestServerFleet(t, nil)
	waiting := make(chan struct{}, 16)
	s.pollWaiting = func() { waiting <- struct{}{} }
	return s, st, f, s.Handler(), waiting
}

func indexOf(t *testing.T, a answer) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(a.Header.Get(HeaderIndex), 10, 64)
	if err != nil {
		t.Fatalf("index header %q: %v", a.Header.Get(HeaderIndex), err)
	}
	return n
}

// poll starts a long poll from addr and returns the channel of its answer.
func poll(t *testing.T, h http.Handler, addr, query string) chan answer {
	done := make(chan answer, 1)
	go func() { done <- do(t, h, "GET", addr, "/v1/metadata?"+query) }()
	return done
}

// renamed returns the test fleet with machine name's first hostname
// changed to host.
func renamed(f *schema.Fleet, name, host string) *schema.Fleet {
	h := *f.Hardware[name]
	h.Interfaces = append([]schema.Interface(nil), h.Interfaces...)
	h.Interfaces[0].Hostname = host
	return withHardware(f, &h)
}

func TestLongPollReturnsOnChange(t *testing.T) {
	t.Parallel()
	_, st, f0, h, waiting := pollServer(t)
	first := do(t, h, "GET", webAddr, "/v1/metadata")
	if first.Status != 200 || !strings.Contains(first.Body, `"hostname":"web-01.lab.example"`) {
		t.Fatalf("first answer: got %d %s", first.Status, first.Body)
	}
	idx := indexOf(t, first)

	done := poll(t, h, webAddr, "index="+strconv.FormatUint(idx, 10)+"&wait=5m")
	<-waiting
	// Another machine's change does not answer web-01's poll, and neither
	// does a revision that changes nothing of web-01's.
	f := renamed(f0, "db-01", "db-02")
	if _, err := st.Apply("rev-2", f); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply("rev-3", f); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply("rev-4", renamed(f, "web-01", "web-99")); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if got.Status != 200 || !strings.Contains(got.Body, `"hostname":"web-99.lab.example"`) || got.Header.Get(HeaderRevision) != "rev-4" {
		t.Fatalf("after the change: got %d %s at %q, want web-99 at rev-4", got.Status, got.Body, got.Header.Get(HeaderRevision))
	}
	next := indexOf(t, got)
	if next <= idx {
		t.Errorf("got index %d after the change, want more than %d", next, idx)
	}
	// The index is the machine's: asking again with it waits, even though
	// the store moved on.
	again := do(t, h, "GET", webAddr, "/v1/metadata?index="+strconv.FormatUint(next, 10)+"&wait=1ms")
	if indexOf(t, again) != next {
		t.Errorf("unchanged machine: got index %d, want %d", indexOf(t, again), next)
	}
}

func TestLongPollTimesOutWithCurrentData(t *testing.T) {
	t.Parallel()
	_, st, f, h, waiting := pollServer(t)
	idx := indexOf(t, do(t, h, "GET", webAddr, "/v1/metadata"))

	const wait = time.Second
	start := time.Now()
	done := poll(t, h, webAddr, "index="+strconv.FormatUint(idx, 10)+"&wait=1s")
	<-waiting
	if _, err := st.Apply("rev-2", renamed(f, "db-01", "db-02")); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if elapsed := time.Since(start); elapsed < wait {
		t.Errorf("returned after %s, want no answer before the %s wait ended: db-01's change woke web-01's poll", elapsed, wait)
	}
	if got.Status != 200 || indexOf(t, got) != idx || !strings.Contains(got.Body, `"hostname":"web-01.lab.example"`) {
		t.Errorf("got %d index %d %s, want 200, index %d and web-01's current data", got.Status, indexOf(t, got), got.Body, idx)
	}
	if got.Header.Get(HeaderRevision) != "rev-2" {
		t.Errorf("got revision %q, want the current rev-2", got.Header.Get(HeaderRevision))
	}
}

func TestLongPollEnds(t *testing.T) {
	t.Parallel()
	s, st, f0, h, waiting := pollServer(t)
	idx := strconv.FormatUint(indexOf(t, do(t, h, "GET", webAddr, "/v1/metadata")), 10)

	// The machine leaves the fleet: its poll ends with 404.
	gone := poll(t, h, dbAddr, "index="+idx+"&wait=5m")
	<-waiting
	f := withHardware(f0, f0.Hardware["web-01"])
	delete(f.Hardware, "db-01")
	if _, err := st.Apply("rev-2", f); err != nil {
		t.Fatal(err)
	}
	if got := <-gone; got.Status != 404 || got.Body != bodyNotFound {
		t.Errorf("machine removed: got %d %q, want 404", got.Status, got.Body)
	}

	// Close answers the polls in progress with the current data.
	idx = strconv.FormatUint(indexOf(t, do(t, h, "GET", webAddr, "/v1/metadata")), 10)
	closed := poll(t, h, webAddr, "index="+idx+"&wait=5m")
	<-waiting
	s.Close()
	if got := <-closed; got.Status != 200 || got.Header.Get(HeaderIndex) != idx {
		t.Errorf("after Close: got %d index %q, want 200 index %s", got.Status, got.Header.Get(HeaderIndex), idx)
	}
}

func TestLongPollBadQueries(t *testing.T) {
	t.Parallel()
	_, _, _, h, _ := pollServer(t)
	for _, q := range []string{"index=abc", "index=-1", "wait=-1s", "wait=soon", "index=1&wait=1y"} {
		if got := do(t, h, "GET", webAddr, "/v1/metadata?"+q); got.Status != 400 {
			t.Errorf("%s: got %d %q, want 400", q, got.Status, got.Body)
		}
	}
	for _, q := range []string{"", "index=0", "wait=10", "index=0&wait=90m"} {
		if got := do(t, h, "GET", webAddr, "/v1/metadata?"+q); got.Status != 200 || got.Header.Get(HeaderIndex) == "" {
			t.Errorf("%s: got %d %q, want 200 with an index", q, got.Status, got.Body)
		}
	}
}

func TestSeenIndex(t *testing.T) {
	t.Parallel()
	s := newSeenIndex()
	a, b := &schema.Hardware{Name: "m"}, &schema.Hardware{Name: "m"}
	steps := []struct {
		hw        *schema.Hardware
		rev, want uint64
	}{
		{a, 3, 3},
		{a, 5, 3}, // unchanged record, later revision: same index
		{b, 7, 7}, // changed record
		{a, 6, 6}, // a read older than the one recorded: as of that read
		{b, 9, 7},
	}
	for i, st := range steps {
		if got := s.index(st.hw, st.rev); got != st.want {
			t.Errorf("step %d: got %d, want %d", i, got, st.want)
		}
	}
}

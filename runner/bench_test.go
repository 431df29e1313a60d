package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/runner"
	"github.com/gitmetal/gitmetal/runner/protocol"
)

// floor is the peer of the benchmarks: one bbolt write transaction of a
// run-sized value, the durable write every acknowledged report costs at
// least. Its commits are interleaved with the measured requests, so that
// both see the same disk and load.
type floor struct {
	db   *bolt.DB
	v    []byte
	took time.Duration
	n    int
}

func newFloor(b *testing.B) *floor {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "floor.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return &floor{db: db, v: bytes.Repeat([]byte("x"), 2048)}
}

func (f *floor) commit(b *testing.B) {
	start := time.Now()
	err := f.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists([]byte("b"))
		if err != nil {
			return err
		}
		return bk.Put([]byte("k"), append(f.v, byte(f.n)))
	})
	if err != nil {
		b.Fatal(err)
	}
	f.took += time.Since(start)
	f.n++
}

// timed runs fn, timing it, then a floor commit, untimed by b.
func timed(b *testing.B, f *floor, took *time.Duration, fn func()) {
	start := time.Now()
	fn()
	*took += time.Since(start)
	b.StopTimer()
	f.commit(b)
	b.StartTimer()
}

// benchRunner serves a runner with one running action of one machine and
// returns a client with its token, the run and the action handed out.
func benchRunner(b *testing.B) (raw2 func(method, path string, in any) int, run string) {
	m := machine(1)
	tpl := template("t", sh("a", "true"))
	st, err := store.New()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := st.Apply("rev1", fleet(m, tpl, workflow("w", m, tpl))); err != nil {
		b.Fatal(err)
	}
	r, err := runner.New(runner.Config{Store: st, StateDir: b.TempDir(), Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	r.Register(mux)
	srv := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		r.Close()
	})
	var tok string
	for {
		t, ok, err := r.Install(ctx, m, m.Interfaces[0].MAC)
		if err != nil {
			b.Fatal(err)
		}
		if ok {
			tok = t
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	do := func(method, path string, in any) int {
		body, _ := json.Marshal(in)
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var n protocol.Next
		json.NewDecoder(resp.Body).Decode(&n)
		resp.Body.Close()
		if n.Run != "" {
			run = n.Run
		}
		return resp.StatusCode
	}
	if code := do(http.MethodGet, protocol.PathNext+"?wait=0s", nil); code != http.StatusOK || run == "" {
		b.Fatalf("next: %d", code)
	}
	return do, run
}

// BenchmarkStatusReport is one progress heartbeat over loopback HTTP,
// committed (fsync) before the answer; x-bbolt-commit is its time over a
// bare bbolt commit's.
func BenchmarkStatusReport(b *testing.B) {
	do, run := benchRunner(b)
	f := newFloor(b)
	var took time.Duration
	for i := 0; b.Loop(); i++ {
		st := protocol.StatusReport{Attempt: 1, State: protocol.ActionRunning, Progress: &protocol.Progress{Bytes: int64(i + 1)}}
		timed(b, f, &took, func() {
			if code := do(http.MethodPost, protocol.StatusPath(run, 0), st); code != http.StatusOK {
				b.Fatalf("status: %d", code)
			}
		})
	}
	b.ReportMetric(float64(f.took.Microseconds())/float64(f.n), "µs/bbolt-commit")
	b.ReportMetric(float64(took)/float64(f.took), "x-bbolt-commit")
}

// BenchmarkLogBatch is one batch of 100 log lines, committed before the
// answer; lines/s is the figure.
func BenchmarkLogBatch(b *testing.B) {
	do, run := benchRunner(b)
	lines := make([]protocol.LineText, 100)
	for i := range lines {
		lines[i] = protocol.LineText{Time: time.Now(), Stream: protocol.StreamStdout, Text: fmt.Sprintf("%080d", i)}
	}
	f := newFloor(b)
	var took time.Duration
	for i := 0; b.Loop(); i++ {
		batch := protocol.LogBatch{Agent: "bench", Attempt: 1, First: uint64(i * len(lines)), Lines: lines}
		timed(b, f, &took, func() {
			if code := do(http.MethodPost, protocol.LogsPath(run, 0), batch); code != http.StatusOK {
				b.Fatalf("logs: %d", code)
			}
		})
	}
	b.ReportMetric(float64(len(lines)*f.n)/took.Seconds(), "lines/s")
	b.ReportMetric(float64(took)/float64(f.took), "x-bbolt-commit")
}

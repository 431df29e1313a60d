package journal_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/gitmetal/gitmetal/runner/journal"
	"github.com/gitmetal/gitmetal/runner/protocol"
)

func open(t *testing.T, path string) *journal.Journal {
	t.Helper()
	j, err := journal.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func TestRunsAndIndexes(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "j.db")
	j := open(t, path)
	var ids []string
	err := j.Update(func(tx *journal.Tx) error {
		for i := range 3 {
			r := &protocol.Run{Workflow: "w", Hardware: "m", State: protocol.RunPending, Digest: fmt.Sprint(i)}
			if err := tx.CreateRun(r); err != nil {
				return err
			}
			ids = append(ids, r.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"r1", "r2", "r3"}, ids); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
	// r2 succeeds, r1 fails: the index keeps the latest run and the
	// latest success; the active set holds only r3.
	err = j.Update(func(tx *journal.Tx) error {
		for id, st := range map[string]protocol.RunState{"r1": protocol.RunFailed, "r2": protocol.RunSuccess} {
			r, err := tx.Run(id)
			if err != nil {
				return err
			}
			r.State = st
			if err := tx.PutRun(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	j = open(t, path) // everything above survives a reopen
	err = j.View(func(tx *journal.Tx) error {
		idx, err := tx.Workflow("w")
		if err != nil {
			return err
		}
		want := journal.WorkflowIndex{
			Last:        journal.Summary{ID: "r3", Workflow: "w", Hardware: "m", State: protocol.RunPending, Digest: "2"},
			LastSuccess: journal.Summary{ID: "r2", Workflow: "w", Hardware: "m", State: protocol.RunSuccess, Digest: "1"},
		}
		if diff := cmp.Diff(want, idx); diff != "" {
			t.Errorf("workflow index (-want +got):\n%s", diff)
		}
		active, err := tx.Active()
		if err != nil {
			return err
		}
		if len(active) != 1 || active[0].ID != "r3" || active[0].State != protocol.RunPending {
			t.Errorf("got %d active runs, want r3 alone", len(active))
		}
		if m, err := tx.MachineActive("m"); err != nil || len(m) != 1 || m[0].ID != "r3" {
			t.Errorf("MachineActive(m) = %+v, %v; want r3", m, err)
		}
		if m, err := tx.MachineActive("m2"); err != nil || len(m) != 0 {
			t.Errorf("MachineActive(m2) = %+v, %v; want none", m, err)
		}
		if r, err := tx.Running(); err != nil || len(r) != 0 {
			t.Errorf("Running() = %+v, %v; want none", r, err)
		}
		var order []string
		if err := tx.Runs(func(r *protocol.Run) bool { order = append(order, r.ID); return true }); err != nil {
			return err
		}
		if diff := cmp.Diff([]string{"r3", "r2", "r1"}, order); diff != "" {
			t.Errorf("Runs order (-want +got):\n%s", diff)
		}
		for _, id := range []string{"r9", "x", "r0", "r01", ""} {
			if _, err := tx.Run(id); err == nil || !strings.Contains(err.Error(), "not found") {
				t.Errorf("Run(%q): %v, want not found", id, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAppendLogsDeduplicates(t *testing.T) {
	t.Parallel()
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	mk := func(texts ...string) []protocol.LogLine {
		out := make([]protocol.LogLine, len(texts))
		for i, s := range texts {
			out[i] = protocol.LogLine{Text: s, Stream: protocol.StreamStdout}
		}
		return out
	}
	steps := []struct {
		key   string
		first uint64
		lines []protocol.LogLine
		want  int
	}{
		{"a", 0, mk("0", "1", "2"), 3},
		{"a", 0, mk("0", "1", "2"), 0}, // repeat
		{"a", 2, mk("2", "3"), 1},      // overlap
		{"b", 0, mk("b0"), 1},          // another sender numbers on its own
		{"a", 4, mk("4", "5", "6"), 2}, // reaches the limit of 7 lines: 5 stored, the note, 6 dropped
		{"a", 7, mk("7"), 0},           // past the limit
	}
	for i, s := range steps {
		var got int
		err := j.Update(func(tx *journal.Tx) error {
			var err error
			got, err = tx.AppendLogs("r1", s.key, s.first, s.lines, 7)
			return err
		})
		if err != nil || got != s.want {
			t.Errorf("step %d: stored %d, %v; want %d", i, got, err, s.want)
		}
	}
	var texts []string
	var seqs []uint64
	err := j.View(func(tx *journal.Tx) error {
		lines, err := tx.Logs("r1", 0, 100)
		for _, l := range lines {
			texts = append(texts, l.Text)
			seqs = append(seqs, l.Seq)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"0", "1", "2", "3", "b0", "4", "5", "log limit of 7 lines reached: later lines are dropped"}
	if diff := cmp.Diff(want, texts); diff != "" {
		t.Errorf("log (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint64{1, 2, 3, 4, 5, 6, 7, 8}, seqs); diff != "" {
		t.Errorf("seqs (-want +got):\n%s", diff)
	}
	err = j.View(func(tx *journal.Tx) error {
		lines, err := tx.Logs("r1", 6, 1)
		if len(lines) != 1 || lines[0].Seq != 7 {
			t.Errorf("Logs after 6, limit 1: %+v, want line 7", lines)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesOtherVersion(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "j.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("version"), []byte("99"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := journal.Open(path, time.Second); err == nil || !strings.Contains(err.Error(), `layout version "99"`) {
		t.Errorf("Open of a version 99 journal: %v, want a version error", err)
	}
}

// A second process (here: a second Open) cannot share the file: it waits
// for the lock, then fails.
func TestOpenLocked(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "j.db")
	open(t, path)
	if _, err := journal.Open(path, 50*time.Millisecond); err == nil {
		t.Error("a second Open of a held journal succeeded")
	}
}

// endRun creates a run of workflow on machine m that ended in state, with
// a log line.
func endRun(t *testing.T, tx *journal.Tx, workflow string, state protocol.RunState) string {
	t.Helper()
	r := &protocol.Run{Workflow: workflow, Hardware: "m", State: protocol.RunPending}
	if err := tx.CreateRun(r); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.AppendLogs(r.ID, "k", 0, []protocol.LogLine{{Stream: "stdout", Text: "hello"}}, 100); err != nil {
		t.Fatal(err)
	}
	r.State = state
	if err := tx.PutRun(r); err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// kept returns which of ids still have their run and their log.
func kept(t *testing.T, j *journal.Journal, ids []string) []string {
	t.Helper()
	var out []string
	err := j.View(func(tx *journal.Tx) error {
		for _, id := range ids {
			_, err := tx.Run(id)
			if errors.Is(err, journal.ErrNotFound) {
				lines, err := tx.Logs(id, 0, 10)
				if err != nil || len(lines) != 0 {
					t.Errorf("run %s pruned but its log has %d lines (%v)", id, len(lines), err)
				}
				continue
			}
			if err != nil {
				return err
			}
			out = append(out, id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPrune: a workflow keeps its newest ended runs, its latest success
// (older here) and its active runs; other workflows are untouched.
func TestPrune(t *testing.T) {
	t.Parallel()
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	var ids []string
	var deleted int
	err := j.Update(func(tx *journal.Tx) error {
		ids = append(ids, endRun(t, tx, "w", protocol.RunSuccess)) // r1: the latest success
		ids = append(ids, endRun(t, tx, "other", protocol.RunFailed))
		for range 5 {
			ids = append(ids, endRun(t, tx, "w", protocol.RunFailed)) // r3..r7
		}
		r := &protocol.Run{Workflow: "w", Hardware: "m", State: protocol.RunRunning}
		if err := tx.CreateRun(r); err != nil { // r8: running, the latest run
			return err
		}
		ids = append(ids, r.ID)
		var err error
		deleted, err = tx.Prune("w", 2)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if deleted != 3 {
		t.Errorf("Prune deleted %d runs, want 3", deleted)
	}
	if diff := cmp.Diff([]string{"r1", "r2", "r6", "r7", "r8"}, kept(t, j, ids)); diff != "" {
		t.Errorf("runs kept (-want +got):\n%s", diff)
	}
	// Pruning again deletes nothing; keep 0 still spares the latest run
	// and latest success.
	err = j.Update(func(tx *journal.Tx) error {
		if n, err := tx.Prune("w", 2); err != nil || n != 0 {
			t.Errorf("second Prune: %d, %v; want 0", n, err)
		}
		_, err := tx.Prune("w", 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"r1", "r2", "r8"}, kept(t, j, ids)); diff != "" {
		t.Errorf("runs kept after keep 0 (-want +got):\n%s", diff)
	}
}

// TestOpenUpgradesVersion1: a journal written before the history index
// gets one on Open, so its old runs can be pruned.
func TestOpenUpgradesVersion1(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "j.db")
	j := open(t, path)
	var ids []string
	err := j.Update(func(tx *journal.Tx) error {
		for range 3 {
			ids = append(ids, endRun(t, tx, "w", protocol.RunFailed))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	// Make it a version 1 journal: no history bucket.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte("history")); err != nil {
			return err
		}
		return tx.Bucket([]byte("meta")).Put([]byte("version"), []byte("1"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	j = open(t, path)
	if err := j.Update(func(tx *journal.Tx) error { _, err := tx.Prune("w", 1); return err }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"r3"}, kept(t, j, ids)); diff != "" {
		t.Errorf("runs kept (-want +got):\n%s", diff)
	}
}

// Package journal is the runner's durable runtime state: runs (with their
// frozen actions and every action's result), log lines and agent
// inventories, kept in one bbolt file in the state directory.
//
// Every Update is one bbolt transaction, committed with fsync before it
// returns, so a caller that answers an agent only after Update returned
// never acknowledges anything a kill -9 can lose. The journal is storage
// with typed accessors and indexes; it must not decide anything: what a
// run does next is the runner's business. It never reads a clock.
//
// Layout (bucket → key → value):
//
//	runs       8-byte run number          → JSON protocol.Run
//	active     8-byte run number          → JSON Summary (pending and running runs)
//	running    8-byte run number          → JSON Summary (running runs)
//	machines   machine name, 0, run number → JSON Summary (each machine's active runs)
//	workflows  workflow name              → JSON WorkflowIndex
//	history    workflow name, 0, run number → empty (every run of a workflow)
//	logs       8-byte run number          → bucket: lines (8-byte seq → JSON
//	                                          protocol.LogLine), cursors (agent
//	                                          instance → next expected seq)
//	inventory  machine name               → JSON protocol.MachineInventory
//	meta       "version"                  → "2"
//
// Version 1 had no history bucket; Open adds it, filled from the runs.
//
// Retention: Prune deletes a workflow's old ended runs and their logs,
// keeping the newest few, its latest run and its latest success (the
// runner decides from those whether a commit needs a new run). bbolt
// reuses the freed pages, so a journal that is pruned stops growing; it
// never shrinks on disk.
package journal

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gitmetal/gitmetal/runner/protocol"
)

// ErrNotFound is returned for a run that does not exist.
var ErrNotFound = errors.New("not found")

// version is the layout version written to meta.
const version = "2"

var (
	bucketRuns      = []byte("runs")
	bucketActive    = []byte("active")
	bucketRunning   = []byte("running")
	bucketMachines  = []byte("machines")
	bucketWorkflows = []byte("workflows")
	bucketHistory   = []byte("history")
	bucketLogs      = []byte("logs")
	bucketInventory = []byte("inventory")
	bucketMeta      = []byte("meta")
	bucketLines     = []byte("lines")
	bucketCursors   = []byte("cursors")
)

// Journal is the bbolt-backed runtime state.
type Journal struct {
	db *bolt.DB
}

// Open opens (creating when needed) the journal at path. It waits up to
// lockWait for another process that holds the file to let go, then fails.
func Open(path string, lockWait time.Duration) (*Journal, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait})
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRuns, bucketActive, bucketRunning, bucketMachines, bucketWorkflows, bucketHistory, bucketLogs, bucketInventory, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get([]byte("version")); {
		case v == nil:
			return meta.Put([]byte("version"), []byte(version))
		case string(v) == "1":
			if err := fillHistory(tx); err != nil {
				return fmt.Errorf("upgrade from layout version 1: %w", err)
			}
			return meta.Put([]byte("version"), []byte(version))
		case string(v) != version:
			return fmt.Errorf("layout version %q, this gitmetal reads %q", v, version)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	return &Journal{db: db}, nil
}

// Close closes the file.
func (j *Journal) Close() error { return j.db.Close() }

// Update runs fn in a write transaction and commits it (with fsync) when
// fn returns nil; an error from fn rolls everything back.
func (j *Journal) Update(fn func(*Tx) error) error {
	return j.db.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// View runs fn in a read transaction.
func (j *Journal) View(fn func(*Tx) error) error {
	return j.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// Tx is a journal transaction. Runs it returns are the caller's copies.
type Tx struct {
	tx *bolt.Tx
}

// Summary is the part of a run that the hot paths need (which machine's
// run is current, how many are in flight, whether a workflow needs a new
// run), kept in the indexes so that they need not decode whole runs.
type Summary struct {
	ID         string            `json:"id"`
	Workflow   string            `json:"workflow"`
	Hardware   string            `json:"hardware"`
	State      protocol.RunState `json:"state"`
	Digest     string            `json:"digest"`
	Generation int               `json:"generation"`
}

func summarize(r *protocol.Run) Summary {
	return Summary{ID: r.ID, Workflow: r.Workflow, Hardware: r.Hardware, State: r.State, Digest: r.Digest, Generation: r.Generation}
}

// WorkflowIndex summarises a workflow's latest run and latest successful
// run (zero IDs when there is none).
type WorkflowIndex struct {
	Last        Summary `json:"last"`
	LastSuccess Summary `json:"lastSuccess"`
}

// RunID is the ID of run number n.
func RunID(n uint64) string { return "r" + strconv.FormatUint(n, 10) }

// runKey returns the key of run id, or false for an ID no run can have.
func runKey(id string) ([]byte, bool) {
	s, ok := strings.CutPrefix(id, "r")
	if !ok || s == "" || s[0] == '0' || len(s) > 20 {
		return nil, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return nil, false
	}
	return u64(n), true
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// CreateRun gives r a new ID, stores it and makes it its workflow's latest
// run.
func (t *Tx) CreateRun(r *protocol.Run) error {
	n, err := t.tx.Bucket(bucketRuns).NextSequence()
	if err != nil {
		return fmt.Errorf("create run: %w", err)
	}
	r.ID = RunID(n)
	if err := t.tx.Bucket(bucketHistory).Put(historyKey(r.Workflow, u64(n)), nil); err != nil {
		return fmt.Errorf("create run: %w", err)
	}
	idx, err := t.Workflow(r.Workflow)
	if err != nil {
		return err
	}
	idx.Last = summarize(r)
	if err := t.putWorkflow(r.Workflow, idx); err != nil {
		return err
	}
	return t.PutRun(r)
}

// PutRun stores r (which must have been created) and keeps the indexes: the
// active set, and its workflow's latest run and latest success.
func (t *Tx) PutRun(r *protocol.Run) error {
	key, ok := runKey(r.ID)
	if !ok {
		return fmt.Errorf("put run: invalid id %q", r.ID)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("put run %s: %w", r.ID, err)
	}
	if err := t.tx.Bucket(bucketRuns).Put(key, b); err != nil {
		return fmt.Errorf("put run %s: %w", r.ID, err)
	}
	sum := summarize(r)
	v, err := json.Marshal(sum)
	if err != nil {
		return fmt.Errorf("put run %s: %w", r.ID, err)
	}
	mkey := append(append([]byte(r.Hardware), 0), key...)
	for _, ix := range []struct {
		bucket []byte
		key    []byte
		in     bool
	}{
		{bucketActive, key, r.State.Active()},
		{bucketMachines, mkey, r.State.Active()},
		{bucketRunning, key, r.State == protocol.RunRunning},
	} {
		b := t.tx.Bucket(ix.bucket)
		if ix.in {
			err = b.Put(ix.key, v)
		} else {
			err = b.Delete(ix.key)
		}
		if err != nil {
			return fmt.Errorf("put run %s: %w", r.ID, err)
		}
	}
	idx, err := t.Workflow(r.Workflow)
	if err != nil {
		return err
	}
	changed := false
	if idx.Last.ID == r.ID && idx.Last != sum {
		idx.Last, changed = sum, true
	}
	if r.State == protocol.RunSuccess && newer(r.ID, idx.LastSuccess.ID) {
		idx.LastSuccess, changed = sum, true
	}
	if changed {
		return t.putWorkflow(r.Workflow, idx)
	}
	return nil
}

// newer reports whether run a was created after run b ("" is oldest).
func newer(a, b string) bool {
	if b == "" {
		return true
	}
	ka, _ := runKey(a)
	kb, _ := runKey(b)
	return string(ka) > string(kb)
}

// Run returns run id, or ErrNotFound.
func (t *Tx) Run(id string) (*protocol.Run, error) {
	key, ok := runKey(id)
	if !ok {
		return nil, fmt.Errorf("run %q: %w", id, ErrNotFound)
	}
	v := t.tx.Bucket(bucketRuns).Get(key)
	if v == nil {
		return nil, fmt.Errorf("run %q: %w", id, ErrNotFound)
	}
	return decodeRun(v)
}

func decodeRun(v []byte) (*protocol.Run, error) {
	var r protocol.Run
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decode run: %w", err)
	}
	return &r, nil
}

// Active returns the summaries of the pending and running runs, oldest
// first.
func (t *Tx) Active() ([]Summary, error) {
	return summaries(t.tx.Bucket(bucketActive).Cursor(), nil)
}

// Running returns the summaries of the running runs, oldest first.
func (t *Tx) Running() ([]Summary, error) {
	return summaries(t.tx.Bucket(bucketRunning).Cursor(), nil)
}

// MachineActive returns the summaries of machine's pending and running
// runs, oldest first.
func (t *Tx) MachineActive(machine string) ([]Summary, error) {
	return summaries(t.tx.Bucket(bucketMachines).Cursor(), append([]byte(machine), 0))
}

// summaries decodes the summaries under prefix.
func summaries(c *bolt.Cursor, prefix []byte) ([]Summary, error) {
	var out []Summary
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var s Summary
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("run summary %q: %w", k, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// Runs calls fn for every run, newest first, until fn returns false.
func (t *Tx) Runs(fn func(*protocol.Run) bool) error {
	c := t.tx.Bucket(bucketRuns).Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		r, err := decodeRun(v)
		if err != nil {
			return err
		}
		if !fn(r) {
			return nil
		}
	}
	return nil
}

// Workflow returns the index of workflow name's runs (zero when it never
// had one).
func (t *Tx) Workflow(name string) (WorkflowIndex, error) {
	var idx WorkflowIndex
	v := t.tx.Bucket(bucketWorkflows).Get([]byte(name))
	if v == nil {
		return idx, nil
	}
	if err := json.Unmarshal(v, &idx); err != nil {
		return idx, fmt.Errorf("workflow %q index: %w", name, err)
	}
	return idx, nil
}

func (t *Tx) putWorkflow(name string, idx WorkflowIndex) error {
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketWorkflows).Put([]byte(name), b); err != nil {
		return fmt.Errorf("workflow %q index: %w", name, err)
	}
	return nil
}

// PutInventory stores what a machine's agent reported, replacing the
// previous report.
func (t *Tx) PutInventory(inv *protocol.MachineInventory) error {
	b, err := json.Marshal(inv)
	if err != nil {
		return fmt.Errorf("inventory %q: %w", inv.Machine, err)
	}
	if err := t.tx.Bucket(bucketInventory).Put([]byte(inv.Machine), b); err != nil {
		return fmt.Errorf("inventory %q: %w", inv.Machine, err)
	}
	return nil
}

// Inventory returns the machine's last inventory, or nil.
func (t *Tx) Inventory(machine string) (*protocol.MachineInventory, error) {
	v := t.tx.Bucket(bucketInventory).Get([]byte(machine))
	if v == nil {
		return nil, nil
	}
	var inv protocol.MachineInventory
	if err := json.Unmarshal(v, &inv); err != nil {
		return nil, fmt.Errorf("inventory %q: %w", machine, err)
	}
	return &inv, nil
}

// historyKey is run key's entry in workflow's history.
func historyKey(workflow string, key []byte) []byte {
	return append(append([]byte(workflow), 0), key...)
}

// fillHistory indexes every run by its workflow (the upgrade from layout
// version 1).
func fillHistory(tx *bolt.Tx) error {
	h := tx.Bucket(bucketHistory)
	return tx.Bucket(bucketRuns).ForEach(func(k, v []byte) error {
		r, err := decodeRun(v)
		if err != nil {
			return fmt.Errorf("run %x: %w", k, err)
		}
		return h.Put(historyKey(r.Workflow, k), nil)
	})
}

// Prune deletes workflow's ended runs, and their logs, beyond the newest
// keep of them. The workflow's latest run and latest success are never
// deleted (they may be older than the newest keep when keep is small), nor
// is a pending or running run. It returns how many runs it deleted.
func (t *Tx) Prune(workflow string, keep int) (int, error) {
	idx, err := t.Workflow(workflow)
	if err != nil {
		return 0, err
	}
	spare := map[string]bool{idx.Last.ID: true, idx.LastSuccess.ID: true}
	prefix := historyKey(workflow, nil)
	active := t.tx.Bucket(bucketActive)
	runs, logs := t.tx.Bucket(bucketRuns), t.tx.Bucket(bucketLogs)
	var doomed [][]byte
	c := t.tx.Bucket(bucketHistory).Cursor()
	// Newest first: seek to the first key past the prefix (workflow, 1),
	// then step back.
	k, _ := c.Seek(append([]byte(workflow), 1))
	if k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	ended := 0
	for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
		key := k[len(prefix):]
		if active.Get(key) != nil {
			continue
		}
		ended++
		if ended <= keep || spare[RunID(binary.BigEndian.Uint64(key))] {
			continue
		}
		doomed = append(doomed, bytes.Clone(k))
	}
	for _, hk := range doomed {
		key := hk[len(prefix):]
		if err := runs.Delete(key); err != nil {
			return 0, fmt.Errorf("prune %s: %w", workflow, err)
		}
		if logs.Bucket(key) != nil {
			if err := logs.DeleteBucket(key); err != nil {
				return 0, fmt.Errorf("prune %s: %w", workflow, err)
			}
		}
		if err := t.tx.Bucket(bucketHistory).Delete(hk); err != nil {
			return 0, fmt.Errorf("prune %s: %w", workflow, err)
		}
	}
	return len(doomed), nil
}

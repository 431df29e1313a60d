package reconciler

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/reconciler/source"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/gittest"
	"github.com/gitmetal/gitmetal/test/poll"
)

const exampleFleet = "../examples/fleet"

// fleetRepo makes a git repository holding a copy of the example fleet.
func fleetRepo(t *testing.T) (*gittest.Repo, string) {
	t.Helper()
	r := gittest.New(t, "main")
	r.CopyDir(exampleFleet, "")
	return r, r.Commit("the example fleet")
}

type harness struct {
	t     *testing.T
	rec   *Reconciler
	store *store.Store
	load  *schema.Loader
	src   source.Source
}

func newHarness(t *testing.T, src source.Source, stateDir string) *harness {
	t.Helper()
	t.Cleanup(func() { src.Close() })
	l, err := schema.NewLoader(schema.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := New(Config{Source: src, Store: st, Loader: l, StateDir: stateDir, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, rec: rec, store: st, load: l, src: src}
}

func gitSource(t *testing.T, url, stateDir string) source.Source {
	t.Helper()
	g, err := source.NewGit(source.GitConfig{URL: url, Dir: filepath.Join(stateDir, "repo")})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func (h *harness) reconcile() Status {
	h.t.Helper()
	if err := h.rec.Reconcile(context.Background()); err != nil {
		h.t.Fatalf("reconcile: %v", err)
	}
	return h.rec.Status()
}

// dump is the whole desired state in the store, for comparisons.
func (h *harness) dump() string {
	h.t.Helper()
	snap := h.store.Snapshot()
	hw, err1 := snap.Hardware(nil)
	tp, err2 := snap.Templates(nil)
	wf, err3 := snap.Workflows(nil)
	set, err4 := snap.Settings(nil)
	for _, err := range []error{err1, err2, err3, err4} {
		if err != nil {
			h.t.Fatal(err)
		}
	}
	type sourced struct {
		Object any
		Source schema.Source
	}
	var all []sourced
	for _, x := range hw {
		all = append(all, sourced{x, x.Source})
	}
	for _, x := range tp {
		all = append(all, sourced{x, x.Source})
	}
	for _, x := range wf {
		all = append(all, sourced{x, x.Source})
	}
	all = append(all, sourced{set, set.Source})
	b, err := json.MarshalIndent(all, "", " ")
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

func TestReconcileAppliesHoldsLastGoodAndRecovers(t *testing.T) {
	t.Parallel()
	repo, first := fleetRepo(t)
	h := newHarness(t, gitSource(t, repo.Dir, t.TempDir()), "")

	s := h.reconcile()
	if s.AppliedRevision != first || s.AttemptedRevision != first || len(s.Errors) != 0 {
		t.Fatalf("got applied %q attempted %q errors %v, want %s applied cleanly", s.AppliedRevision, s.AttemptedRevision, s.Errors, first)
	}
	if s.Counts.Hardware != 5 || !h.rec.Ready() {
		t.Errorf("got %d machines, ready %v; want 5 and ready", s.Counts.Hardware, h.rec.Ready())
	}

	// A valid change applies.
	repo.Replace("hardware/rack-a/web-01.cue", `ip: "10.20.0.21/24"`, `ip: "10.20.0.121/24"`)
	second := repo.Commit("move web-01")
	if s := h.reconcile(); s.AppliedRevision != second {
		t.Fatalf("got applied %s, want %s", s.AppliedRevision, second)
	}
	if hw, err := h.store.HardwareByIP(nil, "10.20.0.121"); err != nil || hw == nil || hw.Name != "web-01" {
		t.Fatalf("web-01 not found at its new address: %v, %v", hw, err)
	}
	good := h.dump()

	// An invalid commit is refused; everything keeps serving the last good.
	repo.Replace("hardware/rack-a/web-02.cue", `"52:54:00:20:00:22"`, `"52:54:00:20:00:2z"`)
	bad := repo.Commit("typo in a MAC")
	s = h.reconcile()
	if s.AppliedRevision != second || s.AttemptedRevision != bad {
		t.Fatalf("got applied %s attempted %s, want applied %s attempted %s", s.AppliedRevision, s.AttemptedRevision, second, bad)
	}
	if len(s.Errors) != 1 || s.Errors[0].File != "hardware/rack-a/web-02.cue" || s.Errors[0].Line == 0 || s.Errors[0].Column == 0 ||
		!strings.Contains(s.Errors[0].Message, "MAC address") {
		t.Fatalf("got errors %+v, want one naming hardware/rack-a/web-02.cue with line, column and the MAC rule", s.Errors)
	}
	if s.History[0].Result != ResultInvalid || s.History[0].Revision != bad {
		t.Errorf("got history head %+v, want the invalid revision", s.History[0])
	}
	if diff := cmp.Diff(good, h.dump()); diff != "" {
		t.Fatalf("the store changed on an invalid commit (-good +now):\n%s", diff)
	}
	// Reconciling again changes nothing and records nothing new.
	if s2 := h.reconcile(); len(s2.History) != len(s.History) {
		t.Errorf("a reconcile with no new commit added history: %d entries, want %d", len(s2.History), len(s.History))
	}

	// The fix applies normally.
	repo.Replace("hardware/rack-a/web-02.cue", `"52:54:00:20:00:2z"`, `"52:54:00:20:00:22"`)
	fixed := repo.Commit("fix the MAC")
	s = h.reconcile()
	if s.AppliedRevision != fixed || s.AttemptedRevision != fixed || len(s.Errors) != 0 {
		t.Fatalf("got applied %s attempted %s errors %v, want %s applied cleanly", s.AppliedRevision, s.AttemptedRevision, s.Errors, fixed)
	}
}

// TestRevertRestoresDesiredState: after `git revert`, the store holds
// exactly what it held before the reverted commit.
func TestRevertRestoresDesiredState(t *testing.T) {
	t.Parallel()
	repo, _ := fleetRepo(t)
	h := newHarness(t, gitSource(t, repo.Dir, t.TempDir()), "")
	h.reconcile()
	before := h.dump()

	// One commit that touches every kind: a template's image step, a
	// machine's address, a new machine, a removed workflow, the settings.
	repo.Replace("templates/raw-image.cue", `retries: 2`, `retries: 3`)
	repo.Replace("hardware/rack-b/db-01.cue", `"10.20.1.33"`, `"10.20.1.133"`)
	repo.Write("hardware/rack-c/new-01.cue", "hardware: {name: \"new-01\", interfaces: [{mac: \"52:54:00:99:00:01\", ip: \"10.20.0.99/24\"}]}\n")
	repo.Remove("workflows/db-01-ubuntu.cue")
	repo.Replace("gitmetal.cue", "leaseTime: 43200", "leaseTime: 7200")
	change := repo.Commit("a change to revert")
	if s := h.reconcile(); s.AppliedRevision != change {
		t.Fatalf("got applied %s, want %s (errors %v)", s.AppliedRevision, change, s.Errors)
	}
	if h.dump() == before {
		t.Fatal("the change did not change the store")
	}

	repo.Git("revert", "--no-edit", "HEAD")
	revert := repo.Git("rev-parse", "HEAD")
	if s := h.reconcile(); s.AppliedRevision != revert {
		t.Fatalf("got applied %s, want the revert %s (errors %v)", s.AppliedRevision, revert, s.Errors)
	}
	if diff := cmp.Diff(before, h.dump()); diff != "" {
		t.Errorf("after the revert the store differs from before the change (-before +after):\n%s", diff)
	}
}

// TestRestartUsesValidationCache: a restarted daemon rebuilds the desired
// state from git without evaluating unchanged files again.
func TestRestartUsesValidationCache(t *testing.T) {
	t.Parallel()
	repo, head := fleetRepo(t)
	state := t.TempDir()

	h1 := newHarness(t, gitSource(t, repo.Dir, state), state)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h1.rec.Run(ctx) }()
	poll.Until(t, "the head applied", func() bool { return h1.rec.Status().AppliedRevision == head })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := h1.dump()

	h2 := newHarness(t, gitSource(t, repo.Dir, state), state)
	if _, err := h2.load.LoadCache(filepath.Join(state, "validation.cache")); err != nil {
		t.Fatal(err)
	}
	if s := h2.reconcile(); s.AppliedRevision != head {
		t.Fatalf("after restart: applied %s, want %s", s.AppliedRevision, head)
	}
	if n := h2.load.Stats().Evaluated; n != 0 {
		t.Errorf("after restart: evaluated %d files, want 0 (all cached)", n)
	}
	if diff := cmp.Diff(want, h2.dump()); diff != "" {
		t.Errorf("after restart the store differs (-before +after):\n%s", diff)
	}
}

// TestRemoteDownKeepsServing: a remote that disappears is an error of the
// source, recorded in status; the applied revision keeps serving and the
// next reachable fetch applies normally.
func TestRemoteDownKeepsServing(t *testing.T) {
	t.Parallel()
	repo, first := fleetRepo(t)
	state := t.TempDir()
	h := newHarness(t, gitSource(t, "file://"+repo.Dir, state), "")
	h.reconcile()
	good := h.dump()

	moved := repo.Dir + ".away"
	if err := os.Rename(repo.Dir, moved); err != nil {
		t.Fatal(err)
	}
	if err := h.rec.Reconcile(context.Background()); err == nil {
		t.Fatal("got no error from an unreachable remote")
	}
	s := h.rec.Status()
	if s.SourceError == "" || s.AppliedRevision != first {
		t.Errorf("got source error %q applied %s, want an error and %s still applied", s.SourceError, s.AppliedRevision, first)
	}
	if h.dump() != good {
		t.Error("the store changed while the remote was down")
	}

	if err := os.Rename(moved, repo.Dir); err != nil {
		t.Fatal(err)
	}
	repo.Replace("hardware/rack-a/web-01.cue", `ip: "10.20.0.21/24"`, `ip: "10.20.0.121/24"`)
	next := repo.Commit("while it was down")
	if s := h.reconcile(); s.AppliedRevision != next || s.SourceError != "" {
		t.Errorf("got applied %s source error %q, want %s and none", s.AppliedRevision, s.SourceError, next)
	}
}

// TestUnsignedCommitRefused: with a keyring, an unsigned commit is refused
// and status names it; the signed revision keeps serving.
func TestUnsignedCommitRefused(t *testing.T) {
	t.Parallel()
	k := gittest.NewGPG(t)
	key := k.NewKey("Fleet Admin <admin@example.com>")
	repo := gittest.New(t, "main")
	repo.CopyDir(exampleFleet, "")
	signed := repo.CommitSigned(k, key, "signed fleet")

	g, err := source.NewGit(source.GitConfig{URL: repo.Dir, Dir: filepath.Join(t.TempDir(), "repo"), Keyring: k.Armored(key)})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, g, "")
	if s := h.reconcile(); s.AppliedRevision != signed {
		t.Fatalf("got applied %q, want the signed %s (errors %v)", s.AppliedRevision, signed, s.Errors)
	}
	repo.Replace("hardware/rack-a/web-01.cue", `ip: "10.20.0.21/24"`, `ip: "10.20.0.121/24"`)
	unsigned := repo.Commit("not signed")
	s := h.reconcile()
	if s.AppliedRevision != signed || s.AttemptedRevision != unsigned || s.History[0].Result != ResultRefused {
		t.Fatalf("got applied %s attempted %s result %s, want %s kept and %s refused", s.AppliedRevision, s.AttemptedRevision, s.History[0].Result, signed, unsigned)
	}
	if len(s.Errors) != 1 || !strings.Contains(s.Errors[0].Message, unsigned) {
		t.Errorf("got errors %+v, want one naming %s", s.Errors, unsigned)
	}
}

// TestSignatureCheckSurvivesRestart: an unsigned commit that arrived while
// the daemon was down is refused after the restart, even under a signed
// head: the check resumes from the revision applied before.
func TestSignatureCheckSurvivesRestart(t *testing.T) {
	t.Parallel()
	k := gittest.NewGPG(t)
	key := k.NewKey("Fleet Admin <admin@example.com>")
	repo := gittest.New(t, "main")
	repo.CopyDir(exampleFleet, "")
	signed := repo.CommitSigned(k, key, "signed fleet")
	state := t.TempDir()
	open := func() source.Source {
		g, err := source.NewGit(source.GitConfig{URL: repo.Dir, Dir: filepath.Join(state, "repo"), Keyring: k.Armored(key)})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	run := func(h *harness, until func(Status) bool) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.rec.Run(ctx) }()
		poll.Until(t, "the status wanted", func() bool { return until(h.rec.Status()) })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}

	h1 := newHarness(t, open(), state)
	run(h1, func(s Status) bool { return s.AppliedRevision == signed })

	// While the daemon is down: an unsigned commit, then a signed one.
	repo.Replace("hardware/rack-a/web-01.cue", `ip: "10.20.0.21/24"`, `ip: "10.20.0.121/24"`)
	unsigned := repo.Commit("not signed")
	repo.Replace("hardware/rack-a/web-01.cue", `ip: "10.20.0.121/24"`, `ip: "10.20.0.122/24"`)
	head := repo.CommitSigned(k, key, "signed on top")

	h2 := newHarness(t, open(), state)
	run(h2, func(s Status) bool { return s.AttemptedRevision == head })
	s := h2.rec.Status()
	if s.AppliedRevision != "" || len(s.Errors) != 1 || !strings.Contains(s.Errors[0].Message, unsigned) {
		t.Errorf("after the restart: applied %q, errors %+v; want nothing applied and the unsigned %s named", s.AppliedRevision, s.Errors, unsigned)
	}
}

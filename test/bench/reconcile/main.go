// Command reconcile measures how fast a commit reaches the store: the
// reconciler's figures for `make bench`.
//
//   - cold start: a daemon with an empty state dir clones a 10k-machine
//     repository from a file:// remote, validates every file and applies;
//   - restart: a daemon with the state dir of the cold start (the clone and
//     the validation cache) starts again;
//   - one-file commit: a commit that changes one machine is made with the
//     git CLI (not timed), then one reconcile is timed from the start of the
//     fetch to the revision applied in the store;
//   - directory mode: a file of a plain directory is written, and the time
//     until the daemon's loop (fsnotify, debounce, sync, load, apply) has
//     applied the new revision is timed.
//
// Every figure is checked (the right revision applied, exactly one machine
// changed), and the table states each target from issue 3.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/reconciler"
	"github.com/gitmetal/gitmetal/reconciler/source"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/fleetgen"
)

func main() {
	size := flag.Int("size", 10000, "machines in the fleet (1 to 50000)")
	iters := flag.Int("iterations", 20, "one-file commits and directory writes to time (1 to 100)")
	flag.Parse()
	if *size < 1 || *size > 50000 || *iters < 1 || *iters > 100 {
		fmt.Fprintln(os.Stderr, "reconcile: -size must be 1..50000 and -iterations 1..100")
		os.Exit(2)
	}
	if err := run(os.Stdout, *size, *iters); err != nil {
		fmt.Fprintln(os.Stderr, "reconcile:", err)
		os.Exit(1)
	}
}

func git(dir string, args ...string) error {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@example.com",
		"GIT_COMMITTER_NAME=bench", "GIT_COMMITTER_EMAIL=bench@example.com")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

type daemon struct {
	rec   *reconciler.Reconciler
	store *store.Store
	src   source.Source
}

func newDaemon(src source.Source, stateDir string) (*daemon, error) {
	l, err := schema.NewLoader(schema.Config{})
	if err != nil {
		return nil, err
	}
	st, err := store.New()
	if err != nil {
		return nil, err
	}
	rec, err := reconciler.New(reconciler.Config{Source: src, Store: st, Loader: l, StateDir: stateDir, Interval: time.Hour, Log: zerolog.Nop()})
	if err != nil {
		return nil, err
	}
	if stateDir != "" {
		if _, err := l.LoadCache(filepath.Join(stateDir, "validation.cache")); err != nil {
			return nil, err
		}
	}
	return &daemon{rec: rec, store: st, src: src}, nil
}

// reconcile runs one reconcile and checks that it applied.
func (d *daemon) reconcile(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	if err := d.rec.Reconcile(ctx); err != nil {
		return 0, err
	}
	took := time.Since(start)
	s := d.rec.Status()
	if s.AppliedRevision == "" || s.AttemptedRevision != s.AppliedRevision {
		return 0, fmt.Errorf("not applied: %+v", s.Errors)
	}
	return took, nil
}

func run(w io.Writer, size, iters int) error {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "gitmetal-reconcile-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)

	// The repository: a fleetgen fleet committed with the git CLI.
	repo := filepath.Join(root, "repo")
	paths, err := fleetgen.Write(repo, size, fleetgen.CUE)
	if err != nil {
		return err
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "fleet"}} {
		if err := git(repo, args...); err != nil {
			return err
		}
	}
	state := filepath.Join(root, "state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	openGit := func() (source.Source, error) {
		return source.NewGit(source.GitConfig{URL: "file://" + repo, Dir: filepath.Join(state, "repo")})
	}

	// Cold start: clone, validate everything, apply.
	src, err := openGit()
	if err != nil {
		return err
	}
	d, err := newDaemon(src, state)
	if err != nil {
		return err
	}
	cold, err := d.reconcile(ctx)
	if err != nil {
		return err
	}
	src.Close()
	if err := saveCache(d, state); err != nil {
		return err
	}

	// Restart on the same state dir.
	src, err = openGit()
	if err != nil {
		return err
	}
	d, err = newDaemon(src, state)
	if err != nil {
		return err
	}
	restart, err := d.reconcile(ctx)
	if err != nil {
		return err
	}

	// One-file commits.
	var commits []time.Duration
	for i := range iters {
		n := (i * 7919) % size
		if err := os.WriteFile(filepath.Join(repo, paths[n]), fleetgen.HardwareFile(n, i+1, fleetgen.CUE), 0o644); err != nil {
			return err
		}
		if err := git(repo, "commit", "-q", "-am", fmt.Sprintf("change %d", n)); err != nil {
			return err
		}
		took, err := d.reconcile(ctx)
		if err != nil {
			return err
		}
		commits = append(commits, took)
	}
	src.Close()

	// Directory mode: the daemon's own loop, woken by fsnotify.
	dirTimes, err := dirMode(ctx, repo, paths, iters)
	if err != nil {
		return err
	}

	med, p90 := percentiles(commits)
	dmed, dp90 := percentiles(dirTimes)
	fmt.Fprintf(w, "## reconciler: commit to applied (%d machines)\n\n", size)
	fmt.Fprintf(w, "Machine: %d CPUs, GOMAXPROCS %d, %s/%s, %s. Date %s.\n\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version(), time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintln(w, "| measurement | figure | target |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	fmt.Fprintf(w, "| cold start: clone from file://, validate, apply | %s | — |\n", round(cold))
	fmt.Fprintf(w, "| restart with the state dir (clone + validation cache) | %s | — |\n", round(restart))
	fmt.Fprintf(w, "| one-file commit, fetch start → applied: median of %d | %s %s | ≤ 50 ms |\n", iters, round(med), mark(med, 50*time.Millisecond))
	fmt.Fprintf(w, "| one-file commit: p90 | %s | — |\n", round(p90))
	fmt.Fprintf(w, "| directory mode, file write → applied: median of %d | %s %s | ≤ 10 ms |\n", iters, round(dmed), mark(dmed, 10*time.Millisecond))
	fmt.Fprintf(w, "| directory mode: p90 | %s | — |\n\n", round(dp90))
	fmt.Fprintln(w, "Method: `go run ./test/bench/reconcile`. The fleet is test/fleetgen's (hardware/<rack>/<name>.cue, a workflow for every tenth machine) committed with the git CLI; the daemon is the real reconciler, loader and store in this process, its git source following the repository through a file:// URL (a clone in the state dir, fetched through git-upload-pack). Commits are made outside the timer; each timed reconcile must apply the new revision. Directory mode runs the reconciler's own loop on a plain copy of the fleet: the timer starts before the file is written and stops when the status shows the new revision applied (the 5 ms fsnotify debounce included), polled every 100 µs.")
	return nil
}

func saveCache(d *daemon, state string) error {
	// Run ends by saving the validation cache, as a daemon stopping does.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return d.rec.Run(ctx)
}

func dirMode(ctx context.Context, repo string, paths []string, iters int) ([]time.Duration, error) {
	dir, err := os.MkdirTemp("", "gitmetal-reconcile-dir-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := exec.Command("cp", "-a", repo+"/.", dir).Run(); err != nil {
		return nil, err
	}
	os.RemoveAll(filepath.Join(dir, ".git"))
	src, err := source.NewDir(source.DirConfig{Path: dir})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	d, err := newDaemon(src, "")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.rec.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := waitFor(func() bool { return d.rec.Ready() }, 2*time.Minute); err != nil {
		return nil, err
	}
	var times []time.Duration
	for i := range iters {
		n := (i*104729 + 13) % len(paths)
		before := d.rec.Status().AppliedRevision
		start := time.Now()
		if err := os.WriteFile(filepath.Join(dir, paths[n]), fleetgen.HardwareFile(n, 1000+i, fleetgen.CUE), 0o644); err != nil {
			return nil, err
		}
		if err := waitFor(func() bool { return d.rec.Status().AppliedRevision != before }, 10*time.Second); err != nil {
			return nil, err
		}
		times = append(times, time.Since(start))
		time.Sleep(50 * time.Millisecond) // let the debounce window close
	}
	return times, nil
}

func waitFor(cond func() bool, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", limit)
		}
		time.Sleep(100 * time.Microsecond)
	}
	return nil
}

func percentiles(d []time.Duration) (median, p90 time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2], s[(len(s)*9+9)/10-1]
}

func round(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	}
}

func mark(d, target time.Duration) string {
	if d <= target {
		return "✔"
	}
	return "✘"
}

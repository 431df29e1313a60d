package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/fleetgen"
)

// Fixed iteration counts of the measurements -runs does not set.
const (
	warmRuns    = 5
	oneFileRuns = 20
)

// Time limits of the child processes: far above what a healthy run takes,
// there only so a hung child cannot hang the benchmark.
const (
	buildTimeout = 10 * time.Minute
	childTimeout = 5 * time.Minute
)

// bench is what every size's measurements share.
type bench struct {
	root string // temporary directory
	bin  string // the gitmetal binary
	runs int
	keep bool
}

// result holds the measurements of one fleet size.
type result struct {
	size      int
	cold      []time.Duration // gitmetal validate in a fresh process
	coldCPU   []time.Duration // their user + system CPU time
	coldRSS   int64           // the largest peak RSS of those processes, bytes; 0 when unknown
	inProcess []time.Duration // new Loader + LoadDir + store.New + Apply
	warm      []time.Duration // LoadDir again with the same Loader
	oneFile   []time.Duration // Load with one changed file + Apply
	oneApply  []time.Duration // the Apply part of oneFile
	floor     []time.Duration // JSON decode + hand validation
}

// loaded is a Loader that has loaded a fleet and a store that applied it.
type loaded struct {
	loader *schema.Loader
	store  *store.Store
	counts [3]int // hardware, templates, workflows
}

// benchSize writes the fleets of n machines and measures them.
func benchSize(ctx context.Context, log zerolog.Logger, b bench, n int) (result, error) {
	dir := filepath.Join(b.root, fmt.Sprintf("fleet-%d", n))
	cueDir, jsonDir := filepath.Join(dir, "cue"), filepath.Join(dir, "json")
	if !b.keep {
		defer os.RemoveAll(dir) // the root is removed anyway; this frees the disk early
	}
	log.Info().Msg("writing fleets")
	paths, err := fleetgen.Write(cueDir, n, fleetgen.CUE)
	if err != nil {
		return result{}, fmt.Errorf("write cue fleet: %w", err)
	}
	if _, err := fleetgen.Write(jsonDir, n, fleetgen.JSON); err != nil {
		return result{}, fmt.Errorf("write json fleet: %w", err)
	}
	flushWrites()

	r := result{size: n}
	log.Info().Int("runs", b.runs).Msg("cold, fresh process")
	if r.cold, r.coldCPU, r.coldRSS, err = measureProcess(ctx, b.bin, cueDir, b.runs); err != nil {
		return result{}, fmt.Errorf("cold, fresh process: %w", err)
	}
	log.Info().Int("runs", b.runs).Msg("cold, in process")
	var l *loaded
	if r.inProcess, l, err = measureInProcess(ctx, cueDir, b.runs); err != nil {
		return result{}, fmt.Errorf("cold, in process: %w", err)
	}
	log.Info().Int("runs", warmRuns).Msg("warm")
	if r.warm, err = measureWarm(ctx, l, cueDir, warmRuns); err != nil {
		return result{}, fmt.Errorf("warm: %w", err)
	}
	log.Info().Int("runs", oneFileRuns).Msg("one changed file")
	if r.oneFile, r.oneApply, err = measureOneFile(ctx, l, cueDir, paths, oneFileRuns); err != nil {
		return result{}, fmt.Errorf("one changed file: %w", err)
	}
	log.Info().Int("runs", b.runs).Msg("floor")
	if r.floor, err = measureFloor(ctx, jsonDir, b.runs, l.counts); err != nil {
		return result{}, fmt.Errorf("floor: %w", err)
	}
	return r, nil
}

// buildGitmetal builds cmd/gitmetal of the module the benchmark runs in
// into dir and returns the binary's path.
func buildGitmetal(ctx context.Context, dir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(gomod))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the gitmetal module: run from the repository")
	}
	bin := filepath.Join(dir, "gitmetal")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/gitmetal")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/gitmetal: %w\n%s", err, out)
	}
	return bin, nil
}

// measureProcess runs `gitmetal validate dir` runs times and returns the
// wall and CPU times and the largest peak RSS. Each run must report a valid
// fleet.
func measureProcess(ctx context.Context, bin, dir string, runs int) (wall, cpu []time.Duration, rss int64, err error) {
	wall, cpu = make([]time.Duration, 0, runs), make([]time.Duration, 0, runs)
	for range runs {
		w, ps, err := runValidate(ctx, bin, dir)
		if err != nil {
			return nil, nil, 0, err
		}
		peak, _ := peakRSS(ps)
		wall, cpu, rss = append(wall, w), append(cpu, ps.UserTime()+ps.SystemTime()), max(rss, peak)
	}
	return wall, cpu, rss, nil
}

// runValidate runs `gitmetal validate dir` once and returns its wall time
// and its state, which holds its resource usage.
func runValidate(ctx context.Context, bin, dir string) (time.Duration, *os.ProcessState, error) {
	ctx, cancel := context.WithTimeout(ctx, childTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "validate", dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, nil, fmt.Errorf("gitmetal validate: %w\n%s", err, truncate(out.String(), 2000))
	}
	if !strings.Contains(out.String(), ": valid: ") {
		return 0, nil, fmt.Errorf("gitmetal validate: exit 0 without a valid summary:\n%s", truncate(out.String(), 2000))
	}
	return d, cmd.ProcessState, nil
}

// measureInProcess loads and stores the fleet in dir runs times, each with
// a new Loader and store, and returns the times and the last Loader and
// store, for the warm and one-file measurements.
func measureInProcess(ctx context.Context, dir string, runs int) ([]time.Duration, *loaded, error) {
	times := make([]time.Duration, 0, runs)
	var last *loaded
	for range runs {
		// Neither the previous run's Loader nor its garbage is this run's cost.
		last = nil
		runtime.GC()
		start := time.Now()
		l, err := coldLoad(ctx, dir)
		if err != nil {
			return nil, nil, err
		}
		times = append(times, time.Since(start))
		last = l
	}
	return times, last, nil
}

// coldLoad loads dir with a new Loader and applies it to a new store.
func coldLoad(ctx context.Context, dir string) (*loaded, error) {
	l, err := schema.NewLoader(schema.Config{})
	if err != nil {
		return nil, err
	}
	f, err := l.LoadDir(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	s, err := store.New()
	if err != nil {
		return nil, err
	}
	if _, err := s.Apply("dir:cold", f); err != nil {
		return nil, err
	}
	h, t, w := f.Counts()
	return &loaded{loader: l, store: s, counts: [3]int{h, t, w}}, nil
}

// measureWarm loads dir again with l's Loader runs times. Every file must
// come from the cache.
func measureWarm(ctx context.Context, l *loaded, dir string, runs int) ([]time.Duration, error) {
	times := make([]time.Duration, 0, runs)
	for range runs {
		runtime.GC()
		before := l.loader.Stats()
		start := time.Now()
		if _, err := l.loader.LoadDir(ctx, dir); err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		times = append(times, time.Since(start))
		if got := l.loader.Stats().Evaluated - before.Evaluated; got != 0 {
			return nil, fmt.Errorf("warm load evaluated %d files, want 0", got)
		}
	}
	return times, nil
}

// measureOneFile changes one machine's file runs times and times Load over
// the fleet's files as the git source hands them over (every unchanged file
// with its blob hash and a lazy Open, the changed one with its content)
// plus the store Apply of the result, and returns the times of both and of
// the Apply alone. paths are the machine files by machine number, relative
// to dir.
func measureOneFile(ctx context.Context, l *loaded, dir string, paths []string, runs int) (total, apply []time.Duration, err error) {
	var opens atomic.Int64
	files, err := gitFiles(dir, &opens)
	if err != nil {
		return nil, nil, err
	}
	index := make(map[string]int, len(files))
	for i, f := range files {
		index[f.Path] = i
	}
	total, apply = make([]time.Duration, 0, runs), make([]time.Duration, 0, runs)
	for i := range runs {
		m := changedMachine(i, runs, len(paths))
		fi, ok := index[paths[m]]
		if !ok {
			return nil, nil, fmt.Errorf("machine file %s not in the fleet", paths[m])
		}
		data := fleetgen.HardwareFile(m, i+1, fleetgen.CUE)
		files[fi] = schema.File{Path: paths[m], Data: data}
		runtime.GC()
		t, a, err := loadOneChange(ctx, l, files[fi], fmt.Sprintf("one-%d", i))
		if err != nil {
			return nil, nil, fmt.Errorf("change %s: %w", paths[m], err)
		}
		total, apply = append(total, t), append(apply, a)
		// From now on the file is an unchanged one.
		files[fi] = schema.File{Path: paths[m], Blob: schema.BlobHash(data), Open: lazy(data, &opens)}
	}
	if n := opens.Load(); n != 0 {
		return nil, nil, fmt.Errorf("the loader opened %d unchanged files, want none", n)
	}
	return total, apply, nil
}

// changedMachine returns the machine changed in iteration i of runs:
// spread over the fleet and alternating between a machine with a workflow
// (fleetgen gives every tenth one) and one without.
func changedMachine(i, runs, n int) int {
	return (i*n/runs + i%2) % n
}

// loadOneChange hands the loader the one file that changed since its last
// load, as the reconciler does with the git or directory source's list of
// changed paths (Loader.Update), applies the fleet at rev, and returns the
// time both took and the Apply's part.
func loadOneChange(ctx context.Context, l *loaded, changed schema.File, rev string) (total, apply time.Duration, err error) {
	before := l.loader.Stats()
	start := time.Now()
	f, err := l.loader.Update(ctx, []schema.File{changed}, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("load: %w", err)
	}
	loadedAt := time.Now()
	res, err := l.store.Apply(rev, f)
	if err != nil {
		return 0, 0, err
	}
	total, apply = time.Since(start), time.Since(loadedAt)
	if got := l.loader.Stats().Evaluated - before.Evaluated; got != 1 {
		return 0, 0, fmt.Errorf("evaluated %d files, want 1", got)
	}
	if want := (store.Changes{Changed: 1}); res.Hardware != want {
		return 0, 0, fmt.Errorf("apply changed hardware %+v, want %+v", res.Hardware, want)
	}
	return total, apply, nil
}

// gitFiles returns the fleet's files as a git source gives them: blob hash
// known, content behind Open. Each Open counts in opens.
func gitFiles(dir string, opens *atomic.Int64) ([]schema.File, error) {
	files, err := schema.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for i := range files {
		data, err := files[i].Open()
		if err != nil {
			return nil, err
		}
		files[i].Blob = schema.BlobHash(data)
		files[i].Open = lazy(data, opens)
	}
	return files, nil
}

// lazy returns an Open that counts its calls and returns data.
func lazy(data []byte, opens *atomic.Int64) func() ([]byte, error) {
	return func() ([]byte, error) {
		opens.Add(1)
		return data, nil
	}
}

// measureFloor loads the JSON fleet in dir with the floor runs times. The
// floor must find the fleet valid with the counts gitmetal found.
func measureFloor(ctx context.Context, dir string, runs int, want [3]int) ([]time.Duration, error) {
	times := make([]time.Duration, 0, runs)
	for range runs {
		runtime.GC()
		start := time.Now()
		f, issues, err := loadFloor(ctx, dir, runtime.GOMAXPROCS(0))
		d := time.Since(start)
		if err != nil {
			return nil, err
		}
		if len(issues) > 0 {
			return nil, fmt.Errorf("floor found %d issues, first: %s", len(issues), issues[0])
		}
		if got := f.counts(); got != want {
			return nil, fmt.Errorf("floor counts (hardware, templates, workflows) %v, gitmetal %v", got, want)
		}
		times = append(times, d)
	}
	return times, nil
}

// truncate shortens s to at most n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

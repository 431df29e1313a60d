// Command bench measures gitmetal's loader on synthetic fleets and prints
// the table `make bench` shows: a cold load in a fresh process (wall time
// and peak RSS), a warm load, one changed file, and a floor that does the
// same job without CUE, each next to its target from issue 2.
//
// It writes the fleets under one temporary directory, builds the gitmetal
// binary there once, and removes the directory when done (unless -keep).
// It fails rather than print a figure it could not check: an invalid fleet,
// a cache miss where a hit was expected, a file read that the git source
// would not make, or a floor that disagrees with gitmetal on the counts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Bounds on the flags, so that a typo cannot make the benchmark run for
// hours or fill the disk.
const (
	maxSize = 100_000
	maxRuns = 25
)

// config is the parsed command line.
type config struct {
	sizes []int  // fleet sizes, in machines
	runs  int    // cold runs (fresh process, in-process) and floor runs
	out   string // also write the report here, when set
	keep  bool   // keep the temporary directory
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		// A loader error can list thousands of issues.
		fmt.Fprintln(os.Stderr, "bench:", truncate(err.Error(), 4000))
		os.Exit(1)
	}
}

// run parses args, measures every size and writes the report to stdout
// (and to -out). Progress goes to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly, NoColor: true}).
		With().Timestamp().Str("component", "bench").Logger()

	root, err := os.MkdirTemp("", "gitmetal-bench-")
	if err != nil {
		return fmt.Errorf("make temporary directory: %w", err)
	}
	defer cleanup(log, root, cfg.keep)

	log.Info().Msg("building gitmetal")
	bin, err := buildGitmetal(ctx, root)
	if err != nil {
		return err
	}
	machine := describeMachine(time.Now())
	results := make([]result, 0, len(cfg.sizes))
	for _, n := range cfg.sizes {
		r, err := benchSize(ctx, log.With().Int("machines", n).Logger(), bench{root: root, bin: bin, runs: cfg.runs, keep: cfg.keep}, n)
		if err != nil {
			return fmt.Errorf("%d machines: %w", n, err)
		}
		results = append(results, r)
	}

	machine.loadEnd = loadAverage()
	report := renderReport(machine, cfg.runs, results)
	if _, err := io.WriteString(stdout, report); err != nil {
		return err
	}
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(report), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	return nil
}

// cleanup removes the temporary directory, or says where it was kept.
func cleanup(log zerolog.Logger, root string, keep bool) {
	if keep {
		log.Info().Str("dir", root).Msg("kept temporary directory")
		return
	}
	if err := os.RemoveAll(root); err != nil {
		log.Error().Err(err).Str("dir", root).Msg("remove temporary directory")
	}
}

// parseFlags parses the command line and checks it against the bounds.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("sizes", "1000,10000", "comma-separated fleet sizes in machines (each 1 to "+strconv.Itoa(maxSize)+")")
	cfg := config{}
	fs.IntVar(&cfg.runs, "runs", 3, "cold and floor runs per size; the median is reported (1 to "+strconv.Itoa(maxRuns)+")")
	fs.StringVar(&cfg.out, "out", "", "also write the report as markdown to this file")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory with the fleets and the binary")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.runs < 1 || cfg.runs > maxRuns {
		return config{}, fmt.Errorf("-runs %d: allowed: 1 to %d", cfg.runs, maxRuns)
	}
	var err error
	if cfg.sizes, err = parseSizes(*sizes); err != nil {
		return config{}, err
	}
	return cfg, nil
}

// parseSizes parses a comma-separated list of fleet sizes.
func parseSizes(s string) ([]int, error) {
	var sizes []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > maxSize {
			return nil, fmt.Errorf("-sizes %q: %q is not a whole number from 1 to %d", s, f, maxSize)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

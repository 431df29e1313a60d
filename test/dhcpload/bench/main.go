// Command bench is `make bench`'s DHCP comparison: gitmetal's DHCP server
// against dnsmasq and against a raw UDP reply loop (the ceiling of the
// harness), at 1, 1,000 and 10,000 reservations, with 1 and 32 exchanges in
// flight, plus perfdhcp at fixed rates as a cross-check.
//
//	go run ./test/dhcpload/bench            # needs root, ip, taskset, dnsmasq, perfdhcp, 2 CPUs
//
// Method: one run, one pair of network namespaces joined by a veth pair
// (server 10.200.0.1/16, load generator 10.200.0.2/16). Each server runs
// in its own process pinned to CPU 0 (taskset) in the server namespace;
// the load generator (test/dhcpload, a relay sending full DORA exchanges
// for known MACs with PXE options) runs pinned to CPU 1 in the other.
// Servers run one after another, each measured at every size, so they
// share the machine's state of the moment; a ratio is only ever taken
// between figures of the same run. gitmetal runs its real handler with
// every option (1, 3, 6, 12, 15, 28, 42, 51, 54, 58, 59, 119, 121 and the
// netboot block) from a go-memdb store; dnsmasq gets the same reservations
// as dhcp-host lines and the same options, --leasefile-ro, --quiet-dhcp,
// no DNS. The raw loop answers each request with a reply of gitmetal's
// size without looking anything up. The server4 row runs gitmetal's
// handler under insomniacslk's server4 (a goroutine per packet) instead
// of gitmetal's worker pool. The load generator cycles through the
// reservations, so after its first pass gitmetal's handler answers from
// its memo (what it derived from the store per MAC, valid until the next
// commit), as in a boot storm where each machine asks several times (PXE
// ROM, iPXE, installer); the cold row makes the store's generation change
// on every read, so that every packet takes the path of a machine's first
// request after a commit that did not change it (store lookup, memo
// update; the options encoded before are kept).
//
// Each measurement is bounded in count and time; the whole run takes
// about two minutes. The bench removes its namespaces and ends the
// processes it started (by PID) when done or interrupted.
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// A child role is the first argument; the orchestrator has none.
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		role, rest := args[0], args[1:]
		fs := flag.NewFlagSet(role, flag.ContinueOnError)
		f, err := parseRoleFlags(fs, rest)
		if err != nil {
			return err
		}
		switch role {
		case "gitmetal":
			return runGitmetal(ctx, f, stdout, false)
		case "cold":
			return runGitmetal(ctx, f, stdout, true)
		case "server4":
			return runServer4(ctx, f, stdout)
		case "raw":
			return runRaw(ctx, f, stdout, 1)
		case "rawbatch":
			return runRaw(ctx, f, stdout, rawBatch)
		case "load":
			return runLoad(ctx, f, stdout)
		}
		return fmt.Errorf("unknown role %q", role)
	}
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	return orchestrate(ctx, cfg, stdout, stderr)
}

// config is the orchestrator's command line.
type config struct {
	sizes    []int
	inflight []int
	duration time.Duration // per measurement
	count    int           // per measurement, at most
	rates    []int         // perfdhcp rates
	perfSecs int
	perfSize int
	servers  []string
	rounds   int
	extras   []string // servers measured at the largest size only
	workers  int
	nice     int
}

// Bounds on the flags, so that a typo cannot run for hours.
const (
	maxSize     = 60_000
	maxDuration = 30 * time.Second
	maxPerfSecs = 30
	maxRate     = 100_000
)

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("sizes", "1,1000,10000", "reservation counts")
	inflight := fs.String("inflight", "1,32", "exchanges in flight")
	fs.DurationVar(&c.duration, "duration", time.Second, "time per measurement, at most")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds per size; each figure is the median of its rounds")
	fs.IntVar(&c.count, "count", 300_000, "exchanges per measurement, at most")
	rates := fs.String("perfdhcp-rates", "5000,20000", "perfdhcp rates (exchanges/s); empty: no perfdhcp")
	fs.IntVar(&c.perfSecs, "perfdhcp-secs", 10, "seconds per perfdhcp run")
	fs.IntVar(&c.perfSize, "perfdhcp-size", 10_000, "reservations for perfdhcp")
	servers := fs.String("servers", "raw,rawbatch,gitmetal,dnsmasq", "servers to compare (raw, rawbatch, gitmetal, dnsmasq, server4, cold)")
	server4 := fs.Bool("server4", true, "also measure gitmetal's handler under server4 at the largest size")
	cold := fs.Bool("cold", true, "also measure gitmetal with its memo never hitting (every packet looks its MAC up in the store) at the largest size")
	fs.IntVar(&c.nice, "nice", -10, "niceness of the server and load processes, to keep other work on the machine from skewing them")
	fs.IntVar(&c.workers, "workers", 0, "gitmetal workers per socket (0: its default)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if *server4 {
		c.extras = append(c.extras, "server4")
	}
	if *cold {
		c.extras = append(c.extras, "cold")
	}
	var err error
	if c.sizes, err = ints(*sizes, 1, maxSize); err != nil {
		return c, fmt.Errorf("-sizes: %w", err)
	}
	if c.inflight, err = ints(*inflight, 1, 1024); err != nil {
		return c, fmt.Errorf("-inflight: %w", err)
	}
	if *rates != "" {
		if c.rates, err = ints(*rates, 1, maxRate); err != nil {
			return c, fmt.Errorf("-perfdhcp-rates: %w", err)
		}
	}
	for _, sv := range strings.Split(*servers, ",") {
		switch sv {
		case "raw", "rawbatch", "gitmetal", "dnsmasq", "server4", "cold":
			c.servers = append(c.servers, sv)
		default:
			return c, fmt.Errorf("-servers: %q: want raw, rawbatch, gitmetal, dnsmasq, server4 or cold", sv)
		}
	}
	switch {
	case c.rounds < 1 || c.rounds > 9:
		return c, fmt.Errorf("-rounds %d: want 1 to 9", c.rounds)
	case c.nice < -20 || c.nice > 19:
		return c, fmt.Errorf("-nice %d: want -20 to 19", c.nice)
	case c.duration <= 0 || c.duration > maxDuration:
		return c, fmt.Errorf("-duration %s: want more than 0, at most %s", c.duration, maxDuration)
	case c.count <= 0 || c.count > 10_000_000:
		return c, fmt.Errorf("-count %d: want 1 to 10000000", c.count)
	case c.perfSecs <= 0 || c.perfSecs > maxPerfSecs:
		return c, fmt.Errorf("-perfdhcp-secs %d: want 1 to %d", c.perfSecs, maxPerfSecs)
	case c.perfSize <= 0 || c.perfSize > maxSize:
		return c, fmt.Errorf("-perfdhcp-size %d: want 1 to %d", c.perfSize, maxSize)
	case c.workers < 0 || c.workers > 1024:
		return c, fmt.Errorf("-workers %d: want 0 to 1024", c.workers)
	}
	return c, nil
}

func ints(s string, lo, hi int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%q: want comma-separated integers from %d to %d", f, lo, hi)
		}
		out = append(out, n)
	}
	return out, nil
}

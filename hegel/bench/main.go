// Command bench measures hegel with wrk: GET /latest/meta-data/hostname
// from a machine of a 10,000-machine store, side by side in the same run
// with a bare net/http handler that answers a constant string of the same
// length (the ceiling: what any Go HTTP server on this box can do), at 1
// and 32 connections. It prints requests per second, the 99th percentile
// latency and hegel's ratio to the ceiling, next to Tinkerbell's hegel
// figures measured earlier on these machines.
//
// Both servers run in this process on loopback. wrk connects to 127.0.0.1,
// so its source address is 127.0.0.1: the fleet holds 10,000 machines at
// 127.x.y.z addresses, and the one at 127.0.0.1 is the caller. Before
// measuring, it checks that hegel answers that machine's hostname; after,
// that wrk saw no error and no non-2xx answer. Every run is bounded by
// -duration (at most a minute) and a timeout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/hegel"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

// Bounds of the flags, so a typo cannot run for hours.
const (
	maxMachines = 1 << 20
	maxDuration = time.Minute
	maxRuns     = 5
)

// Tinkerbell's hegel (flat-file backend), measured with wrk on these
// machines (issue 5); not measured by this program.
const tinkerbellNote = "Tinkerbell hegel (flat file), measured earlier on these machines: ≈12k req/s at 1 connection, ≈42k at 32"

const path = "/latest/meta-data/hostname"

type config struct {
	machines int
	caller   int
	duration time.Duration
	runs     int
	conns    []int
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hegel bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly, NoColor: true}).
		With().Timestamp().Str("component", "hegel-bench").Logger()
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return fmt.Errorf("wrk is required (apt-get install -y wrk): %w", err)
	}

	st, err := store.New()
	if err != nil {
		return err
	}
	fleet := benchFleet(cfg.machines, cfg.caller)
	if _, err := st.Apply("bench", fleet); err != nil {
		return err
	}
	want := fleet.Hardware[name(cfg.caller)].Interfaces[0].Hostname

	srv, err := hegel.New(hegel.Config{Store: st, Log: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	hegelURL, stopHegel, err := serve(srv.Handler())
	if err != nil {
		return err
	}
	defer stopHegel()
	ceilingURL, stopCeiling, err := serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, want)
	}))
	if err != nil {
		return err
	}
	defer stopCeiling()

	for _, u := range []string{hegelURL, ceilingURL} {
		if err := check(ctx, u+path, want); err != nil {
			return err
		}
	}

	loadBefore := loadAverage()
	type row struct {
		conns              int
		ceiling, hegel     wrkResult
		ceilings, hegelRes []wrkResult
	}
	var rows []row
	for _, c := range cfg.conns {
		r := row{conns: c}
		for i := range cfg.runs {
			// Alternate which goes first, so neither always gets the
			// warmer machine.
			order := []string{"ceiling", "hegel"}
			if i%2 == 1 {
				order = []string{"hegel", "ceiling"}
			}
			for _, which := range order {
				u := map[string]string{"ceiling": ceilingURL, "hegel": hegelURL}[which]
				log.Info().Int("connections", c).Int("run", i+1).Str("server", which).Msg("wrk")
				res, err := runWrk(ctx, wrk, u+path, c, cfg.duration)
				if err != nil {
					return fmt.Errorf("%s, %d connections: %w", which, c, err)
				}
				if which == "hegel" {
					r.hegelRes = append(r.hegelRes, res)
				} else {
					r.ceilings = append(r.ceilings, res)
				}
			}
		}
		r.ceiling, r.hegel = best(r.ceilings), best(r.hegelRes)
		rows = append(rows, r)
	}
	if err := check(ctx, hegelURL+path, want); err != nil {
		return fmt.Errorf("after the runs: %w", err)
	}

	fmt.Fprintf(stdout, "hegel: wrk -t1 -d%s --latency GET %s, %d machines in the store, the caller is %s at 127.0.0.1\n",
		cfg.duration, path, cfg.machines, name(cfg.caller))
	fmt.Fprintf(stdout, "ceiling: net/http handler writing the same %d-byte answer, same process, same box; best of %d run(s) each\n",
		len(want), cfg.runs)
	fmt.Fprintf(stdout, "%s, %s/%s, GOMAXPROCS %d, %d CPUs, load average before %s, after %s\n\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), runtime.NumCPU(), loadBefore, loadAverage())
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "connections\tserver\treq/s\tp99\tratio to ceiling\tgoal\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\tceiling\t%.0f\t%s\t1.00\t\t\n", r.conns, r.ceiling.rps, r.ceiling.p99)
		verdict := "met"
		ratio := r.hegel.rps / r.ceiling.rps
		if ratio < 0.8 {
			verdict = "MISSED"
		}
		fmt.Fprintf(tw, "%d\thegel\t%.0f\t%s\t%.2f\t>= 0.80 %s\t\n", r.conns, r.hegel.rps, r.hegel.p99, ratio, verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%s.\n", tinkerbellNote)
	return nil
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	var conns string
	fs.IntVar(&cfg.machines, "machines", 10000, "machines in the store")
	fs.IntVar(&cfg.caller, "caller", 4242, "which machine wrk is (it gets 127.0.0.1)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "length of each wrk run")
	fs.IntVar(&cfg.runs, "runs", 1, "wrk runs per server and connection count; the best is reported")
	fs.StringVar(&conns, "connections", "1,32", "comma-separated connection counts")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case cfg.machines < 1 || cfg.machines > maxMachines:
		return cfg, fmt.Errorf("-machines %d: want 1 to %d", cfg.machines, maxMachines)
	case cfg.caller < 0 || cfg.caller >= cfg.machines:
		return cfg, fmt.Errorf("-caller %d: want 0 to %d", cfg.caller, cfg.machines-1)
	case cfg.duration < time.Second || cfg.duration > maxDuration:
		return cfg, fmt.Errorf("-duration %s: want 1s to %s", cfg.duration, maxDuration)
	case cfg.runs < 1 || cfg.runs > maxRuns:
		return cfg, fmt.Errorf("-runs %d: want 1 to %d", cfg.runs, maxRuns)
	}
	for _, f := range strings.Split(conns, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 || c > 1000 {
			return cfg, fmt.Errorf("-connections %q: want numbers from 1 to 1000", conns)
		}
		cfg.conns = append(cfg.conns, c)
	}
	return cfg, nil
}

// loadAverage returns the 1-minute load average, which says how much the
// figures can be trusted on a shared machine, or "?".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func name(n int) string { return fmt.Sprintf("node-%05d", n) }

// addr returns machine n's address: 127.0.0.1 for the caller, else
// 127.(1+n/65536).(n/256%256).(n%256), which never is 127.0.0.1.
func addr(n, caller int) string {
	if n == caller {
		return "127.0.0.1"
	}
	return fmt.Sprintf("127.%d.%d.%d", 1+n>>16, (n>>8)&0xff, n&0xff)
}

// benchFleet returns machines shaped like test/fleetgen's (labels,
// Equinix-shaped metadata, user-data, a key), at loopback addresses.
func benchFleet(n, caller int) *schema.Fleet {
	f := &schema.Fleet{
		Settings:  &schema.Settings{Site: "dc1", LeaseTime: 43200},
		Hardware:  make(map[string]*schema.Hardware, n),
		Templates: map[string]*schema.Template{},
		Workflows: map[string]*schema.Workflow{},
	}
	for i := range n {
		h := &schema.Hardware{
			Name:   name(i),
			Site:   "dc1",
			Labels: map[string]string{"rack": fmt.Sprintf("r%03d", i/40), "role": "worker"},
			Interfaces: []schema.Interface{{
				MAC:         fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", (i>>24)&0xff, (i>>16)&0xff, (i>>8)&0xff, i&0xff),
				IP:          addr(i, caller) + "/8",
				Hostname:    name(i),
				Nameservers: []string{"10.0.0.53"},
				Arch:        "x86_64",
				LeaseTime:   43200,
				Netboot:     schema.Netboot{AllowPXE: true},
			}},
			Disks: []schema.Disk{{Device: "/dev/disk/by-path/pci-0000:00:1f.2-ata-1"}},
			Metadata: map[string]any{
				"instance": map[string]any{"id": fmt.Sprintf("i-%08x", i), "tags": []any{"bench"}},
			},
			UserData: "#cloud-config\nhostname: " + name(i) + "\n",
			SSHKeys:  []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm0ZmxlZXRnZW5rZXlmb3JiZW5jaG1hcmtzb25seQ bench@gitmetal"},
		}
		f.Hardware[h.Name] = h
	}
	return f
}

// serve serves h on a fresh loopback port with the timeouts a daemon would
// set, and returns its base URL and a stop function.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln) // ends with ErrServerClosed on stop
	}()
	stop := func() {
		_ = hs.Close()
		<-done
	}
	return "http://" + ln.Addr().String(), stop, nil
}

// check GETs u from 127.0.0.1 and wants 200 with body want.
func check(ctx context.Context, u, want string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK || string(b) != want {
		return fmt.Errorf("GET %s: got %d %q, want 200 %q", u, res.StatusCode, b, want)
	}
	return nil
}

type wrkResult struct {
	rps float64
	p99 time.Duration
}

func best(rs []wrkResult) wrkResult {
	var b wrkResult
	for _, r := range rs {
		if r.rps > b.rps {
			b = r
		}
	}
	return b
}

var (
	reRPS    = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	reP99    = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s)\s*$`)
	reErrors = regexp.MustCompile(`(?m)^\s+(Non-2xx or 3xx responses|Socket errors):.*$`)
)

// runWrk runs wrk against u and parses its report; any socket error or
// non-2xx answer fails the run.
func runWrk(ctx context.Context, wrk, u string, conns int, d time.Duration) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, wrk, "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(int(d.Seconds()))+"s", "--latency", u)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	return parseWrk(string(out))
}

// parseWrk reads requests per second and the 99th percentile from wrk's
// --latency report; any socket error or non-2xx answer is an error.
func parseWrk(s string) (wrkResult, error) {
	if m := reErrors.FindString(s); m != "" {
		return wrkResult{}, fmt.Errorf("wrk reported %q:\n%s", strings.TrimSpace(m), s)
	}
	m := reRPS.FindStringSubmatch(s)
	p := reP99.FindStringSubmatch(s)
	if m == nil || p == nil {
		return wrkResult{}, fmt.Errorf("cannot read wrk's report:\n%s", s)
	}
	rps, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return wrkResult{}, err
	}
	v, err := strconv.ParseFloat(p[1], 64)
	if err != nil {
		return wrkResult{}, err
	}
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[p[2]]
	return wrkResult{rps: rps, p99: time.Duration(v * float64(unit)).Round(time.Microsecond)}, nil
}

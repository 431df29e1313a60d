package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gitmetal/gitmetal/test/dhcpload"
	"github.com/gitmetal/gitmetal/test/netlab"
)

// CPUs the server and the load generator are pinned to.
const (
	serverCPU = "0"
	loadCPU   = "1"
)

// lab is the namespace pair of the run.
type lab struct {
	nice           int
	srv, cli       *netlab.Netns
	srvIf, cliIf   string
	dir, exe       string
	stderr         io.Writer
	dnsmasq, perfd string
}

// measurement is one row of the table.
type measurement struct {
	server   string
	size     int
	inflight int
	res      dhcpload.Result
	err      error
}

func orchestrate(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, port 67)")
	}
	if runtime.NumCPU() < 2 {
		return fmt.Errorf("needs 2 CPUs (server on CPU %s, load on CPU %s); this machine has %d", serverCPU, loadCPU, runtime.NumCPU())
	}
	l := &lab{stderr: stderr, nice: cfg.nice}
	for _, tool := range []struct {
		name string
		dst  *string
	}{{"ip", nil}, {"taskset", nil}, {"nice", nil}, {"dnsmasq", &l.dnsmasq}, {"perfdhcp", &l.perfd}} {
		p, err := exec.LookPath(tool.name)
		if err != nil {
			return fmt.Errorf("needs %s (Debian: iproute2, util-linux, dnsmasq-base, kea-admin): %w", tool.name, err)
		}
		if tool.dst != nil {
			*tool.dst = p
		}
	}
	var err error
	if l.exe, err = os.Executable(); err != nil {
		return err
	}
	if l.dir, err = os.MkdirTemp("", "dhcpbench-"); err != nil {
		return err
	}
	defer os.RemoveAll(l.dir)
	cleanup, err := l.setup()
	defer cleanup()
	if err != nil {
		return err
	}

	started := time.Now()
	fmt.Fprintf(stderr, "bench: lab %s/%s ready; %d sizes x %v in flight\n", l.srv.Name, l.cli.Name, len(cfg.sizes), cfg.inflight)
	var rows []measurement
	for si, size := range cfg.sizes {
		ss := cfg.servers
		for _, extra := range cfg.extras {
			if si == len(cfg.sizes)-1 && !slices.Contains(ss, extra) {
				ss = append(ss[:len(ss):len(ss)], extra)
			}
		}
		// Rounds alternate the servers, so that a burst of other work on
		// the machine lands on one round of each rather than on all of
		// one server's; each figure is the median of its rounds.
		var raw []measurement
		for range cfg.rounds {
			for _, server := range ss {
				ms, err := l.measure(ctx, cfg, server, size)
				if err != nil {
					return fmt.Errorf("%s at %d reservations: %w", server, size, err)
				}
				raw = append(raw, ms...)
			}
		}
		for _, server := range ss {
			for _, k := range cfg.inflight {
				rows = append(rows, median(raw, server, size, k))
			}
		}
	}
	var perf []perfRow
	for _, server := range []string{"gitmetal", "dnsmasq"} {
		if len(cfg.rates) == 0 || !slices.Contains(cfg.servers, server) {
			continue
		}
		ps, err := l.perfdhcp(ctx, cfg, server)
		if err != nil {
			return fmt.Errorf("perfdhcp against %s: %w", server, err)
		}
		perf = append(perf, ps...)
	}
	report(stdout, cfg, rows, perf, time.Since(started))
	return nil
}

// setup makes the namespace pair; cleanup deletes it.
func (l *lab) setup() (cleanup func(), err error) {
	var undo []func()
	cleanup = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	for _, p := range []struct {
		ns     **netlab.Netns
		prefix string
	}{{&l.srv, "bsrv"}, {&l.cli, "bcli"}} {
		n, err := netlab.CreateNetns(netlab.Name(p.prefix))
		if err != nil {
			return cleanup, err
		}
		undo = append(undo, func() {
			if err := n.Delete(); err != nil {
				fmt.Fprintln(l.stderr, "bench: cleanup:", err)
			}
		})
		*p.ns = n
		if err := n.DisableIPv6(); err != nil {
			return cleanup, err
		}
	}
	l.srvIf, l.cliIf = netlab.Name("srv"), netlab.Name("cli")
	steps := []func() error{
		func() error { return netlab.AddVeth(l.srv, l.srvIf, l.cli, l.cliIf) },
		func() error { return l.srv.AddAddr(l.srvIf, dhcpload.ServerAddr+"/16") },
		func() error { return l.cli.AddAddr(l.cliIf, dhcpload.RelayAddr+"/16") },
		func() error { return l.srv.SetUp(l.srvIf) },
		func() error { return l.cli.SetUp(l.cliIf) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return cleanup, err
		}
	}
	return cleanup, nil
}

// pinned returns the arguments of nice that run args at the bench's
// niceness, on cpu, inside ns.
func (l *lab) pinned(ns *netlab.Netns, cpu string, args ...string) []string {
	return append([]string{"-n", strconv.Itoa(l.nice), "taskset", "-c", cpu, "ip", "netns", "exec", ns.Name}, args...)
}

// proc is a process the bench started; it is ended by its PID.
type proc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
}

// start runs args pinned to cpu inside ns. When ready is set, start waits
// for the process to print "ready" on stdout.
func (l *lab) start(ctx context.Context, ns *netlab.Netns, cpu string, ready bool, args ...string) (*proc, error) {
	cmd := exec.Command("nice", l.pinned(ns, cpu, args...)...)
	p := &proc{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	readyc := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		got := false
		for sc.Scan() {
			if !got && sc.Text() == "ready" {
				got = true
				readyc <- true
			}
		}
		if !got {
			readyc <- false
		}
		p.done <- cmd.Wait()
	}()
	if !ready {
		return p, nil
	}
	select {
	case ok := <-readyc:
		if !ok {
			p.stop()
			return nil, fmt.Errorf("%s exited before it was ready: %s", args[0], p.stderr.String())
		}
	case <-time.After(60 * time.Second):
		p.stop()
		return nil, fmt.Errorf("%s not ready after 60 s: %s", args[0], p.stderr.String())
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
	return p, nil
}

// stop ends the process: SIGTERM, then SIGKILL after 10 s.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// startServer starts one of the compared servers with size reservations.
func (l *lab) startServer(ctx context.Context, cfg config, server string, size int) (*proc, error) {
	switch server {
	case "dnsmasq":
		conf, err := l.dnsmasqConf(size)
		if err != nil {
			return nil, err
		}
		p, err := l.start(ctx, l.srv, serverCPU, false, l.dnsmasq,
			"--no-daemon", "--conf-file="+conf, "--port=0", "--leasefile-ro", "--quiet-dhcp",
			"--log-facility=/dev/null", "--pid-file=", "--user=root", "--group=root",
			"--interface="+l.srvIf, "--bind-interfaces", "--no-ping", "--dhcp-authoritative",
			// The default, 1,000 leases, would refuse the larger fleets.
			"--dhcp-lease-max="+strconv.Itoa(2*size+1000))
		return p, err
	default:
		args := []string{l.exe, server, "-iface", l.srvIf, "-n", strconv.Itoa(size)}
		if cfg.workers > 0 {
			args = append(args, "-workers", strconv.Itoa(cfg.workers))
		}
		return l.start(ctx, l.srv, serverCPU, true, args...)
	}
}

// dnsmasqConf writes dnsmasq's configuration: the fleet's reservations
// as dhcp-host lines and the options gitmetal gives.
func (l *lab) dnsmasqConf(size int) (string, error) {
	var b strings.Builder
	b.WriteString("dhcp-range=10.200.0.0,static,255.255.0.0,1h\n")
	b.WriteString("dhcp-option=3,10.200.0.1\ndhcp-option=6,10.200.0.53,10.200.0.54\ndhcp-option=15,bench.example\n")
	b.WriteString("dhcp-option=42,10.200.0.123\ndhcp-option=119,bench.example,example\n")
	b.WriteString("dhcp-option=121,10.201.0.0/16,10.200.0.254,0.0.0.0/0,10.200.0.1\n")
	b.WriteString("dhcp-boot=ipxe.efi,," + dhcpload.ServerAddr + "\n")
	for i := range size {
		fmt.Fprintf(&b, "dhcp-host=%s,%s,%s,1h\n", dhcpload.MAC(i), dhcpload.Addr(i), dhcpload.Hostname(i))
	}
	p := filepath.Join(l.dir, fmt.Sprintf("dnsmasq-%d.conf", size))
	return p, os.WriteFile(p, []byte(b.String()), 0o644)
}

// median combines the rounds of server at size and k in flight: the
// median of each figure, the sum of the losses and wrong replies.
func median(rounds []measurement, server string, size, k int) measurement {
	m := measurement{server: server, size: size, inflight: k}
	var rates []float64
	var p50, p99 []time.Duration
	for _, r := range rounds {
		if r.server != server || r.size != size || r.inflight != k {
			continue
		}
		rates, p50, p99 = append(rates, r.res.Rate), append(p50, r.res.P50), append(p99, r.res.P99)
		m.res.Exchanges += r.res.Exchanges
		m.res.Lost += r.res.Lost
		m.res.Wrong += r.res.Wrong
		if m.err == nil {
			m.err = r.err
		}
	}
	slices.Sort(rates)
	slices.Sort(p50)
	slices.Sort(p99)
	if n := len(rates); n > 0 {
		m.res.Rate, m.res.P50, m.res.P99 = rates[n/2], p50[n/2], p99[n/2]
	}
	return m
}

// measure starts server with size reservations and runs the load at each
// in-flight level.
func (l *lab) measure(ctx context.Context, cfg config, server string, size int) ([]measurement, error) {
	srv, err := l.startServer(ctx, cfg, server, size)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	var ms []measurement
	for _, k := range cfg.inflight {
		args := []string{l.exe, "load", "-n", strconv.Itoa(size), "-inflight", strconv.Itoa(k),
			"-count", strconv.Itoa(cfg.count), "-duration", cfg.duration.String(),
			"-verify=" + strconv.FormatBool(server != "raw" && server != "rawbatch")}
		cmd := exec.CommandContext(ctx, "nice", l.pinned(l.cli, loadCPU, args...)...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("load: %w: %s", err, errb.String())
		}
		var lr loadResult
		if err := json.Unmarshal(out, &lr); err != nil {
			return nil, fmt.Errorf("load output %q: %w", out, err)
		}
		m := measurement{server: server, size: size, inflight: k, res: lr.Result}
		if lr.Result.Wrong > 0 {
			m.err = fmt.Errorf("%d wrong replies: %s", lr.Result.Wrong, lr.Result.FirstWrong)
		}
		fmt.Fprintf(l.stderr, "bench: %-8s n=%-6d inflight=%-3d %8.0f/s p50 %-9s p99 %-9s lost %d wrong %d %s\n",
			server, size, k, lr.Result.Rate, round(lr.Result.P50), round(lr.Result.P99), lr.Result.Lost, lr.Result.Wrong, lr.Result.FirstWrong)
		ms = append(ms, m)
	}
	return ms, nil
}

// perfRow is one perfdhcp run.
type perfRow struct {
	server   string
	rate     int
	achieved float64
	stats    []exchangeStats
	// UDP receive-buffer drops during the run, on the server's side and
	// on perfdhcp's (/proc/net/snmp RcvbufErrors in each namespace): they
	// say which end lost what perfdhcp counts as drops.
	serverDrops, clientDrops int
}

type exchangeStats struct {
	name                  string
	sent, received, drops int
}

// perfdhcp runs perfdhcp at each fixed rate against server with
// cfg.perfSize reservations, choosing MACs from the reservations.
func (l *lab) perfdhcp(ctx context.Context, cfg config, server string) ([]perfRow, error) {
	var macs strings.Builder
	for i := range cfg.perfSize {
		fmt.Fprintln(&macs, dhcpload.MAC(i))
	}
	macFile := filepath.Join(l.dir, "macs")
	if err := os.WriteFile(macFile, []byte(macs.String()), 0o644); err != nil {
		return nil, err
	}
	srv, err := l.startServer(ctx, cfg, server, cfg.perfSize)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	// The same warm-up as the load role: wait until the server answers.
	warm := exec.CommandContext(ctx, "nice", l.pinned(l.cli, loadCPU,
		l.exe, "load", "-n", strconv.Itoa(cfg.perfSize), "-count", "1", "-duration", "1s")...)
	if out, err := warm.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("warm-up: %w: %s", err, out)
	}
	var rows []perfRow
	for _, rate := range cfg.rates {
		srv0, err := udpRcvbufErrors(ctx, l.srv)
		if err != nil {
			return nil, err
		}
		cli0, err := udpRcvbufErrors(ctx, l.cli)
		if err != nil {
			return nil, err
		}
		cmd := exec.CommandContext(ctx, "nice", l.pinned(l.cli, loadCPU, l.perfd, "-4", "-l", l.cliIf, "-r", strconv.Itoa(rate), "-p", strconv.Itoa(cfg.perfSecs),
			"-M", macFile, "-d", "2", "-W", "2000000", dhcpload.ServerAddr)...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 3) { // 3: some exchanges incomplete
			return nil, fmt.Errorf("perfdhcp: %w: %s", err, out)
		}
		row := perfRow{server: server, rate: rate, stats: perfdhcpStats(string(out)), achieved: perfdhcpRate(string(out))}
		srv1, err := udpRcvbufErrors(ctx, l.srv)
		if err != nil {
			return nil, err
		}
		cli1, err := udpRcvbufErrors(ctx, l.cli)
		if err != nil {
			return nil, err
		}
		row.serverDrops, row.clientDrops = srv1-srv0, cli1-cli0
		if len(row.stats) != 2 {
			return nil, fmt.Errorf("perfdhcp output: want DISCOVER-OFFER and REQUEST-ACK statistics:\n%s", out)
		}
		fmt.Fprintf(l.stderr, "bench: perfdhcp %s at %d/s: %+v\n", server, rate, row.stats)
		rows = append(rows, row)
	}
	return rows, nil
}

// perfdhcpStats reads the per-exchange counters of perfdhcp's report.
func perfdhcpStats(out string) []exchangeStats {
	var st []exchangeStats
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.Trim(strings.TrimSpace(sc.Text()), "*")
		if name, ok := strings.CutPrefix(line, "Statistics for:"); ok {
			st = append(st, exchangeStats{name: strings.TrimSpace(name)})
			continue
		}
		if len(st) == 0 {
			continue
		}
		cur := &st[len(st)-1]
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.Fields(val + " x")[0])
		if err != nil {
			continue
		}
		switch key {
		case "sent packets":
			cur.sent = n
		case "received packets":
			cur.received = n
		case "drops":
			cur.drops = n
		}
	}
	return st
}

// perfdhcpRate reads "Rate: N 4-way exchanges/second" from perfdhcp.
func perfdhcpRate(out string) float64 {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Rate:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				r, _ := strconv.ParseFloat(f[0], 64)
				return r
			}
		}
	}
	return 0
}

// udpRcvbufErrors returns the UDP RcvbufErrors counter of ns: datagrams
// dropped because a socket's receive buffer was full.
func udpRcvbufErrors(ctx context.Context, ns *netlab.Netns) (int, error) {
	out, err := ns.Run(ctx, "cat", "/proc/net/snmp")
	if err != nil {
		return 0, err
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				return strconv.Atoi(f[i])
			}
		}
	}
	return 0, fmt.Errorf("netns %s: no Udp RcvbufErrors in /proc/net/snmp", ns.Name)
}

package dhcp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/logbuf"
	"github.com/gitmetal/gitmetal/test/netlab"
)

// The real-client tests: gitmetal's server runs in this process with its
// sockets inside a server namespace (netlab), and udhcpc, dhclient and
// perfdhcp run in a client namespace joined to it by a veth pair. Nothing
// touches the host's interfaces. Timeouts are generous; assertions are on
// what the clients got, never on how fast.

// clientTimeout bounds one client run.
const clientTimeout = 90 * time.Second

// lab is a server namespace running gitmetal's DHCP server and a client
// namespace to run clients in.
type lab struct {
	srv  *Server
	p    *netlab.Pair
	st   *store.Store
	dir  string
	logs *logbuf.Buffer
}

// newLab starts a server in mode for fleet on 10.10.0.1/24.
func newLab(t *testing.T, mode Mode, fleet *schema.Fleet) *lab {
	t.Helper()
	p := netlab.NewPair(t, "dh")
	netlab.Must(t, p.Server.AddAddr(p.ServerIf, testServer.String()+"/24"))
	l := &lab{p: p, st: store.TestStore(t, fleet), dir: t.TempDir(), logs: &logbuf.Buffer{}}
	c := testConfig(t, mode, l.st)
	c.Interface = p.ServerIf
	c.Log = zerolog.New(l.logs).Level(zerolog.DebugLevel)
	var srv *Server
	netlab.Must(t, p.Server.Do(func() (err error) {
		srv, err = New(c)
		return err
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	l.srv = srv
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return 30 s after its context ended")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", l.logs.String())
		}
	})
	return l
}

// setMAC gives the client's interface mac.
func (l *lab) setMAC(t *testing.T, mac string) {
	t.Helper()
	netlab.Must(t, l.p.Client.SetMAC(l.p.ClientIf, mac))
}

// udhcpc runs busybox udhcpc once in the client namespace. Its hook
// script only writes the options of a lease to a file. ok is false when
// udhcpc got no lease (it exits non-zero after its retries).
func (l *lab) udhcpc(t *testing.T, mac string) (env map[string]string, ok bool) {
	t.Helper()
	l.setMAC(t, mac)
	out := filepath.Join(l.dir, "udhcpc-"+strings.ReplaceAll(mac, ":", "")+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	script := filepath.Join(l.dir, "udhcpc.script")
	writeScript(t, script, `#!/bin/sh
# gitmetal test hook: record the lease, configure nothing.
case "$1" in bound|renew) env > "$GITMETAL_OUT.tmp" && mv "$GITMETAL_OUT.tmp" "$GITMETAL_OUT" ;; esac
exit 0
`)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	// -q: quit after a lease, -n: quit without one after -t tries -T s
	// apart; -O: ask for the options udhcpc does not ask for by default.
	cmd := l.p.Client.Command(ctx, netlab.NeedTool(t, "udhcpc"), "-i", l.p.ClientIf, "-f", "-q", "-n",
		"-t", "3", "-T", "2", "-A", "1", "-s", script,
		"-O", "search", "-O", "ntpsrv", "-O", "staticroutes", "-O", "broadcast")
	cmd.Env = append(os.Environ(), "GITMETAL_OUT="+out)
	b, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("udhcpc did not finish in %s: %s", clientTimeout, b)
	}
	if err != nil {
		return nil, false
	}
	return readEnv(t, out), true
}

// TestUdhcpc: a known MAC gets its reservation and every option, an
// unknown MAC gets nothing (and one log line), and a commit that changes
// the address is served to the next request.
func TestUdhcpc(t *testing.T) {
	t.Parallel()
	netlab.NeedTool(t, "udhcpc")
	l := newLab(t, ModeReservation, testFleet())

	env, ok := l.udhcpc(t, macFull)
	if !ok {
		t.Fatalf("known mac %s: got no lease", macFull)
	}
	want := map[string]string{
		"ip":           "10.10.0.11",
		"subnet":       "255.255.255.0",
		"broadcast":    "10.10.0.255",
		"router":       "10.10.0.1",
		"dns":          "10.10.0.2 10.10.0.3",
		"domain":       "lab.example",
		"hostname":     "m-full",
		"lease":        "3600",
		"serverid":     "10.10.0.1",
		"ntpsrv":       "10.10.0.4",
		"search":       "lab.example example",
		"staticroutes": "10.20.0.0/16 10.10.0.254 0.0.0.0/0 10.10.0.1",
	}
	if diff := cmp.Diff(want, pick(env, want)); diff != "" {
		t.Errorf("udhcpc lease for %s (-want +got):\n%s", macFull, diff)
	}

	if env, ok := l.udhcpc(t, macUnknown); ok {
		t.Errorf("unknown mac %s: got a lease %v, want none", macUnknown, env)
	}
	if got := strings.Count(l.logs.String(), `"note":"unknown mac"`); got != 1 {
		t.Errorf("unknown mac log lines: got %d, want 1 (udhcpc sent 3 discovers)", got)
	}

	// A commit moves the machine to another address.
	f := testFleet()
	hw := *f.Hardware["m-full"]
	hw.Interfaces = append([]schema.Interface(nil), hw.Interfaces...)
	hw.Interfaces[0].IP = "10.10.0.111/24"
	f.Hardware["m-full"] = &hw
	if _, err := l.st.Apply("rev2", f); err != nil {
		t.Fatal(err)
	}
	env, ok = l.udhcpc(t, macFull)
	if !ok {
		t.Fatalf("after the commit: got no lease for %s", macFull)
	}
	if got := env["ip"]; got != "10.10.0.111" {
		t.Errorf("after the commit: got address %s, want 10.10.0.111", got)
	}
}

// dhclient runs ISC dhclient in the foreground in the client namespace
// until its hook records a lease from the server or it gives up. The hook
// only writes the options to a file; the lease file (leases, shared by
// runs that must remember a lease) and the pid file are in the test's
// directory.
func (l *lab) dhclient(t *testing.T, mac, name, leases string) (env map[string]string, ok bool) {
	t.Helper()
	l.setMAC(t, mac)
	out := filepath.Join(l.dir, "dhclient-"+name+".env")
	script := filepath.Join(l.dir, "dhclient-"+name+".script")
	writeScript(t, script, fmt.Sprintf(`#!/bin/sh
# gitmetal test hook: record the lease, configure nothing.
case "$reason" in
BOUND|REBOOT|RENEW) env > %[1]q.tmp && mv %[1]q.tmp %[1]q ;;
TIMEOUT|FAIL) : > %[1]q.none ;;  # no answer (TIMEOUT: it would fall back to a recorded lease)
esac
exit 0
`, out))
	conf := filepath.Join(l.dir, "dhclient.conf")
	writeFile(t, conf, `option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
request subnet-mask, broadcast-address, routers, domain-name-servers, domain-name,
	host-name, domain-search, ntp-servers, dhcp-lease-time, rfc3442-classless-static-routes;
timeout 12;
retry 1;
initial-interval 1;
`)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	// -d: stay in the foreground, so the process is ours to end; -1: one
	// attempt, exit 2 after the timeout without a lease.
	cmd := l.p.Client.Command(ctx, netlab.NeedTool(t, "dhclient"), "-4", "-d", "-1", "-v",
		"-cf", conf, "-sf", script, "-lf", filepath.Join(l.dir, leases+".leases"),
		"-pf", filepath.Join(l.dir, "dhclient.pid"), l.p.ClientIf)
	var log logbuf.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-exited:
			// It gave up (or was ended by ctx): no lease.
			if ctx.Err() != nil {
				t.Fatalf("dhclient did not finish in %s:\n%s", clientTimeout, log.String())
			}
			return nil, false
		case <-tick.C:
			if _, err := os.Stat(out + ".none"); err == nil {
				_ = cmd.Process.Kill()
				<-exited
				return nil, false
			}
			if _, err := os.Stat(out); err == nil {
				// Bound: end our dhclient, by its PID.
				_ = cmd.Process.Kill()
				<-exited
				env := readEnv(t, out)
				netlab.Must(t, os.Remove(out))
				return env, true
			}
		}
	}
}

// TestDhclient: as TestUdhcpc with ISC dhclient, and the address change
// reaches a client that remembers its old lease: it asks for the old
// address (INIT-REBOOT), gets a NAK, and starts over.
func TestDhclient(t *testing.T) {
	t.Parallel()
	netlab.NeedTool(t, "dhclient")
	l := newLab(t, ModeReservation, testFleet())

	env, ok := l.dhclient(t, macFull, "known", "m-full")
	if !ok {
		t.Fatalf("known mac %s: got no lease", macFull)
	}
	want := map[string]string{
		"new_ip_address":                      "10.10.0.11",
		"new_subnet_mask":                     "255.255.255.0",
		"new_broadcast_address":               "10.10.0.255",
		"new_routers":                         "10.10.0.1",
		"new_domain_name_servers":             "10.10.0.2 10.10.0.3",
		"new_domain_name":                     "lab.example",
		"new_domain_search":                   "lab.example. example.",
		"new_host_name":                       "m-full",
		"new_dhcp_lease_time":                 "3600",
		"new_ntp_servers":                     "10.10.0.4",
		"new_dhcp_server_identifier":          "10.10.0.1",
		"new_rfc3442_classless_static_routes": "16 10 20 10 10 0 254 0 10 10 0 1",
	}
	if diff := cmp.Diff(want, pick(env, want)); diff != "" {
		t.Errorf("dhclient lease for %s (-want +got):\n%s", macFull, diff)
	}

	f := testFleet()
	hw := *f.Hardware["m-full"]
	hw.Interfaces = append([]schema.Interface(nil), hw.Interfaces...)
	hw.Interfaces[0].IP = "10.10.0.111/24"
	f.Hardware["m-full"] = &hw
	if _, err := l.st.Apply("rev2", f); err != nil {
		t.Fatal(err)
	}
	env, ok = l.dhclient(t, macFull, "moved", "m-full")
	if !ok {
		t.Fatalf("after the commit: got no lease for %s", macFull)
	}
	if got := env["new_ip_address"]; got != "10.10.0.111" {
		t.Errorf("after the commit: got address %s, want 10.10.0.111", got)
	}
	if !strings.Contains(l.logs.String(), `"note":"nak"`) {
		t.Errorf("after the commit: want the old address NAKed first; server log has no nak")
	}

	if env, ok := l.dhclient(t, macUnknown, "unknown", "unknown"); ok {
		t.Errorf("unknown mac %s: got a lease %v, want none", macUnknown, env)
	}
}

// TestPerfdhcp runs perfdhcp, which always acts as a relay (it sends from
// its own address with giaddr set and expects the reply at giaddr:67),
// through full DORA exchanges for MACs the store knows.
func TestPerfdhcp(t *testing.T) {
	t.Parallel()
	perfdhcp := netlab.NeedTool(t, "perfdhcp")
	const machines, exchanges = 50, 300
	f := &schema.Fleet{Settings: schema.DefaultSettings(), Hardware: map[string]*schema.Hardware{}}
	var macs strings.Builder
	for i := range machines {
		mac := fmt.Sprintf("02:10:00:00:00:%02x", i)
		name := fmt.Sprintf("perf%d", i)
		iface := testIface(mac, fmt.Sprintf("10.10.1.%d/16", 10+i), name)
		f.Hardware[name] = &schema.Hardware{Name: name, Interfaces: []schema.Interface{iface}}
		fmt.Fprintln(&macs, mac)
	}
	l := newLab(t, ModeReservation, f)
	netlab.Must(t, l.p.Client.AddAddr(l.p.ClientIf, "10.10.0.2/24"))
	macFile := filepath.Join(l.dir, "macs")
	writeFile(t, macFile, macs.String())

	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	out, err := l.p.Client.Command(ctx, perfdhcp, "-4", "-l", l.p.ClientIf, "-r", "100", "-n", strconv.Itoa(exchanges),
		"-M", macFile, "-d", "5", "-W", "2000000", testServer.String()).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("perfdhcp did not finish in %s:\n%s", clientTimeout, out)
	}
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 3) {
		t.Fatalf("perfdhcp: %v\n%s", err, out)
	}
	st := perfdhcpStats(string(out))
	if len(st) != 2 {
		t.Fatalf("perfdhcp output: got %d exchange blocks, want DISCOVER-OFFER and REQUEST-ACK:\n%s", len(st), out)
	}
	for _, s := range st {
		t.Logf("perfdhcp %s: sent %d, received %d, drops %d", s.name, s.sent, s.received, s.drops)
		// A loaded CI machine may lose a packet now and then; an
		// exchange that completes proves the relay path, most of them
		// completing proves it works.
		if s.sent == 0 || s.received < s.sent*9/10 {
			t.Errorf("perfdhcp %s: got %d of %d answered, want at least 90%%:\n%s", s.name, s.received, s.sent, out)
		}
	}
	if n := strings.Count(l.logs.String(), `"giaddr":"10.10.0.2"`); n == 0 {
		t.Errorf("server log: no request with giaddr 10.10.0.2; perfdhcp should have relayed")
	}
}

type exchangeStats struct {
	name                  string
	sent, received, drops int
}

// perfdhcpStats reads the per-exchange counters of perfdhcp's report.
func perfdhcpStats(out string) []exchangeStats {
	var st []exchangeStats
	num := func(line, key string) int {
		m := regexp.MustCompile(regexp.QuoteMeta(key) + `:\s*(\d+)`).FindStringSubmatch(line)
		if m == nil {
			return -1
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := regexp.MustCompile(`Statistics for: (\S+)`).FindStringSubmatch(line); m != nil {
			st = append(st, exchangeStats{name: m[1]})
			continue
		}
		if len(st) == 0 {
			continue
		}
		cur := &st[len(st)-1]
		if n := num(line, "sent packets"); n >= 0 {
			cur.sent = n
		}
		if n := num(line, "received packets"); n >= 0 {
			cur.received = n
		}
		if n := num(line, "drops"); n >= 0 && strings.Contains(line, "drops:") {
			cur.drops = n
		}
	}
	return st
}

func writeScript(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readEnv reads the KEY=VALUE lines a hook wrote.
func readEnv(t *testing.T, p string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = strings.Trim(v, `'`)
		}
	}
	return env
}

// pick returns the entries of env whose keys are in want.
func pick(env, want map[string]string) map[string]string {
	got := map[string]string{}
	for k := range want {
		if v, ok := env[k]; ok {
			got[k] = v
		}
	}
	return got
}

package netboot

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/gitmetal/gitmetal/boot/dhcp"
	"github.com/gitmetal/gitmetal/boot/ipxe"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/runner"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/netlab"
	"github.com/gitmetal/gitmetal/test/qemu"
)

// Lab-wide names and bounds.
const (
	// bridge and tap live in the lab's own namespace, so fixed names
	// cannot clash with anything.
	bridge = "br0"
	tap    = "tap0"
	// setupTimeout bounds each step of building the lab (a command, the
	// loader, the runner deriving its first run): generous for a loaded
	// two-core machine.
	setupTimeout = 2 * time.Minute
	// shutdownTimeout bounds the servers' shutdown at cleanup.
	shutdownTimeout = 30 * time.Second
	// revision is the revision the fleet is applied at.
	revision = "netboot-test-1"
)

// vmCase is one netboot test: a machine and how it boots.
type vmCase struct {
	name   string // hardware and host name
	mac    string
	subnet int // the lab is 10.77.<subnet>.0/24
	uefi   bool
}

func (c vmCase) serverIP() netip.Addr  { return netip.AddrFrom4([4]byte{10, 77, byte(c.subnet), 1}) }
func (c vmCase) machineIP() netip.Addr { return netip.AddrFrom4([4]byte{10, 77, byte(c.subnet), 10}) }

// lab is one test's network namespace with gitmetal's boot services in it.
type lab struct {
	c       vmCase
	ns      *netlab.Netns
	results string // kept when the test fails
	base    string // HTTPBase: http://10.77.x.1:port
	fleet   *schema.Fleet
	run     *protocol.Run // the pending run the runner derived

	runner *runner.Runner
	ra     *netlab.RAResponder
	logs   *logSink // DHCP, HTTP, iPXE, runner
	tftp   *logSink // the TFTP helper process's log
	access *netlab.AccessLog

	installerFiles map[string]int64 // installer file name → size
}

// requireLab skips the test, or fails it when CI=true, unless what a
// netboot VM needs is here.
func requireLab(t *testing.T, uefi bool) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM under TCG (-short)")
	}
	netlab.Require(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing(t, "QEMU's tap needs /dev/net/tun: "+err.Error())
	}
	qemu.NeedQEMU(t, uefi)
	if !uefi {
		// QEMU's default option ROM of virtio-net-pci (efi-virtio.rom, iPXE
		// for BIOS and UEFI) comes from Debian's ipxe-qemu.
		if _, err := os.Stat("/usr/lib/ipxe/qemu/efi-virtio.rom"); err != nil {
			missing(t, "the virtio NIC's iPXE ROM is missing (apt-get install -y ipxe-qemu): "+err.Error())
		}
	}
}

// missing skips the test with why, or fails it when CI=true.
func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing (CI=true): %s", why)
	}
	t.Skipf("prerequisite missing: %s", why)
}

// ipxeDir finds the iPXE binaries: `make ipxe`'s .cache/ipxe/bin at the
// top of the module (what gitmetal serve uses by default), else Debian's
// /usr/lib/ipxe.
func ipxeDir(t *testing.T) string {
	t.Helper()
	var dirs []string
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dirs = append(dirs, filepath.Join(d, ".cache", "ipxe", "bin"))
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	dirs = append(dirs, "/usr/lib/ipxe")
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, dhcp.DefaultEFIBinary)); err == nil && st.Mode().IsRegular() {
			return d
		}
	}
	missing(t, fmt.Sprintf("no %s in %s (make ipxe, or apt-get install -y ipxe)", dhcp.DefaultEFIBinary, strings.Join(dirs, " or ")))
	return ""
}

// resultsDir makes the directory every log of the test goes to; it is
// kept when the test fails, or when GITMETAL_TEST_KEEP=1.
func resultsDir(t *testing.T) string {
	t.Helper()
	return qemu.ResultsDir(t, "GITMETAL_TEST_KEEP", "serial console, QEMU output and server logs")
}

// writeFleet writes the repository: settings naming the installer files,
// the machine, a template and a workflow that binds them.
func writeFleet(t *testing.T, dir string, c vmCase) {
	t.Helper()
	files := map[string]string{
		schema.SettingsFile: `settings: {
	leaseTime: 3600
	installer: {
		kernel: "vmlinuz"
		initrd: "initramfs.cpio.gz"
		// The test kernel: a panic ends the VM at once (QEMU runs with
		// -no-reboot) instead of waiting for the watchdog.
		args: "panic=-1"
	}
}
`,
		"hardware/" + c.name + ".cue": fmt.Sprintf(`hardware: {
	name: %q
	interfaces: [{
		mac:      %q
		ip:       "%s/24"
		hostname: %q
		arch:     "x86_64"
		uefi:     %t
		netboot: allowPXE: true
		// No gateway: nothing in the lab is routed anywhere.
	}]
}
`, c.name, c.mac, c.machineIP(), c.name, c.uefi),
		"templates/netboot-test.cue": `template: {
	name:    "netboot-test"
	timeout: "10m"
	actions: [{
		name:    "hello"
		uses:    "exec"
		args: ["/bin/true"]
		timeout: "1m"
	}]
}
`,
		"workflows/" + c.name + "-install.cue": fmt.Sprintf(`workflow: {
	name:     "%s-install"
	hardware: %q
	template: "netboot-test"
	policy:   "onChange"
}
`, c.name, c.name),
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// loadFleet loads the repository at dir with schema's loader.
func loadFleet(t *testing.T, dir string) *schema.Fleet {
	t.Helper()
	l, err := schema.NewLoader(schema.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	f, err := l.LoadDir(ctx, dir)
	if err != nil {
		t.Fatalf("load the test fleet: %v", err)
	}
	return f
}

// copyFile copies src to dst.
func copyFile(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, in)
	return n, errors.Join(err, out.Close())
}

// newLab builds the namespace, writes and applies the fleet, lays out the
// installer directory with img, and starts the runner, the boot HTTP
// server, DHCP and the router advertisement responder with their sockets
// inside the namespace, and the TFTP server in a helper process there (see
// startTFTP). Everything stops at cleanup.
func newLab(t *testing.T, c vmCase, img *qemu.Image) *lab {
	t.Helper()
	l := &lab{c: c, results: resultsDir(t)}
	ipxeBin := ipxeDir(t)

	// Logs: every server's, one JSON line each, to a file in the results
	// directory and to memory for the assertions.
	logs, err := newLogSink(filepath.Join(l.results, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	l.logs = logs
	t.Cleanup(func() {
		if err := logs.Close(); err != nil {
			t.Errorf("server log: %v", err)
		}
	})
	log := zerolog.New(logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()

	// The network: one namespace, a bridge with the server's address and
	// a tap for QEMU on it.
	l.ns = netlab.NewNetns(t, "nb")
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	netlab.Must(t, l.ns.AddBridge(bridge))
	netlab.Must(t, netlab.EnableLinkLocalIPv6(ctx, l.ns, bridge))
	netlab.Must(t, l.ns.AddAddr(bridge, c.serverIP().String()+"/24"))
	netlab.Must(t, l.ns.AddTap(tap))
	netlab.Must(t, l.ns.SetMaster(tap, bridge))

	// The desired state: CUE files, loaded and applied like a commit.
	repo := t.TempDir()
	writeFleet(t, repo, c)
	l.fleet = loadFleet(t, repo)
	st, err := store.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(revision, l.fleet); err != nil {
		t.Fatalf("apply the test fleet: %v", err)
	}

	// The installer: the test kernel and initramfs under the names the
	// fleet's settings.installer gives.
	inst := l.fleet.Settings.Installer
	if inst == nil || inst.Kernel == "" || inst.Initrd == "" {
		t.Fatalf("the test fleet names no installer: %+v", inst)
	}
	installerDir := t.TempDir()
	l.installerFiles = map[string]int64{}
	for name, src := range map[string]string{inst.Kernel: img.Kernel, inst.Initrd: img.Initrd} {
		n, err := copyFile(src, filepath.Join(installerDir, name))
		if err != nil {
			t.Fatal(err)
		}
		l.installerFiles[name] = n
	}

	// The runner derives the pending run and mints the installer token.
	l.runner, err = runner.New(runner.Config{Store: st, StateDir: t.TempDir(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-registered first: each Close below runs after the
	// services' cleanup at the end of newLab has stopped them; the second
	// Close of a socket a server already closed is harmless.
	t.Cleanup(func() {
		if err := l.runner.Close(); err != nil {
			t.Errorf("runner close: %v", err)
		}
	})

	// Sockets, all inside the namespace.
	httpLn, err := l.ns.Listen("tcp4", netip.AddrPortFrom(c.serverIP(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { httpLn.Close() })
	l.base = "http://" + httpLn.Addr().String()
	var dhcpSrv *dhcp.Server
	netlab.Must(t, l.ns.Do(func() (err error) {
		dhcpSrv, err = dhcp.New(dhcp.Config{
			Mode:          dhcp.ModeReservation,
			Interface:     bridge,
			AdvertiseAddr: c.serverIP(),
			HTTPBase:      l.base,
			Backend:       st,
			Log:           log,
		})
		return err
	}))
	t.Cleanup(func() { dhcpSrv.Close() })
	l.ra, err = netlab.NewRAResponder(l.ns, bridge)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.ra.Close() })

	// The services, as cmd/gitmetal serve wires them.
	ih, err := ipxe.New(ipxe.Config{
		Store:        st,
		Installs:     l.runner,
		HTTPBase:     l.base,
		IPXEDir:      ipxeBin,
		InstallerDir: installerDir,
		Log:          log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ih.Close(); err != nil {
			t.Errorf("ipxe close: %v", err)
		}
	})
	mux := http.NewServeMux()
	ih.Register(mux)
	l.runner.Register(mux)
	l.access = netlab.NewAccessLog(log.With().Str("component", "http").Logger())
	httpSrv := &http.Server{Handler: l.access.Wrap(mux), ReadHeaderTimeout: 30 * time.Second}
	l.tftp = startTFTP(t, l.ns, ipxeBin, l.results)

	runCtx, stop := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return l.runner.Run(gctx) })
	g.Go(func() error {
		if err := httpSrv.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("boot http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		return httpSrv.Shutdown(sctx)
	})
	g.Go(func() error { return dhcpSrv.Run(gctx) })
	g.Go(func() error { return l.ra.Run(gctx) })
	t.Cleanup(func() {
		stop()
		done := make(chan error, 1)
		go func() { done <- g.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("lab services: %v", err)
			}
		case <-time.After(2 * shutdownTimeout):
			t.Errorf("lab services still running %s after the end of the test", 2*shutdownTimeout)
		}
		log.Info().Str("component", "test").Int64("routerAdvertisements", l.ra.Answered()).Msg("lab stopped")
	})

	l.run = l.waitPendingRun(t)
	return l
}

// waitPendingRun waits until the runner has derived the workflow's run.
func (l *lab) waitPendingRun(t *testing.T) *protocol.Run {
	t.Helper()
	deadline := time.Now().Add(setupTimeout)
	for {
		runs, err := l.runner.Runs(10, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range runs {
			if runs[i].Hardware == l.c.name && runs[i].State == protocol.RunPending {
				return &runs[i]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the runner derived no pending run for %s in %s; runs: %+v", l.c.name, setupTimeout, runs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scriptURL is where the machine's iPXE script is served.
func (l *lab) scriptURL() string { return l.base + "/ipxe/" + l.c.mac + "/boot.ipxe" }

// logSink keeps the servers' log lines in memory and writes them to a
// file. zerolog writes each event with one Write call.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
	f   *os.File
}

func newLogSink(path string) (*logSink, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &logSink{f: f}, nil
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	return s.f.Write(p)
}

func (s *logSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}

// entries returns the log lines, decoded, whose fields include want.
func (s *logSink) entries(want map[string]string) []map[string]any {
	s.mu.Lock()
	data := append([]byte(nil), s.buf.Bytes()...)
	s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		ok := true
		for k, v := range want {
			if fmt.Sprint(e[k]) != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, e)
		}
	}
	return out
}

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/test/e2e/diskimage"
	"github.com/gitmetal/gitmetal/test/netlab"
	"github.com/gitmetal/gitmetal/test/qemu"
)

// Lab-wide names and bounds.
const (
	// bridge and tap live in the lab's own namespace: fixed names cannot
	// clash with anything.
	bridge = "br0"
	tap    = "tap0"
	// apiPort is the daemon's HTTP port (API, agent protocol, iPXE
	// scripts, installer) on the server's address.
	apiPort = 8080
	// setupTimeout bounds one step of setting up or of waiting for the
	// daemon (a build, a revision applied, a run derived): generous for
	// a loaded two-core machine.
	setupTimeout = 3 * time.Minute
	// bootTimeout bounds one boot of the VM, power-on to power-off.
	bootTimeout = qemu.DefaultTimeout
)

// vmCase is one firmware's story: its machine and its lab subnet.
type vmCase struct {
	name   string // hardware name and host name
	mac    string
	subnet byte // the lab is 10.78.<subnet>.0/24
	fw     qemu.Firmware
	// debian: the machine installs the Debian OS, whose cloud-init asks
	// gitmetal's EC2 metadata service, instead of the busybox OS.
	debian bool
}

func (c vmCase) serverIP() netip.Addr  { return netip.AddrFrom4([4]byte{10, 78, c.subnet, 1}) }
func (c vmCase) machineIP() netip.Addr { return netip.AddrFrom4([4]byte{10, 78, c.subnet, 10}) }
func (c vmCase) uefi() bool            { return c.fw == qemu.UEFI }

// metadataURL is gitmetal's metadata service as the machine reaches it.
func (c vmCase) metadataURL() string {
	return fmt.Sprintf("http://%s:%d", c.serverIP(), diskimage.MetadataPort)
}

// actions are the names of the actions of the case's workflow.
func (c vmCase) actions() []string {
	if c.debian {
		return []string{"stream-image", "configure-cloud-init", "write-identity", "reboot"}
	}
	return []string{"stream-image", "write-identity", "reboot"}
}

// requireE2E fails the test, naming everything that is missing, unless
// the machine can run the story. It skips only when the test was not asked
// for (GITMETAL_E2E unset) or under -short.
func requireE2E(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots VMs for many minutes (-short)")
	}
	if os.Getenv("GITMETAL_E2E") != "1" {
		t.Skip("the end-to-end test boots VMs for up to 15 minutes: run it with `make e2e` (GITMETAL_E2E=1)")
	}
	requireLab(t)
	if m := diskimage.MissingDebian(); len(m) > 0 {
		t.Fatalf("the end-to-end test's Debian machine cannot run here; missing:\n  %s", strings.Join(m, "\n  "))
	}
}

// requireLab fails the test, naming everything that is missing, unless
// the machine has what the lab, the VM and the OS images need.
func requireLab(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces, the tap device)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing = append(missing, "/dev/net/tun (QEMU's tap): "+err.Error())
	}
	for _, tool := range []struct{ name, pkg string }{
		{"ip", "iproute2"}, {"git", "git"}, {"go", "golang"},
		{qemu.QEMUBinary, "qemu-system-x86"},
		{"apt-get", "apt"}, {"dpkg", "dpkg"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install -y %s)", tool.name, tool.pkg))
		}
	}
	for _, f := range []struct{ path, pkg string }{
		{qemu.OVMFCode, "ovmf"}, {qemu.OVMFVars, "ovmf"},
		// The virtio NIC's default option ROM (iPXE), for the BIOS case.
		{"/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu"},
	} {
		if _, err := os.Stat(f.path); err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install -y %s)", f.path, f.pkg))
		}
	}
	missing = append(missing, diskimage.Missing()...)
	if len(missing) > 0 {
		t.Fatalf("the end-to-end test cannot run here; missing:\n  %s", strings.Join(missing, "\n  "))
	}
}

// moduleRoot is the directory of go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", wd)
		}
	}
}

// ipxeDir finds the iPXE binaries: `make ipxe`'s .cache/ipxe/bin, else
// Debian's /usr/lib/ipxe.
func ipxeDir(t *testing.T, root string) string {
	t.Helper()
	dirs := []string{filepath.Join(root, ".cache", "ipxe", "bin"), "/usr/lib/ipxe"}
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, "ipxe.efi")); err == nil && st.Mode().IsRegular() {
			return d
		}
	}
	t.Fatalf("no ipxe.efi in %s (make ipxe, or apt-get install -y ipxe)", strings.Join(dirs, " or "))
	return ""
}

// resultsDir makes the directory every log of the test goes to; it is
// kept when the test fails, or when GITMETAL_E2E_KEEP=1.
func resultsDir(t *testing.T) string {
	t.Helper()
	return qemu.ResultsDir(t, "GITMETAL_E2E_KEEP", "serial consoles (boot-*/serial.log), daemon.log, state/ (the journal: state/runner.db), repo-log.txt")
}

// lab is one case's network namespace: a bridge with the server's
// address, a tap for QEMU on it, and the router advertisement responder.
type lab struct {
	c       vmCase
	ns      *netlab.Netns
	results string
	ra      *netlab.RAResponder
	// client reaches addresses inside the namespace: its connections are
	// made by sockets opened there.
	client *http.Client
}

// newLab builds the namespace; everything in it goes at cleanup.
func newLab(t *testing.T, c vmCase, results string) *lab {
	t.Helper()
	l := &lab{c: c, results: results}
	l.ns = netlab.NewNetns(t, "e2e")
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	netlab.Must(t, l.ns.AddBridge(bridge))
	netlab.Must(t, netlab.EnableLinkLocalIPv6(ctx, l.ns, bridge))
	netlab.Must(t, l.ns.AddAddr(bridge, c.serverIP().String()+"/24"))
	netlab.Must(t, l.ns.AddTap(tap))
	netlab.Must(t, l.ns.SetMaster(tap, bridge))

	ra, err := netlab.NewRAResponder(l.ns, bridge)
	if err != nil {
		t.Fatal(err)
	}
	l.ra = ra
	raCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ra.Run(raCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("router advertisements: %v", err)
		}
	})

	l.client = &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			DialContext:       l.dial,
			DisableKeepAlives: true,
		},
	}
	return l
}

// dial opens a TCP connection from inside the namespace.
func (l *lab) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := l.ns.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// imageServer serves the OS images over HTTP inside the namespace, as a
// site's image mirror would, and records who fetched what.
type imageServer struct {
	base   string // http://10.78.x.1:port
	srv    *http.Server
	access *netlab.AccessLog
}

// newImageServer serves files (URL path → file) on the server's address.
func newImageServer(t *testing.T, l *lab, files map[string]string) *imageServer {
	t.Helper()
	ln, err := l.ns.Listen("tcp4", netip.AddrPortFrom(l.c.serverIP(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	s := &imageServer{base: "http://" + ln.Addr().String(), access: netlab.NewAccessLog(zerolog.Nop())}
	mux := http.NewServeMux()
	for p, file := range files {
		mux.HandleFunc("GET "+p, func(w http.ResponseWriter, r *http.Request) {
			http.ServeFile(w, r, file) // Range support for image2disk's resume
		})
	}
	s.srv = &http.Server{Handler: s.access.Wrap(mux), ReadHeaderTimeout: 30 * time.Second}
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("image server: %v", err)
		}
	})
	return s
}

// Package lab boots gitmetal's installer in QEMU against gitmetal's own
// services, for the installer's QEMU test and its benchmark: one network
// namespace holding the VM's tap device, in which gitmetal's DHCP server
// (boot/dhcp, reservation mode), the runner (runner, over real HTTP) and a
// small file server for the image run in this process.
//
//	namespace inst-xxxxxx:  tap (10.123.0.1/24) ── QEMU's virtio NIC (10.123.0.10)
//	                        DHCP :67 on the tap, HTTP :8080 (runner, /image.raw, /peer-hello)
//
// Nothing is routed: the namespace has no default route and no other
// interface, so the VM reaches the lab's addresses only.
//
// What it must not do: touch the host's network namespace, or run without
// a timeout.
package lab

import (
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
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/boot/dhcp"
	"github.com/gitmetal/gitmetal/boot/ipxe"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/runner"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/netlab"
	"github.com/gitmetal/gitmetal/test/qemu"
)

// The lab's addresses and the VM's identity.
const (
	ServerIP  = "10.123.0.1"
	VMIP      = "10.123.0.10"
	MAC       = "52:54:00:7a:00:01"
	Machine   = "installer-vm"
	Workflow  = "install"
	ImagePath = "/image.raw"
	// PeerPath is what the peer image (a busybox init) fetches once it has
	// an address, so its arrival is timed by the server as the agent's
	// hello is.
	PeerPath = "/peer-hello"
)

// Config configures a lab.
type Config struct {
	// Dir holds the runner's state. Required.
	Dir string
	// Image, when set, is served at ImagePath and the machine's workflow
	// writes it to /dev/vda with image2disk; otherwise the workflow runs
	// one exec action that succeeds.
	Image []byte
	// InstallerDir, when set, holds vmlinuz and initramfs.cpio.gz, and
	// the lab serves the boot path too: gitmetal's iPXE script at
	// /ipxe/<mac>/boot.ipxe (boot/ipxe), which loads them from
	// /installer/ with the runner's token, for a VM that netboots.
	InstallerDir string
	// Log receives the services' logs.
	Log zerolog.Logger
}

// Arrival is a request the lab timed: an agent's hello or the peer's fetch.
type Arrival struct {
	At    time.Time
	Hello protocol.Hello // for a hello
	Peer  bool
}

// Lab is a running lab.
type Lab struct {
	NS       *netlab.Netns
	Tap      string
	Runner   *runner.Runner
	Server   string // the runner's URL as the VM reaches it
	arrivals chan Arrival
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	srv      *http.Server
	dhcp     *dhcp.Server
	closers  []func()
}

// fleet is the lab's desired state: the VM, and a workflow for it.
func fleet(withImage bool) *schema.Fleet {
	hw := &schema.Hardware{Name: Machine, Interfaces: []schema.Interface{{
		MAC: MAC, IP: VMIP + "/24", Gateway: ServerIP, Nameservers: []string{ServerIP},
		SearchDomains: []string{"lab.example"}, Hostname: Machine, LeaseTime: 600, Arch: "x86_64",
		Netboot: schema.Netboot{AllowPXE: true},
	}}}
	action := schema.Action{Step: schema.Step{Name: "hello", Uses: "exec", Args: []string{"/init", "version"}}}
	if withImage {
		action = schema.Action{Step: schema.Step{Name: "write-image", Uses: "image2disk", Env: map[string]string{
			"IMG_URL": "http://" + ServerIP + ":8080" + ImagePath, "DEST_DISK": "/dev/vda",
		}}}
	}
	return &schema.Fleet{
		Settings: &schema.Settings{LeaseTime: 600, Installer: &schema.Installer{
			Kernel: "vmlinuz", Initrd: "initramfs.cpio.gz",
		}},
		Hardware:  map[string]*schema.Hardware{Machine: hw},
		Templates: map[string]*schema.Template{"install": {Name: "install", Actions: []schema.Action{action}}},
		Workflows: map[string]*schema.Workflow{Workflow: {Name: Workflow, Hardware: Machine, Template: "install", Policy: schema.PolicyOnChange}},
	}
}

// Start builds the lab. Close removes it.
func Start(ctx context.Context, cfg Config) (l *Lab, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("lab: Dir is required")
	}
	l = &Lab{arrivals: make(chan Arrival, 16), Server: "http://" + ServerIP + ":8080"}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	ns, err := netlab.CreateNetns(netlab.Name("inst"))
	if err != nil {
		return nil, err
	}
	l.NS = ns
	l.closers = append(l.closers, func() { ns.Delete() })
	if err := ns.DisableIPv6(); err != nil {
		return nil, err
	}
	l.Tap = netlab.Name("tap")
	if err := ns.AddTap(l.Tap); err != nil {
		return nil, err
	}
	if err := ns.AddAddr(l.Tap, ServerIP+"/24"); err != nil {
		return nil, err
	}

	st, err := store.New()
	if err != nil {
		return nil, err
	}
	if _, err := st.Apply("lab", fleet(cfg.Image != nil)); err != nil {
		return nil, err
	}
	r, err := runner.New(runner.Config{Store: st, StateDir: filepath.Join(cfg.Dir, "runner"), Log: cfg.Log, RetryBackoff: time.Second})
	if err != nil {
		return nil, err
	}
	l.Runner = r
	l.closers = append(l.closers, func() { r.Close() })

	err = ns.Do(func() error {
		var err error
		l.dhcp, err = dhcp.New(dhcp.Config{
			Mode: dhcp.ModeReservation, Interface: l.Tap, AdvertiseAddr: netip.MustParseAddr(ServerIP),
			HTTPBase: l.Server, Backend: st, Log: cfg.Log,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: dhcp: %w", err)
	}
	ln, err := ns.Listen("tcp", ServerIP+":8080")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	r.Register(mux)
	if cfg.InstallerDir != "" {
		h, err := ipxe.New(ipxe.Config{Store: st, Installs: r, HTTPBase: l.Server, InstallerDir: cfg.InstallerDir, Log: cfg.Log})
		if err != nil {
			return nil, fmt.Errorf("lab: ipxe: %w", err)
		}
		l.closers = append(l.closers, func() { h.Close() })
		h.Register(mux)
	}
	mux.HandleFunc("GET "+ImagePath, func(w http.ResponseWriter, req *http.Request) {
		http.ServeContent(w, req, "image.raw", time.Time{}, bytes.NewReader(cfg.Image))
	})
	mux.HandleFunc("GET "+PeerPath, func(w http.ResponseWriter, req *http.Request) {
		l.arrive(Arrival{At: time.Now(), Peer: true})
		io.WriteString(w, "ok\n")
	})
	l.srv = &http.Server{Handler: l.timeHello(mux), ReadHeaderTimeout: 10 * time.Second}

	ctx, l.cancel = context.WithCancel(ctx)
	l.wg.Add(3)
	go func() { defer l.wg.Done(); l.srv.Serve(ln) }()
	go func() { defer l.wg.Done(); l.dhcp.Run(ctx) }()
	go func() { defer l.wg.Done(); r.Run(ctx) }()
	return l, nil
}

// timeHello records when each hello arrives, and what it says, before the
// runner handles it.
func (l *Lab) timeHello(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodPost && req.URL.Path == protocol.PathHello {
			at := time.Now()
			body, err := io.ReadAll(io.LimitReader(req.Body, protocol.MaxBody))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			var h protocol.Hello
			if json.Unmarshal(body, &h) == nil {
				l.arrive(Arrival{At: at, Hello: h})
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		next.ServeHTTP(w, req)
	})
}

func (l *Lab) arrive(a Arrival) {
	select {
	case l.arrivals <- a:
	default: // nobody is counting any more
	}
}

// Next returns the next hello or peer fetch.
func (l *Lab) Next(ctx context.Context) (Arrival, error) {
	select {
	case a := <-l.arrivals:
		return a, nil
	case <-ctx.Done():
		return Arrival{}, ctx.Err()
	}
}

// Token waits until the runner has a run for the VM and returns the
// installer's token, as the boot service would put it on the command line.
func (l *Lab) Token(ctx context.Context) (string, error) {
	hw := fleet(false).Hardware[Machine]
	for {
		tok, ok, err := l.Runner.Install(ctx, hw, MAC)
		if err != nil {
			return "", err
		}
		if ok {
			return tok, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("lab: no run for %s: %w", Machine, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Cmdline is the installer's kernel command line as boot/ipxe writes it.
func (l *Lab) Cmdline(token string, extra ...string) string {
	return strings.Join(append([]string{
		"gitmetal.server=" + l.Server, "gitmetal.token=" + token, "gitmetal.mac=" + MAC,
		"console=ttyS0,115200", "console=tty0",
	}, append(extra, "initrd="+"initramfs.cpio.gz")...), " ")
}

// SerialDisk is the serial of the VM's second disk (vdb), which the
// installer links as /dev/disk/by-id/virtio-<SerialDisk>.
const SerialDisk = "gitmetal-lab"

// QEMU returns the VM's configuration: direct kernel boot, a virtio NIC on
// the lab's tap, the virtio disk (vda), a small second one with a serial
// (vdb), and a virtio RNG (as libvirt gives VMs by default; without it,
// and without RDRAND under TCG, the kernel takes a second or two to gather
// entropy). dir must exist.
func (l *Lab) QEMU(kernel, initrd, cmdline, dir, disk string) qemu.Config {
	second := filepath.Join(dir, "serial-disk.raw")
	Disk(second, 1<<20)
	return qemu.Config{
		Kernel: kernel, Initrd: initrd, Append: cmdline,
		NetNS: l.NS.Name, Tap: l.Tap, MAC: MAC, NIC: "virtio-net-pci",
		Disk: disk, MemoryMB: 1024, Dir: dir, Timeout: 10 * time.Minute,
		ExtraArgs: []string{
			"-drive", "if=none,id=d1,format=raw,file=" + second,
			"-device", "virtio-blk-pci,drive=d1,serial=" + SerialDisk,
			"-device", "virtio-rng-pci",
		},
	}
}

// Netboot returns the configuration of a VM that boots from the network:
// SeaBIOS and QEMU's iPXE ROM on the virtio NIC, which gets the lab's DHCP
// reply, then gitmetal's iPXE script, then the installer over HTTP.
func (l *Lab) Netboot(dir, disk string) qemu.Config {
	c := l.QEMU("", "", "", dir, disk)
	c.Firmware = qemu.BIOS
	return c
}

// WaitRun returns the VM's run once it is in one of the states.
func (l *Lab) WaitRun(ctx context.Context, states ...protocol.RunState) (*protocol.Run, error) {
	for {
		runs, err := l.Runner.Runs(10, func(r *protocol.Run) bool { return r.Hardware == Machine })
		if err != nil {
			return nil, err
		}
		for i := range runs {
			for _, s := range states {
				if runs[i].State == s {
					return l.Runner.RunByID(runs[i].ID)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lab: waiting for a run in state %v: %w", states, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Close stops the services and removes the namespace.
func (l *Lab) Close() {
	if l.cancel != nil {
		l.cancel()
	}
	if l.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		l.srv.Shutdown(ctx)
		cancel()
	}
	if l.dhcp != nil {
		l.dhcp.Close()
	}
	l.wg.Wait()
	for i := len(l.closers) - 1; i >= 0; i-- {
		l.closers[i]()
	}
}

// Disk makes a sparse raw disk of size bytes.
func Disk(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

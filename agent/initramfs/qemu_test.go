package initramfs_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/agent/initramfs"
	"github.com/gitmetal/gitmetal/agent/initramfs/internal/lab"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/test/netlab"
	"github.com/gitmetal/gitmetal/test/qemu"
)

// buildInstaller builds the real installer: /init is ./cmd/gitmetal.
func buildInstaller(t *testing.T) *initramfs.Result {
	t.Helper()
	needDebian(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	init := filepath.Join(t.TempDir(), "init")
	if err := initramfs.BuildInit(ctx, moduleRoot(t), initramfs.DefaultInitPackage, init); err != nil {
		t.Fatal(err)
	}
	res, err := initramfs.Build(ctx, initramfs.Config{OutDir: t.TempDir(), Init: init, CacheDir: qemu.DefaultCacheDir()})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// keepSerial copies the serial log somewhere that outlives the test when
// it fails ($GITMETAL_TEST_RESULTS, or the temporary directory), and says
// where.
func keepSerial(t *testing.T, serial string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir := os.Getenv("GITMETAL_TEST_RESULTS")
		if dir == "" {
			dir = filepath.Join(os.TempDir(), "gitmetal-test-results")
		}
		b, err := os.ReadFile(serial)
		if err != nil {
			t.Logf("serial log: %v", err)
			return
		}
		os.MkdirAll(dir, 0o755)
		dst := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-serial.log")
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Logf("serial log: %v", err)
			return
		}
		t.Logf("whole serial log: %s", dst)
	})
}

// TestInstallerInQEMU boots the installer under TCG on a virtio NIC in a
// network namespace with gitmetal's DHCP server and runner — directly
// (-kernel/-initrd), and through the real netboot path (SeaBIOS, QEMU's
// iPXE ROM, gitmetal's DHCP reply and iPXE script, the installer over
// HTTP). Each time PID 1 mounts, loads the modules, gets the lease for the
// MAC on the command line and starts the agent, which says hello with its
// inventory and runs a workflow that writes an image to the VM's virtio
// disk, whose sha256 the test checks on the host.
func TestInstallerInQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the installer and boots it twice under TCG (two or three minutes)")
	}
	netlab.Require(t)
	qemu.NeedQEMU(t, false)
	res := buildInstaller(t)
	if got := res.TotalBytes(); got > initramfs.DefaultMaxBytes {
		t.Errorf("installer is %d bytes, over the %d budget", got, initramfs.DefaultMaxBytes)
	}
	// An image of random bytes exactly the disk's size: the disk's digest
	// must become the image's.
	image := make([]byte, diskSize)
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range image {
		image[i] = byte(rng.Uint32())
	}
	// One VM at a time: two cores.
	t.Run("direct", func(t *testing.T) { installInQEMU(t, res, image, false) })
	t.Run("netboot", func(t *testing.T) { installInQEMU(t, res, image, true) })
	t.Run("misconfigured", func(t *testing.T) { misconfigured(t, res) })
}

// misconfigured boots the installer with command lines it cannot work
// with: it must say why on the console, keep retrying, and stay up (PID 1
// exiting would panic the kernel).
func misconfigured(t *testing.T, res *initramfs.Result) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, lab.Config{Dir: t.TempDir(), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		name, cmdline string
		lines         []string
	}{
		{"no token", "gitmetal.server=" + l.Server + " gitmetal.mac=" + lab.MAC + " console=ttyS0,115200 console=tty0", []string{
			`ERR the installer cannot reach the runner: fix the boot script's kernel command line .*error="no gitmetal.token= on the kernel command line"`,
		}},
		{"a MAC no NIC has", strings.Replace(l.Cmdline("tok"), "gitmetal.mac="+lab.MAC, "gitmetal.mac=52:54:00:00:00:99", 1), []string{
			`ERR network is not up yet error="no interface has MAC 52:54:00:00:00:99 \(interfaces: eth0=` + lab.MAC + `\).* attempt=1 `,
			`ERR network is not up yet .* attempt=3 `,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			keepSerial(t, filepath.Join(dir, "serial.log"))
			vm := qemu.Run(t, l.QEMU(res.Kernel, res.Initramfs, tc.cmdline, dir, ""))
			if lines, err := vm.Milestones(ctx, tc.lines...); err != nil {
				t.Fatalf("milestones %q: %v", lines, err)
			}
			select {
			case <-vm.Done():
				t.Errorf("the VM stopped:\n%s", vm.Tail(20))
			case <-time.After(3 * time.Second):
			}
			if strings.Contains(vm.Serial(), "Kernel panic") {
				t.Errorf("kernel panic:\n%s", vm.Tail(20))
			}
		})
	}
}

const diskSize = 16 << 20

func installInQEMU(t *testing.T, res *initramfs.Result, image []byte, netboot bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := lab.Config{Dir: t.TempDir(), Image: image, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)}
	if netboot {
		cfg.InstallerDir = filepath.Dir(res.Kernel)
	}
	l, err := lab.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	if err := lab.Disk(disk, diskSize); err != nil {
		t.Fatal(err)
	}
	keepSerial(t, filepath.Join(dir, "serial.log"))
	var vm *qemu.VM
	var milestones []string
	if netboot {
		vm = qemu.Run(t, l.Netboot(dir, disk))
		milestones = []string{`iPXE`, `gitmetal: booting the installer for ` + lab.Machine}
	} else {
		token, err := l.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		vm = qemu.Run(t, l.QEMU(res.Kernel, res.Initramfs, l.Cmdline(token), dir, disk))
	}
	lines, err := vm.Milestones(ctx, append(milestones,
		`INF gitmetal installer starting .*kernel=`+regexp.QuoteMeta(res.ABI),
		`INF file systems mounted .*mounted=\["/proc","/sys","/dev",.*"/run","/tmp"\]`,
		`INF kernel modules loaded .*failed=0 loaded=\d+`,
		`INF dhcp lease .*if=eth0 .*ip=`+regexp.QuoteMeta(lab.VMIP)+`/24 .*mac=`+lab.MAC,
		`INF starting the agent`,
		`runner has a run for this machine`,
	)...)
	if err != nil {
		t.Fatalf("milestones %q: %v", lines, err)
	}

	a, err := l.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := a.Hello
	if !slices.Contains(h.MACs, lab.MAC) {
		t.Errorf("hello MACs %v lack %s", h.MACs, lab.MAC)
	}
	inv := h.Inventory
	if inv.CPU.Threads < 1 || inv.CPU.Model == "" {
		t.Errorf("CPU: got %+v, want a model and at least one thread", inv.CPU)
	}
	if inv.MemoryBytes < 800<<20 || inv.MemoryBytes > 1<<30 {
		t.Errorf("memory: got %d bytes, want most of the VM's 1 GiB", inv.MemoryBytes)
	}
	if i := slices.IndexFunc(inv.Disks, func(d protocol.Disk) bool { return d.Name == "vda" }); i < 0 {
		t.Errorf("disks %+v lack vda", inv.Disks)
	} else if got := inv.Disks[i].SizeBytes; got != diskSize {
		t.Errorf("vda: got %d bytes, want %d", got, diskSize)
	}
	// The second disk has a serial, so PID 1 links it as udev would.
	wantLink := "/dev/disk/by-id/virtio-" + lab.SerialDisk
	if i := slices.IndexFunc(inv.Disks, func(d protocol.Disk) bool { return d.Name == "vdb" }); i < 0 {
		t.Errorf("disks %+v lack vdb", inv.Disks)
	} else if d := inv.Disks[i]; !slices.Contains(d.ByID, wantLink) || d.Serial != lab.SerialDisk {
		t.Errorf("vdb: got links %v and serial %q, want %s and %q", d.ByID, d.Serial, wantLink, lab.SerialDisk)
	}
	if i := slices.IndexFunc(inv.NICs, func(n protocol.NIC) bool { return n.MAC == lab.MAC }); i < 0 {
		t.Errorf("NICs %+v lack %s", inv.NICs, lab.MAC)
	} else if n := inv.NICs[i]; n.Driver != "virtio_net" {
		t.Errorf("NIC %s: got driver %q, want virtio_net", n.Name, n.Driver)
	}
	if inv.Hostname != lab.Machine {
		t.Errorf("hostname: got %q, want %q (from the lease)", inv.Hostname, lab.Machine)
	}
	// The runner journaled it.
	mux := http.NewServeMux()
	l.Runner.Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/machines/"+lab.Machine+"/inventory", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"vda"`) {
		t.Errorf("runner's inventory: got %d %s, want the disks", rec.Code, rec.Body.String())
	}

	run, err := l.WaitRun(ctx, protocol.RunSuccess, protocol.RunFailed, protocol.RunTimeout, protocol.RunCancelled)
	if err != nil {
		t.Fatal(err)
	}
	if run.State != protocol.RunSuccess {
		t.Fatalf("run %s ended %s: %s", run.ID, run.State, run.Message)
	}
	vm.Stop()
	got, err := fileSHA256(disk)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(image)
	if got != hex.EncodeToString(want[:]) {
		t.Errorf("disk sha256 %s, want the image's %x", got, want)
	}
}

func fileSHA256(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}

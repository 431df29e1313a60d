package ipxe

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/gittest"
	"github.com/gitmetal/gitmetal/test/qemu"
)

// TestInstallerScriptBootsInQEMU runs the installer script in real iPXE:
// QEMU's iPXE ROM (SeaBIOS) and the same ROM's EFI build (OVMF) get their
// address and the script URL from QEMU's built-in DHCP server (user-mode
// network with restrict=on: the guest reaches nothing but the one
// forwarded port, which a busybox nc joins to this test's handler on
// 127.0.0.1). The script must load the kernel and the initrd from
// /installer/ and boot them with the token on the command line, which the
// test kernel's init prints.
//
// The DHCP → TFTP → iPXE path through gitmetal's own DHCP and TFTP servers
// in network namespaces belongs to the boot/dhcp tests.
func TestInstallerScriptBootsInQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots two VMs under TCG (about a minute)")
	}
	qemu.NeedQEMU(t, true)
	bb := gittest.NeedTool(t, "busybox")
	img := qemu.TestImage(t, qemu.ImageConfig{})
	dir := t.TempDir()
	for src, dst := range map[string]string{img.Kernel: "vmlinuz", img.Initrd: "initramfs.cpio.gz"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const mac = "52:54:00:12:34:56"
	f := &schema.Fleet{
		Settings: &schema.Settings{LeaseTime: 3600, Installer: &schema.Installer{
			Kernel: "vmlinuz", Initrd: "initramfs.cpio.gz", Args: "panic=-1",
		}},
		Hardware:  map[string]*schema.Hardware{"qemu-vm": machine("qemu-vm", mac, "10.0.2.15/24", schema.Netboot{AllowPXE: true})},
		Templates: map[string]*schema.Template{},
		Workflows: map[string]*schema.Workflow{},
	}
	// 10.0.2.100 exists only inside QEMU's user-mode network.
	const guestBase = "http://10.0.2.100"
	h, err := New(Config{
		Store: store.TestStore(t, f), Installs: &fakeRunner{tokens: map[string]string{mac: "qemu-tok-1"}},
		HTTPBase: guestBase, InstallerDir: dir, Log: zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mux := http.NewServeMux()
	h.Register(mux)
	// failKernel > 0 fails that many kernel downloads, to run the retry loop.
	var failKernel atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/installer/vmlinuz" && failKernel.Add(-1) >= 0 {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))

	for _, fw := range []qemu.Firmware{qemu.BIOS, qemu.UEFI} {
		// One VM at a time: two cores.
		t.Run(string(fw), func(t *testing.T) {
			// On BIOS the first kernel download fails: the script must
			// say so, wait and try again.
			retry := fw == qemu.BIOS
			if retry {
				failKernel.Store(1)
			} else {
				failKernel.Store(0)
			}
			netdev := fmt.Sprintf("user,id=n0,restrict=on,bootfile=%s/ipxe/%s/boot.ipxe,guestfwd=tcp:10.0.2.100:80-cmd:%s nc 127.0.0.1 %s",
				guestBase, mac, bb, port)
			vm := qemu.Run(t, qemu.Config{Firmware: fw, ExtraArgs: []string{
				"-netdev", netdev,
				"-device", "virtio-net-pci,netdev=n0,mac=" + mac + ",bootindex=1",
				"-boot", "order=n",
			}})
			ctx, cancel := context.WithTimeout(context.Background(), qemu.DefaultTimeout)
			defer cancel()
			milestones := []string{`iPXE`, `gitmetal: booting the installer for qemu-vm \(` + mac + `\)`}
			if retry {
				milestones = append(milestones, regexp.QuoteMeta(`gitmetal: could not load the installer kernel (attempt 1 of 5), retrying in 5 s`))
			}
			lines, err := vm.Milestones(ctx, append(milestones,
				`GITMETAL-TEST init-start`,
				regexp.QuoteMeta(`GITMETAL-TEST cmdline gitmetal.server=`+guestBase+` gitmetal.token=qemu-tok-1 gitmetal.mac=`+mac+` `),
				`GITMETAL-TEST done`,
			)...)
			if err != nil {
				t.Fatalf("milestones %q: %v", lines, err)
			}
			if n := strings.Count(vm.Serial(), "could not load"); (n == 1) != retry {
				t.Errorf("got %d retry lines, want %d:\n%s", n, map[bool]int{true: 1}[retry], vm.Tail(30))
			}
		})
	}
}

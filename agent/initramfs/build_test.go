package initramfs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/agent/initramfs"
	"github.com/gitmetal/gitmetal/agent/pid1"
	"github.com/gitmetal/gitmetal/test/gittest"
	"github.com/gitmetal/gitmetal/test/qemu"
)

// moduleRoot is the repository's root, where go build runs.
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("no go.mod in %s: %v", dir, err)
	}
	return dir
}

// buildProgram compiles a main package given as source into a static
// binary. The package lives only in a go build -overlay, at a path inside
// the module, so it can import the module's packages without a file in
// the tree.
func buildProgram(t testing.TB, name, src string) string {
	t.Helper()
	goTool := gittest.NeedTool(t, "go")
	root := moduleRoot(t)
	tmp := t.TempDir()
	file := filepath.Join(tmp, "main.go")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {
		filepath.Join(root, "agent/initramfs/zz_"+name, "main.go"): file,
	}})
	ov := filepath.Join(tmp, "overlay.json")
	if err := os.WriteFile(ov, overlay, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(tmp, name)
	cmd := exec.Command(goTool, "build", "-overlay", ov, "-trimpath", "-ldflags=-s -w", "-o", out, "./agent/initramfs/zz_"+name)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

const pid1Program = `package main

import (
	"os"

	"github.com/gitmetal/gitmetal/agent/pid1"
)

func main() {
	if os.Getpid() == 1 {
		pid1.Main(pid1.Config{})
	}
}
`

func TestCheckInit(t *testing.T) {
	t.Parallel()
	good := buildProgram(t, "withpid1", pid1Program)
	if err := initramfs.CheckInit(good); err != nil {
		t.Errorf("a static binary that calls pid1.Main: %v", err)
	}
	bad := buildProgram(t, "withoutpid1", "package main\n\nfunc main() {}\n")
	if err := initramfs.CheckInit(bad); err == nil || !strings.Contains(err.Error(), "pid1.Main") {
		t.Errorf("a binary without pid1.Main: got %v, want an error that names pid1.Main", err)
	}
	if err := initramfs.CheckInit("/bin/sh"); err == nil {
		t.Error("/bin/sh (dynamic): got no error")
	}
}

// needDebian skips (fails with CI=true) without apt and dpkg.
func needDebian(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg"} {
		gittest.NeedTool(t, tool)
	}
}

// TestBuildReproducible builds the installer twice from the pinned Debian
// kernel and checks that the bytes are the same, and what is inside.
func TestBuildReproducible(t *testing.T) {
	t.Parallel()
	needDebian(t)
	bb := gittest.NeedTool(t, "busybox")
	init := buildProgram(t, "reproinit", pid1Program)
	fw := t.TempDir()
	if err := os.MkdirAll(filepath.Join(fw, "acme"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fw, "acme", "nic.bin"), []byte("firmware"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var results []*initramfs.Result
	for range 2 {
		res, err := initramfs.Build(ctx, initramfs.Config{
			OutDir: t.TempDir(), Init: init, CacheDir: qemu.DefaultCacheDir(),
			Modules: []string{"sfc"}, Firmware: []string{fw, "firmware-linux-free"},
		})
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, res)
	}
	a, b := results[0], results[1]
	if a.InitramfsSHA256 != b.InitramfsSHA256 || a.KernelSHA256 != b.KernelSHA256 {
		t.Errorf("two builds differ: initramfs %s and %s, kernel %s and %s", a.InitramfsSHA256, b.InitramfsSHA256, a.KernelSHA256, b.KernelSHA256)
	}
	if a.ABI != initramfs.DefaultKernelABI {
		t.Errorf("got kernel %s, want the pinned %s", a.ABI, initramfs.DefaultKernelABI)
	}

	gz, err := os.ReadFile(a.Initramfs)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", bb+" zcat | "+bb+" cpio -i -d")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(gz)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unpack: %v\n%s", err, out)
	}
	if a.FirmwareFiles < 2 {
		t.Errorf("got %d firmware files, want the directory's and firmware-linux-free's", a.FirmwareFiles)
	}
	for _, p := range []string{pid1.InitPath, "/dev/console", "/lib/firmware/acme/nic.bin", "/lib/firmware/carl9170-1.fw", "/etc/gitmetal/installer.txt", "/proc", "/sys", "/run", "/tmp"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	f, err := os.Open(filepath.Join(dir, pid1.ModuleOrderFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	order, err := pid1.ReadModuleOrder(f)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range order {
		for _, d := range e.Depends {
			if !seen[d] {
				t.Errorf("%s needs %s, which is not loaded before it", e.Name, d)
			}
		}
		seen[e.Name] = true
		if _, err := os.Stat(filepath.Join(dir, pid1.ModulesDir, e.Name+".ko")); err != nil {
			t.Errorf("module file: %v", err)
		}
	}
	// Each kind of driver, the added module, and crc32c, which ext4 and
	// xfs name only as a soft dependency by alias.
	for _, m := range []string{"virtio_net", "virtio_blk", "e1000e", "ice", "mlx5_core", "nvme", "ahci", "sd_mod", "ext4", "xfs", "vfat", "sfc", "crc32c_generic", "libcrc32c"} {
		if !seen[m] {
			t.Errorf("module %s is not in the order", m)
		}
	}
	if len(order) != len(a.Modules) {
		t.Errorf("got %d modules in the order file, want %d", len(order), len(a.Modules))
	}
	if !slices.ContainsFunc(order, func(e pid1.OrderEntry) bool {
		return e.Name == "virtio_net" && slices.Contains(e.Depends, "net_failover")
	}) {
		t.Error("virtio_net does not list net_failover as a dependency")
	}
}

// TestBuildErrors: bad input is refused with a clear error.
func TestBuildErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if _, err := initramfs.Build(ctx, initramfs.Config{}); err == nil {
		t.Error("empty config: got no error")
	}
	if _, err := initramfs.Build(ctx, initramfs.Config{OutDir: t.TempDir(), Init: "/bin/sh"}); err == nil || !strings.Contains(err.Error(), "static") {
		t.Errorf("dynamic init: got %v, want an error about a static executable", err)
	}
	needDebian(t)
	init := buildProgram(t, "errinit", pid1Program)
	_, err := initramfs.Build(ctx, initramfs.Config{OutDir: t.TempDir(), Init: init, CacheDir: qemu.DefaultCacheDir(), Modules: []string{"no_such_module"}})
	if err == nil || !strings.Contains(err.Error(), "no_such_module") {
		t.Errorf("unknown module: got %v, want an error naming it", err)
	}
}

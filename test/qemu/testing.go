package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// need skips the test, or fails it when CI=true, with why.
func need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// NeedQEMU checks for what Run needs: QEMU, and OVMF when uefi is true
// (apt-get install -y qemu-system-x86 ipxe-qemu ovmf).
func NeedQEMU(t testing.TB, uefi bool) {
	t.Helper()
	_, err := exec.LookPath(QEMUBinary)
	need(t, err == nil, "qemu-system-x86_64 not found (apt-get install -y qemu-system-x86 ipxe-qemu)")
	if uefi {
		_, err := os.Stat(OVMFCode)
		need(t, err == nil, "OVMF not found (apt-get install -y ovmf)")
	}
}

// TestImage builds (or reuses) the test kernel and initramfs. It needs
// apt-get, dpkg and Debian's package lists; it skips without them, or fails
// when CI=true.
func TestImage(t testing.TB, cfg ImageConfig) *Image {
	t.Helper()
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg"} {
		_, err := exec.LookPath(tool)
		need(t, err == nil, tool+" not found: the test image comes from Debian packages")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	img, err := BuildImage(ctx, cfg)
	if err != nil {
		t.Fatalf("test image: %v", err)
	}
	return img
}

// Run starts a VM for the test and stops it (by PID) when the test ends,
// logging the end of the serial console if the test failed.
func Run(t testing.TB, cfg Config) *VM {
	t.Helper()
	NeedQEMU(t, cfg.Firmware == UEFI)
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	vm, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Stop()
		if t.Failed() {
			t.Logf("serial console (%s), last lines:\n%s", vm.SerialLog, vm.Tail(40))
			if b, err := os.ReadFile(vm.QEMULog); err == nil && len(b) > 0 {
				t.Logf("qemu output:\n%s", b)
			}
		}
	})
	return vm
}

// ResultsDir makes the directory a VM test writes its logs to (serial
// consoles, QEMU's output, the servers' logs), under
// $GITMETAL_TEST_RESULTS or the temporary directory's gitmetal-results.
// It is removed when the test passes, unless the environment variable
// keepEnv is 1, and kept, with its path and what (a list of what is in it)
// in the test log, when it fails. Register it first, so it is cleaned up
// last.
func ResultsDir(t testing.TB, keepEnv, what string) string {
	t.Helper()
	base := os.Getenv("GITMETAL_TEST_RESULTS")
	if base == "" {
		base = filepath.Join(os.TempDir(), "gitmetal-results")
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(base, strings.ReplaceAll(t.Name(), "/", "_")+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv(keepEnv) == "1" {
			t.Logf("results kept in %s: %s", dir, what)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

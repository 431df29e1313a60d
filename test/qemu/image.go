package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gitmetal/gitmetal/agent/initramfs"
)

// DefaultCacheDir is where downloaded packages and built images are kept
// between test runs: $GITMETAL_TEST_CACHE, or gitmetal/qemu under the
// user's cache directory (~/.cache), or under the temporary directory.
func DefaultCacheDir() string {
	if d := os.Getenv("GITMETAL_TEST_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "gitmetal", "qemu")
	}
	return filepath.Join(os.TempDir(), "gitmetal-qemu-cache")
}

// KernelPackage is a Debian kernel package unpacked (never installed) in
// the cache (see agent/initramfs, which fetches it).
type KernelPackage = initramfs.KernelPackage

// KernelABI asks apt which kernel linux-image-amd64 depends on.
func KernelABI(ctx context.Context) (string, error) {
	return initramfs.LatestKernelABI(ctx)
}

// Kernel returns Debian's linux-image-<abi> unpacked under cacheDir,
// downloading it with apt-get download and unpacking it with dpkg -x the
// first time. An empty abi means the one linux-image-amd64 depends on.
func Kernel(ctx context.Context, cacheDir, abi string) (*KernelPackage, error) {
	return initramfs.Kernel(ctx, cacheDir, abi)
}

// Busybox returns a statically linked busybox: /bin/busybox when it is
// static (Debian's busybox-static package), or the one from the
// busybox-static package unpacked under cacheDir.
func Busybox(ctx context.Context, cacheDir string) (string, error) {
	return initramfs.Busybox(ctx, cacheDir)
}

// ModuleOrder returns the modules to load for the named modules, each
// after the modules it depends on, as paths relative to modulesDir (a
// kernel package's lib/modules/<abi>); see initramfs.ModuleOrder. The
// test init loads them with busybox insmod, which needs plain .ko files,
// so a compressed module is an error.
func ModuleOrder(modulesDir string, names ...string) ([]string, error) {
	mods, err := initramfs.ModuleOrder(modulesDir, names...)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(mods))
	for _, m := range mods {
		if !strings.HasSuffix(m.Path, ".ko") {
			return nil, fmt.Errorf("module %s is compressed; busybox insmod needs plain .ko files", m.Path)
		}
		out = append(out, m.Path)
	}
	return out, nil
}

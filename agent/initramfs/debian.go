package initramfs

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// DefaultKernelABI is the Debian kernel the installer ships: the package
// linux-image-<DefaultKernelABI>. It is pinned here, and only here, so that
// the same source tree builds the same installer; `make installer
// INSTALLER_KERNEL_ABI=latest` (Config.KernelABI "latest") takes what
// linux-image-amd64 depends on today. Debian drops an ABI from its
// archive some time after a newer one is published: Kernel then says which
// ABI apt offers instead, and this constant is the one line to change.
const DefaultKernelABI = "6.1.0-56-amd64"

// Latest is the KernelABI that asks apt for the current kernel.
const Latest = "latest"

// DefaultCacheDir is where downloaded packages and unpacked trees are
// kept between builds: $GITMETAL_CACHE, or gitmetal/debian under the
// user's cache directory, or under the temporary directory.
func DefaultCacheDir() string {
	if d := os.Getenv("GITMETAL_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "gitmetal", "debian")
	}
	return filepath.Join(os.TempDir(), "gitmetal-debian-cache")
}

// KernelPackage is a Debian kernel package unpacked (never installed) in
// the cache.
type KernelPackage struct {
	// ABI is the kernel's version string, such as 6.1.0-56-amd64.
	ABI string
	// Vmlinuz is the kernel image.
	Vmlinuz string
	// ModulesDir is lib/modules/<ABI> of the package.
	ModulesDir string
}

var abiRE = regexp.MustCompile(`Depends: linux-image-([0-9][^\s]*)`)

// LatestKernelABI asks apt which kernel linux-image-amd64 depends on.
func LatestKernelABI(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends linux-image-amd64 (run apt-get update first): %w", err)
	}
	m := abiRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("apt-cache depends linux-image-amd64 names no kernel:\n%s", out)
	}
	return string(m[1]), nil
}

// Kernel returns Debian's linux-image-<abi> unpacked under cacheDir,
// downloading it with apt-get download and unpacking it with dpkg -x the
// first time. abi "" or Latest means the one linux-image-amd64 depends on.
func Kernel(ctx context.Context, cacheDir, abi string) (*KernelPackage, error) {
	if abi == "" || abi == Latest {
		var err error
		if abi, err = LatestKernelABI(ctx); err != nil {
			return nil, err
		}
	}
	dir, err := Unpack(ctx, cacheDir, "linux-image-"+abi)
	if err != nil {
		if latest, lerr := LatestKernelABI(ctx); lerr == nil && latest != abi {
			return nil, fmt.Errorf("%w\n(apt offers linux-image-%s now: update initramfs.DefaultKernelABI, or set INSTALLER_KERNEL_ABI=%s)", err, latest, latest)
		}
		return nil, err
	}
	k := &KernelPackage{
		ABI:        abi,
		Vmlinuz:    filepath.Join(dir, "boot", "vmlinuz-"+abi),
		ModulesDir: filepath.Join(dir, "lib", "modules", abi),
	}
	if _, err := os.Stat(k.Vmlinuz); err != nil {
		return nil, fmt.Errorf("kernel package linux-image-%s: %w", abi, err)
	}
	return k, nil
}

// Busybox returns a statically linked busybox: /bin/busybox when it is
// static (Debian's busybox-static package is installed), or the one from
// the busybox-static package unpacked under cacheDir.
func Busybox(ctx context.Context, cacheDir string) (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if IsStatic(p) {
			return p, nil
		}
	}
	dir, err := Unpack(ctx, cacheDir, "busybox-static")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "bin", "busybox")
	if !IsStatic(p) {
		return "", fmt.Errorf("%s is not a static executable", p)
	}
	return p, nil
}

// IsStatic reports whether p is an ELF executable without an interpreter,
// one that runs in an initramfs without a C library.
func IsStatic(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN
}

// Unpack downloads the Debian package pkg into cacheDir/debs and unpacks it
// into cacheDir/pkg/<pkg>, unless that is already there, and returns that
// directory. Nothing is installed. Concurrent callers (test binaries of
// other packages) each unpack into their own temporary directory and
// rename it into place.
func Unpack(ctx context.Context, cacheDir, pkg string) (string, error) {
	if pkg == "" || strings.ContainsAny(pkg, "/ \t\n") || strings.HasPrefix(pkg, "-") {
		return "", fmt.Errorf("package name %q: want a Debian package name", pkg)
	}
	dir := filepath.Join(cacheDir, "pkg", pkg)
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir, nil
	}
	debs := filepath.Join(cacheDir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", err
	}
	deb, err := download(ctx, debs, pkg)
	if err != nil {
		return "", err
	}
	return unpackDeb(ctx, deb, dir)
}

// UnpackDeb unpacks the .deb file at path into cacheDir/deb/<name of the
// file>, unless that is already there, and returns that directory.
func UnpackDeb(ctx context.Context, cacheDir, path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	// The size and time are in the name, so a rebuilt .deb of the same
	// name is unpacked again.
	name := fmt.Sprintf("%s-%d-%d", filepath.Base(abs), st.Size(), st.ModTime().UnixNano())
	return unpackDeb(ctx, abs, filepath.Join(cacheDir, "deb", name))
}

func unpackDeb(ctx context.Context, deb, dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".unpack-")
	if err != nil {
		return "", err
	}
	if out, err := exec.CommandContext(ctx, "dpkg", "-x", deb, tmp).CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("dpkg -x %s: %w\n%s", deb, err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(filepath.Join(dir, ".complete")); serr == nil {
			return dir, nil // another process won the race
		}
		return "", fmt.Errorf("unpack %s: %w", deb, err)
	}
	return dir, nil
}

// download runs apt-get download pkg in dir unless a .deb of it is there,
// and returns the .deb's path.
func download(ctx context.Context, dir, pkg string) (string, error) {
	find := func() string {
		m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
		if len(m) == 0 {
			return ""
		}
		return m[len(m)-1]
	}
	if p := find(); p != "" {
		return p, nil
	}
	// Download into a private directory, then move the file, so that a
	// concurrent caller never sees half a .deb.
	tmp, err := os.MkdirTemp(dir, ".download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
	cmd.Dir = tmp
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("apt-get download %s (run apt-get update first): %w\n%s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	m, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(m) != 1 {
		return "", fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(m))
	}
	dst := filepath.Join(dir, filepath.Base(m[0]))
	if err := os.Rename(m[0], dst); err != nil {
		return "", err
	}
	return dst, nil
}

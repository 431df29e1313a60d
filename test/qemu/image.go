package qemu

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
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

// KernelABI asks apt which kernel linux-image-amd64 depends on.
func KernelABI(ctx context.Context) (string, error) {
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
// first time. An empty abi means the one linux-image-amd64 depends on.
func Kernel(ctx context.Context, cacheDir, abi string) (*KernelPackage, error) {
	if abi == "" {
		var err error
		if abi, err = KernelABI(ctx); err != nil {
			return nil, err
		}
	}
	dir, err := unpacked(ctx, cacheDir, "linux-image-"+abi)
	if err != nil {
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
// static (Debian's busybox-static package), or the one from the
// busybox-static package unpacked under cacheDir.
func Busybox(ctx context.Context, cacheDir string) (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if static(p) {
			return p, nil
		}
	}
	dir, err := unpacked(ctx, cacheDir, "busybox-static")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "bin", "busybox")
	if !static(p) {
		return "", fmt.Errorf("%s is not a static executable", p)
	}
	return p, nil
}

// static reports whether p is an ELF executable without an interpreter.
func static(p string) bool {
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

// unpacked downloads the Debian package pkg into cacheDir/debs and unpacks
// it into cacheDir/pkg/<pkg>, unless that is already there. Concurrent
// callers (test binaries of other packages) each unpack into their own
// temporary directory and rename it into place.
func unpacked(ctx context.Context, cacheDir, pkg string) (string, error) {
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
		return "", fmt.Errorf("unpack %s: %w", pkg, err)
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
		return "", fmt.Errorf("apt-get download %s (run apt-get update first): %w\n%s", pkg, err, stderr.String())
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

// ModuleOrder returns the modules to load for the named modules, each
// after the modules it depends on, as paths relative to modulesDir (a
// kernel package's lib/modules/<abi>). The dependencies come from each
// module's own .modinfo "depends=" field: a package that was unpacked, not
// installed, has no modules.dep, as depmod never ran. Modules built into
// the kernel (modules.builtin) are left out; a name that is neither is an
// error.
func ModuleOrder(modulesDir string, names ...string) ([]string, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(modulesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			rel, err := filepath.Rel(modulesDir, p)
			if err != nil {
				return err
			}
			paths[moduleName(rel)] = rel
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modulesDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[moduleName(l)] = true
		}
	}
	deps := func(name string) ([]string, error) {
		return modinfoDepends(filepath.Join(modulesDir, paths[name]))
	}
	return moduleOrder(names, paths, builtin, deps)
}

// moduleOrder orders names and their dependencies, dependencies first.
func moduleOrder(names []string, paths map[string]string, builtin map[string]bool, deps func(string) ([]string, error)) ([]string, error) {
	var order []string
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(n string) error
	visit = func(n string) error {
		n = strings.ReplaceAll(n, "-", "_")
		switch state[n] {
		case 1:
			return fmt.Errorf("module dependency loop at %s", n)
		case 2:
			return nil
		}
		p, ok := paths[n]
		if !ok {
			if builtin[n] {
				state[n] = 2
				return nil
			}
			return fmt.Errorf("module %s is neither in the package nor built in", n)
		}
		if !strings.HasSuffix(p, ".ko") {
			return fmt.Errorf("module %s is compressed; busybox insmod needs plain .ko files", p)
		}
		state[n] = 1
		ds, err := deps(n)
		if err != nil {
			return fmt.Errorf("module %s: %w", n, err)
		}
		for _, d := range ds {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, p)
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// modinfoDepends reads the "depends=" field of a module's .modinfo section.
func modinfoDepends(ko string) ([]string, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s has no .modinfo section", ko)
	}
	b, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var out []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					out = append(out, d)
				}
			}
			return out, nil
		}
	}
	return nil, nil
}

// moduleName is a module's name from its path: kernel/drivers/net/virtio_net.ko
// → virtio_net (dashes become underscores, as the kernel does).
func moduleName(p string) string {
	b := filepath.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

package initramfs

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// DefaultModules are the kernel modules every installer carries, with
// their dependencies: the NICs, storage controllers and file systems of
// common servers and virtual machines. Modules built into the kernel are
// skipped. Config.Modules (INSTALLER_MODULES) adds to them.
var DefaultModules = []string{
	// A virtual machine's hardware RNG, first: with it the kernel's
	// random numbers are ready at once instead of after gathering timer
	// jitter (PID 1 waits for them before DHCP and the agent).
	"virtio_pci", "virtio_rng",
	// Virtual machines.
	"virtio_net", "virtio_blk", "virtio_scsi", "vmxnet3", "vmw_pvscsi", "ena", "hv_netvsc", "hv_storvsc",
	// Intel NICs: 1G, 2.5G, 10G, 40G, 100G and their virtual functions.
	"e1000", "e1000e", "igb", "igc", "ixgbe", "ixgbevf", "i40e", "iavf", "ice",
	// Mellanox/NVIDIA, Broadcom, Realtek, QLogic/Marvell, Emulex, Aquantia.
	"mlx4_en", "mlx5_core", "bnxt_en", "bnx2", "bnx2x", "tg3", "r8169", "qede", "be2net", "atlantic",
	// Storage: NVMe, SATA/AHCI, SCSI disks, RAID HBAs, USB sticks.
	"nvme", "ahci", "ata_piix", "sd_mod", "sr_mod", "megaraid_sas", "mpt3sas", "smartpqi", "hpsa",
	"xhci_pci", "ehci_pci", "usb_storage", "uas",
	// File systems an image or archive lands on, and the code pages vfat
	// (an EFI system partition) mounts with.
	"ext4", "xfs", "btrfs", "vfat", "nls_cp437", "nls_iso8859_1", "nls_utf8", "efivarfs",
	// Loop devices for image files, device mapper for LVM layouts.
	"loop", "dm_mod",
}

// Module is a kernel module to load.
type Module struct {
	// Name is the module's name, with underscores ("virtio_net").
	Name string
	// Path is the module's file relative to the modules directory; it
	// may be compressed (.ko.xz, .ko.zst, .ko.gz).
	Path string
	// Depends are the modules it needs that are not built in; they come
	// before it in ModuleOrder's result.
	Depends []string
}

// ModuleOrder returns the modules to load for the named modules, each
// after the modules it depends on. Dependencies come from each module's
// own .modinfo: "depends=" (hard) and "softdep=" ("pre:" modules before,
// "post:" ones after; a soft dependency that cannot be found is left out,
// as modprobe does). A package that was unpacked, not installed, has no
// modules.dep (depmod never ran), hence .modinfo. A soft dependency may
// name an alias ("crc32c"): every module that declares the alias is
// loaded. Modules built into the kernel (modules.builtin) are left out; a
// name that is neither is an error.
func ModuleOrder(modulesDir string, names ...string) ([]Module, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(modulesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && isModuleFile(d.Name()) {
			rel, err := filepath.Rel(modulesDir, p)
			if err != nil {
				return err
			}
			paths[ModuleName(rel)] = rel
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no kernel modules under %s", modulesDir)
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modulesDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[ModuleName(l)] = true
		}
	}
	r := &resolver{
		paths:   paths,
		builtin: builtin,
		info: func(name string) (modinfo, error) {
			return readModinfo(filepath.Join(modulesDir, paths[name]))
		},
	}
	r.aliases = func() (map[string][]string, error) { return scanAliases(modulesDir, paths, builtin) }
	return r.order(names)
}

// modinfo is what ModuleOrder reads from a module's .modinfo section.
type modinfo struct {
	depends, pre, post, aliases []string
}

// resolver orders modules; its lookups are functions so tests can feed it.
type resolver struct {
	paths   map[string]string // name → path
	builtin map[string]bool
	info    func(name string) (modinfo, error)
	// aliases maps each alias to the modules that declare it; built-in
	// modules map to "". Called at most once, when a soft dependency is
	// not a module name.
	aliases  func() (map[string][]string, error)
	aliasMap map[string][]string
}

func (r *resolver) order(names []string) ([]Module, error) {
	var order []Module
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(n string, soft bool) error
	visit = func(n string, soft bool) error {
		n = strings.ReplaceAll(n, "-", "_")
		switch state[n] {
		case 1:
			if soft {
				return nil // a soft loop: the first visit places it
			}
			return fmt.Errorf("module dependency loop at %s", n)
		case 2:
			return nil
		}
		p, ok := r.paths[n]
		if !ok {
			if r.builtin[n] {
				state[n] = 2
				return nil
			}
			if soft {
				mods, err := r.alias(n)
				if err != nil {
					return err
				}
				state[n] = 2
				for _, m := range mods {
					if err := visit(m, true); err != nil {
						return err
					}
				}
				return nil
			}
			return fmt.Errorf("module %s is neither in the kernel package nor built into the kernel", n)
		}
		state[n] = 1
		mi, err := r.info(n)
		if err != nil {
			return fmt.Errorf("module %s: %w", n, err)
		}
		for _, d := range mi.pre {
			if err := visit(d, true); err != nil {
				return err
			}
		}
		var deps []string
		for _, d := range mi.depends {
			if err := visit(d, false); err != nil {
				return fmt.Errorf("%w (needed by %s)", err, n)
			}
			if d = strings.ReplaceAll(d, "-", "_"); !r.builtin[d] {
				deps = append(deps, d)
			}
		}
		state[n] = 2
		order = append(order, Module{Name: n, Path: p, Depends: deps})
		for _, d := range mi.post {
			if err := visit(d, true); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range names {
		if err := visit(n, false); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// alias returns the modules that declare alias a (none for an alias of a
// built-in module or an unknown one).
func (r *resolver) alias(a string) ([]string, error) {
	if r.aliasMap == nil {
		if r.aliases == nil {
			return nil, nil
		}
		m, err := r.aliases()
		if err != nil {
			return nil, err
		}
		r.aliasMap = m
	}
	if mods, ok := r.aliasMap[a]; ok {
		var out []string
		for _, m := range mods {
			if m != "" {
				out = append(out, m)
			}
		}
		return out, nil
	}
	// Wildcard aliases ("crypto-crc32c*" style) match as shell patterns.
	var out []string
	for pat, mods := range r.aliasMap {
		if ok, _ := path.Match(pat, a); ok && strings.ContainsAny(pat, "*?[") {
			for _, m := range mods {
				if m != "" {
					out = append(out, m)
				}
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// scanAliases reads the aliases of every module of the package, and of the
// built-in ones from modules.builtin.modinfo.
func scanAliases(modulesDir string, paths map[string]string, builtin map[string]bool) (map[string][]string, error) {
	out := map[string][]string{}
	if b, err := os.ReadFile(filepath.Join(modulesDir, "modules.builtin.modinfo")); err == nil {
		for _, kv := range bytes.Split(b, []byte{0}) {
			_, rest, ok := strings.Cut(string(kv), ".")
			if !ok {
				continue
			}
			if a, ok := strings.CutPrefix(rest, "alias="); ok {
				out[a] = append(out[a], "")
			}
		}
	}
	names := make([]string, 0, len(paths))
	for n := range paths {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		mi, err := readModinfo(filepath.Join(modulesDir, paths[n]))
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", n, err)
		}
		for _, a := range mi.aliases {
			out[a] = append(out[a], n)
		}
	}
	return out, nil
}

// readModinfo reads the .modinfo section of a module file.
func readModinfo(p string) (modinfo, error) {
	var mi modinfo
	var f *elf.File
	var err error
	if strings.HasSuffix(p, ".ko") {
		f, err = elf.Open(p) // reads only the headers and the section
	} else {
		var data []byte
		if data, err = ReadModule(p); err == nil {
			f, err = elf.NewFile(bytes.NewReader(data))
		}
	}
	if err != nil {
		return mi, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return mi, fmt.Errorf("%s has no .modinfo section", p)
	}
	b, err := sec.Data()
	if err != nil {
		return mi, err
	}
	return parseModinfo(b), nil
}

// parseModinfo parses the NUL-separated key=value strings of .modinfo.
func parseModinfo(b []byte) modinfo {
	var mi modinfo
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.depends = append(mi.depends, d)
				}
			}
		case "softdep":
			// "pre: a b post: c"
			var list *[]string
			for _, w := range strings.Fields(v) {
				switch w {
				case "pre:":
					list = &mi.pre
				case "post:":
					list = &mi.post
				default:
					if list != nil {
						*list = append(*list, w)
					}
				}
			}
		case "alias":
			mi.aliases = append(mi.aliases, v)
		}
	}
	return mi
}

// isModuleFile reports whether a file name is a kernel module, compressed
// or not.
func isModuleFile(name string) bool {
	for _, s := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// ModuleName is a module's name from its path:
// kernel/drivers/net/virtio_net.ko.xz → virtio_net (dashes become
// underscores, as the kernel does).
func ModuleName(p string) string {
	b := filepath.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// ReadModule returns a module file's ELF bytes, decompressing .ko.xz,
// .ko.zst and .ko.gz. The installer ships modules uncompressed (the
// initramfs as a whole is compressed) because in-kernel decompression for
// finit_module (MODULE_INIT_COMPRESSED_FILE) needs a kernel built with
// CONFIG_MODULE_DECOMPRESS, which Debian 12's is not. The module's
// signature is inside the uncompressed file, so it is kept.
func ReadModule(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(p, ".ko.xz"):
		xr, err := xz.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		r = xr
	case strings.HasSuffix(p, ".ko.zst"):
		zr, err := zstd.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(p, ".ko.gz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		r = gr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return b, nil
}

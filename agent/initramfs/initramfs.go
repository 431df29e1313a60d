// Package initramfs builds gitmetal's installer: a Debian kernel and an
// initramfs whose /init is the static gitmetal binary, which runs as PID 1
// (agent/pid1) and then as the agent. It is Tinkerbell's Hook without
// LinuxKit, Docker or busybox: one kernel, the modules a server needs, one
// Go binary, and optionally firmware.
//
// What goes in the initramfs (a gzip-compressed newc cpio):
//
//	/init                       the gitmetal binary (static, stripped)
//	/dev/console                the node the kernel opens for init
//	/lib/modules/<name>.ko      modules, uncompressed, signatures kept
//	/lib/modules/gitmetal.order the load order, dependencies first (pid1 reads it)
//	/lib/firmware/...           firmware from Debian firmware-* packages, when asked
//	/etc/gitmetal/installer.txt what this build holds: kernel, modules, firmware
//	/bin/busybox, /bin/sh       only with Config.Busybox (a debug shell)
//	/proc /sys /run /tmp /mnt   mount points
//
// Design notes:
//   - The kernel and modules come from Debian's linux-image-<abi>-amd64,
//     fetched with apt-get download and unpacked with dpkg -x, never
//     installed; the ABI is pinned in DefaultKernelABI. Such a package has
//     no modules.dep (depmod never ran), so dependencies are read from each
//     module's .modinfo (ModuleOrder), soft dependencies and their aliases
//     included (ext4 needs crc32c, which only a softdep names).
//   - Modules are stored uncompressed and the archive compressed as a
//     whole: in-kernel module decompression needs CONFIG_MODULE_DECOMPRESS,
//     which Debian 12's kernel lacks, and one gzip stream compresses better
//     than many small ones.
//   - Every module in the order is loaded at boot, whether or not its
//     hardware is present: there is no udev to match aliases, and loading
//     a driver without a device costs milliseconds. There is no
//     /sbin/modprobe either, so anything the kernel would request on demand
//     (a file system, a crypto algorithm) must be in the list.
//   - Reproducible: the same kernel package, modules, firmware and /init
//     give the same bytes. The archive has fixed owners, times and inode
//     numbers, sorted entries, and a gzip header without a name or time.
//
// What it must not do: install packages on the build machine, download
// anything but Debian packages through apt, or run anything as root.
package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/agent/pid1"
)

// Output file names in Config.OutDir; the iPXE script and `gitmetal serve
// --installer-dir` use these names.
const (
	KernelFile    = "vmlinuz"
	InitramfsFile = "initramfs.cpio.gz"
)

// DefaultMaxBytes is the size budget of kernel and initramfs together.
const DefaultMaxBytes = 40 << 20

// Config says what installer to build.
type Config struct {
	// OutDir receives KernelFile and InitramfsFile. Required.
	OutDir string
	// Init is the static executable installed as /init (see BuildInit).
	// Required.
	Init string
	// KernelABI picks linux-image-<KernelABI>. Default DefaultKernelABI;
	// Latest asks apt.
	KernelABI string
	// Modules are loaded in addition to DefaultModules (names, such as
	// "sfc" or "mlx4_ib"); their dependencies come along.
	Modules []string
	// Firmware adds firmware files under /lib/firmware. Each entry is a
	// Debian package name ("firmware-bnx2x"; its lib/firmware tree, which
	// needs the non-free-firmware component in apt's sources), the path
	// of a .deb file, or a directory laid out like /lib/firmware.
	Firmware []string
	// Busybox adds Debian's busybox-static as /bin/busybox and /bin/sh,
	// for the debug shell of gitmetal.debug=1. Default false: the
	// installer needs no shell.
	Busybox bool
	// CacheDir keeps downloaded and unpacked packages. Default
	// DefaultCacheDir().
	CacheDir string
	// Log receives progress lines (component=initramfs).
	Log zerolog.Logger
}

// Result describes a built installer.
type Result struct {
	Kernel, Initramfs string // paths
	ABI               string
	Modules           []Module
	FirmwareFiles     int
	KernelBytes       int64
	InitramfsBytes    int64
	// CPIOBytes is the initramfs before compression: what it takes in
	// the machine's memory once unpacked.
	CPIOBytes int64
	// KernelSHA256 and InitramfsSHA256 are hex digests of the outputs.
	KernelSHA256, InitramfsSHA256 string
}

// TotalBytes is the size of kernel and initramfs together.
func (r *Result) TotalBytes() int64 { return r.KernelBytes + r.InitramfsBytes }

// Build builds the installer into cfg.OutDir. The output files are
// replaced atomically; equal inputs give equal bytes.
func Build(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.OutDir == "" || cfg.Init == "" {
		return nil, errors.New("initramfs: OutDir and Init are required")
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir()
	}
	if cfg.KernelABI == "" {
		cfg.KernelABI = DefaultKernelABI
	}
	log := cfg.Log.With().Str("component", "initramfs").Logger()
	if !IsStatic(cfg.Init) {
		return nil, fmt.Errorf("initramfs: init %s is not a static executable (build it with CGO_ENABLED=0)", cfg.Init)
	}
	initBin, err := os.ReadFile(cfg.Init)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	k, err := Kernel(ctx, cfg.CacheDir, cfg.KernelABI)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	log.Info().Str("abi", k.ABI).Msg("kernel package unpacked")
	mods, err := ModuleOrder(k.ModulesDir, append(append([]string(nil), DefaultModules...), cfg.Modules...)...)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	fw, err := firmwareFiles(ctx, cfg.CacheDir, cfg.Firmware)
	if err != nil {
		return nil, fmt.Errorf("initramfs: firmware: %w", err)
	}
	var busybox []byte
	if cfg.Busybox {
		p, err := Busybox(ctx, cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("initramfs: busybox: %w", err)
		}
		if busybox, err = os.ReadFile(p); err != nil {
			return nil, fmt.Errorf("initramfs: busybox: %w", err)
		}
	}
	files, err := assemble(k, mods, initBin, fw, busybox)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	var raw bytes.Buffer
	if err := WriteCPIO(&raw, files); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	var gz bytes.Buffer
	if err := Gzip(&gz, raw.Bytes()); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	kernel, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	res := &Result{
		Kernel:         filepath.Join(cfg.OutDir, KernelFile),
		Initramfs:      filepath.Join(cfg.OutDir, InitramfsFile),
		ABI:            k.ABI,
		Modules:        mods,
		FirmwareFiles:  len(fw),
		KernelBytes:    int64(len(kernel)),
		InitramfsBytes: int64(gz.Len()),
		CPIOBytes:      int64(raw.Len()),
	}
	res.KernelSHA256, res.InitramfsSHA256 = sha256Hex(kernel), sha256Hex(gz.Bytes())
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	if err := WriteFileAtomic(res.Kernel, kernel); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	if err := WriteFileAtomic(res.Initramfs, gz.Bytes()); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	log.Info().Int("modules", len(mods)).Int("firmware_files", len(fw)).
		Int64("kernel_bytes", res.KernelBytes).Int64("initramfs_bytes", res.InitramfsBytes).
		Msg("installer built")
	return res, nil
}

// assemble lists the initramfs's files.
func assemble(k *KernelPackage, mods []Module, initBin []byte, fw map[string]File, busybox []byte) ([]File, error) {
	var files []File
	dir := func(name string) { files = append(files, File{Name: name, Mode: ModeDir | 0o755}) }
	for _, d := range []string{"dev", "etc", "etc/gitmetal", "lib", "lib/firmware", "lib/modules", "mnt", "proc", "run", "sys", "tmp"} {
		dir(d)
	}
	// The kernel opens /dev/console for init before anything is mounted.
	files = append(files, File{Name: "dev/console", Mode: ModeChar | 0o600, RdevMajor: 5, RdevMinor: 1})
	files = append(files, File{Name: strings.TrimPrefix(pid1.InitPath, "/"), Mode: ModeFile | 0o755, Data: initBin})

	var order, info strings.Builder
	order.WriteString("# gitmetal installer: kernel modules in load order, each with the modules it needs\n")
	fmt.Fprintf(&info, "kernel %s\n", k.ABI)
	modDir := strings.TrimPrefix(pid1.ModulesDir, "/")
	for _, m := range mods {
		b, err := ReadModule(filepath.Join(k.ModulesDir, m.Path))
		if err != nil {
			return nil, err
		}
		files = append(files, File{Name: modDir + "/" + m.Name + ".ko", Mode: ModeFile | 0o644, Data: b})
		order.WriteString(strings.Join(append([]string{m.Name + ".ko"}, m.Depends...), " ") + "\n")
		fmt.Fprintf(&info, "module %s %s\n", m.Name, m.Path)
	}
	files = append(files, File{Name: strings.TrimPrefix(pid1.ModuleOrderFile, "/"), Mode: ModeFile | 0o644, Data: []byte(order.String())})

	names := make([]string, 0, len(fw))
	for n := range fw {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f := fw[n]
		f.Name = "lib/firmware/" + n
		files = append(files, f)
		if f.Mode&modeType == ModeFile {
			fmt.Fprintf(&info, "firmware %s\n", n)
		}
	}
	if busybox != nil {
		dir("bin")
		files = append(files,
			File{Name: "bin/busybox", Mode: ModeFile | 0o755, Data: busybox},
			File{Name: "bin/sh", Mode: ModeSymlink | 0o777, Data: []byte("busybox")})
		info.WriteString("busybox\n")
	}
	files = append(files, File{Name: "etc/gitmetal/installer.txt", Mode: ModeFile | 0o644, Data: []byte(info.String())})
	return files, nil
}

// Gzip compresses raw into w with a header that carries no name and no
// time, so equal input gives equal output. It uses the default level:
// on the installer, level 9 takes ten times as long for 0.5% less.
func Gzip(w io.Writer, raw []byte) error {
	zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(raw); err != nil {
		return err
	}
	return zw.Close()
}

// WriteFileAtomic writes data to dst through a temporary file in the same
// directory and a rename, so a reader (the HTTP server serving the
// installer) sees the old file or the new one, never half of one.
func WriteFileAtomic(dst string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Package diskimage builds the operating system the end-to-end test installs:
// a raw, bootable disk image made from Debian packages, compressed with zstd,
// with its sha256 — what a person would put behind image2disk's IMG_URL and
// CHECKSUM.
//
// "The OS" is Debian's kernel and a small busybox-static initramfs whose
// /init brings up the NIC with udhcpc, asks gitmetal's metadata service (the
// DHCP server's address, port 80, as EC2's fixed address) for its hostname
// and user-data, reads the file the workflow's writefile action put on the
// data partition, and prints ONE result line on the serial console:
//
//	GITMETAL-E2E os=v1 firmware=bios ip=10.78.1.10 hostname=e2e-bios.e2e.test userdata=... written=...
//
// (or "GITMETAL-E2E os=v1 FAIL <what>"), then powers off. The disk is laid out
// so that both firmware types boot it:
//
//	MBR           syslinux's mbr.bin in the first 440 bytes (BIOS)
//	partition 1   FAT, type EF, active: syslinux (ldlinux.sys + syslinux.cfg,
//	              loading /vmlinuz and /initrd.img) for BIOS, and
//	              /EFI/BOOT/BOOTX64.EFI, a unified kernel image (systemd's EFI
//	              stub with the kernel, initramfs and command line inside,
//	              joined with objcopy) that OVMF boots from the removable-media
//	              path with no arguments
//	partition 2   ext4, label gmdata: the data partition writefile writes into
//
// Design notes and rules:
//   - No loop devices, no mounts, no root needed: sfdisk writes the partition
//     table into the file, mkfs.vfat and mkfs.ext4 -d make the file systems in
//     files of their own, mtools copies into the FAT, the partitions are copied
//     into place, and syslinux --install --offset installs the BIOS loader into
//     the FAT at its offset in the disk file.
//   - Everything comes from Debian packages: the kernel and busybox-static
//     through test/qemu (apt-get download + dpkg -x into its cache, never
//     installed), syslinux, syslinux-common, mtools, dosfstools, fdisk,
//     e2fsprogs, systemd-boot-efi (the EFI stub only), binutils (objcopy)
//     and zstd installed on the build machine. Missing names what is missing
//     and the package that has it.
//   - Built images are cached under CacheDir, keyed by the hash of every
//     input (kernel, modules, busybox, init script, boot loader files, the
//     layout), so a rerun reuses them; a build happens in a private directory
//     renamed into place, so concurrent builders never see half an image.
//   - The OS stays small (a few MB uncompressed) so TCG boots it in seconds.
//
// The Debian OS (Config.Debian; see debian.go) is the exception to "no
// root": debootstrap chroots into the system it builds and mounts proc and
// sys inside it while it installs packages, as it always does. The disk
// image is still made without a mount or a loop device.
//
// What the package must not do: touch the host's block devices, mount
// anything itself, need root for the busybox OS, or reach anything but
// Debian's mirrors (apt's, through test/qemu, and debootstrap's) while
// building.
package diskimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/gitmetal/gitmetal/test/qemu"
)

// Marker starts the OS's result line; see ResultLine.
const Marker = "GITMETAL-E2E"

// ProgressMarker starts the lines the OS prints on its way to the result
// line (milestones for the test log).
const ProgressMarker = "GITMETAL-E2E-OS"

// The data partition.
const (
	// DataPartition is the number of the data partition (/dev/vda2 on a
	// virtio disk).
	DataPartition = 2
	// DataLabel is the data partition's ext4 label.
	DataLabel = "gmdata"
	// WrittenPath is the file, relative to the data partition's root, that
	// the OS prints as written=: the workflow's writefile puts it there.
	WrittenPath = "/gitmetal/written"
)

// MetadataPort is where the OS asks for its metadata: on the DHCP server's
// address (option 54), port 80.
const MetadataPort = 80

// Sizes of the layout, in MiB.
const (
	bootStartMiB = 1
	bootSizeMiB  = 40
	dataSizeMiB  = 8
)

// diskSizeMiB is the size of a disk whose data partition is dataMiB: the
// partitions and a MiB of slack at the end.
func diskSizeMiB(dataMiB int) int { return bootStartMiB + bootSizeMiB + dataMiB + 1 }

// DefaultCacheDir is where built images are kept: $GITMETAL_E2E_CACHE, or
// gitmetal/e2e under the user's cache directory (~/.cache).
func DefaultCacheDir() string {
	if d := os.Getenv("GITMETAL_E2E_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "gitmetal", "e2e")
	}
	return filepath.Join(os.TempDir(), "gitmetal-e2e-cache")
}

// Config says which OS image to build.
type Config struct {
	// Version names the OS release; the result line says os=<Version>.
	// Required: letters, digits, '.', '_' and '-'.
	Version string
	// CacheDir keeps the built images. Default DefaultCacheDir().
	CacheDir string
	// KernelCacheDir is test/qemu's cache of Debian packages (the kernel
	// and busybox-static). Default qemu.DefaultCacheDir().
	KernelCacheDir string
	// KernelABI picks linux-image-<KernelABI>. Default: the one Debian's
	// linux-image-amd64 depends on.
	KernelABI string
	// Debian makes the OS a debootstrapped Debian whose cloud-init asks
	// gitmetal for its metadata, instead of the busybox OS; see debian.go.
	// It needs root and debootstrap.
	Debian bool
}

// Image is a built OS image.
type Image struct {
	// Path is the zstd-compressed raw disk image.
	Path string
	// SHA256 is the hex sha256 of Path's bytes, as image2disk's CHECKSUM
	// checks it (the digest of the file as served).
	SHA256 string
	// Size is Path's size; RawSize the disk image's, uncompressed.
	Size, RawSize int64
	// Version is Config.Version; ABI the kernel's release.
	Version, ABI string
}

var versionRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,32}$`)

// Tool is a program or file the build needs, and the Debian package that
// has it.
type Tool struct {
	Name    string // a program looked up in PATH, or an absolute file path
	Package string
}

// Tools the build needs on the build machine (the kernel and busybox come
// from test/qemu's cache).
var Tools = []Tool{
	{"sfdisk", "fdisk"},
	{"mkfs.vfat", "dosfstools"},
	{"mcopy", "mtools"},
	{"mmd", "mtools"},
	{"syslinux", "syslinux"},
	{syslinuxMBR, "syslinux-common"},
	{"mkfs.ext4", "e2fsprogs"},
	{"objcopy", "binutils"},
	{efiStub, "systemd-boot-efi"},
	{"zstd", "zstd"},
}

// Files of Debian packages the image is made of.
const (
	syslinuxMBR = "/usr/lib/syslinux/mbr/mbr.bin"
	efiStub     = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
)

// Missing returns the tools of Tools that are not there, as
// "name (apt-get install -y package)" strings.
func Missing() []string {
	var out []string
	for _, tl := range Tools {
		var err error
		if filepath.IsAbs(tl.Name) {
			_, err = os.Stat(tl.Name)
		} else {
			_, err = exec.LookPath(tl.Name)
		}
		if err != nil {
			out = append(out, fmt.Sprintf("%s (apt-get install -y %s)", tl.Name, tl.Package))
		}
	}
	return out
}

// Build returns the OS image for cfg, from the cache when it is there.
func Build(ctx context.Context, cfg Config) (*Image, error) {
	if !versionRE.MatchString(cfg.Version) {
		return nil, fmt.Errorf("diskimage: version %q: want 1 to 32 letters, digits, '.', '_' or '-'", cfg.Version)
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir()
	}
	if cfg.KernelCacheDir == "" {
		cfg.KernelCacheDir = qemu.DefaultCacheDir()
	}
	if m := Missing(); len(m) > 0 {
		return nil, fmt.Errorf("diskimage: missing %s", strings.Join(m, ", "))
	}
	var os1 *osParts
	var err error
	if cfg.Debian {
		os1, err = buildDebian(ctx, cfg)
	} else {
		os1, err = buildOS(ctx, cfg, func(modules []string) string { return InitScript(cfg.Version, modules) })
	}
	if err != nil {
		return nil, err
	}
	key, err := cacheKey(cfg, os1)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.CacheDir, "images", cfg.Version+"-"+key)
	if img, err := readCached(dir); err == nil {
		img.Version, img.ABI = cfg.Version, os1.abi
		return img, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := assemble(ctx, tmp, os1); err != nil {
		return nil, fmt.Errorf("diskimage %s: %w", cfg.Version, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if img, cerr := readCached(dir); cerr == nil { // another builder won
			img.Version, img.ABI = cfg.Version, os1.abi
			return img, nil
		}
		return nil, err
	}
	img, err := readCached(dir)
	if err != nil {
		return nil, err
	}
	img.Version, img.ABI = cfg.Version, os1.abi
	return img, nil
}

// Files of a built image's directory in the cache.
const (
	imageFile   = "disk.img.zst"
	sumFile     = "disk.img.zst.sha256"
	rawSizeFile = "disk.img.size"
)

// readCached reads a complete image directory: the sum file is written
// last, so its presence means the rest is there.
func readCached(dir string) (*Image, error) {
	sum, err := os.ReadFile(filepath.Join(dir, sumFile))
	if err != nil {
		return nil, err
	}
	fields := strings.Fields(string(sum))
	if len(fields) == 0 || len(fields[0]) != sha256.Size*2 {
		return nil, fmt.Errorf("%s: malformed", filepath.Join(dir, sumFile))
	}
	raw, err := os.ReadFile(filepath.Join(dir, rawSizeFile))
	if err != nil {
		return nil, err
	}
	rawSize, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, rawSizeFile), err)
	}
	p := filepath.Join(dir, imageFile)
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	return &Image{Path: p, SHA256: fields[0], Size: st.Size(), RawSize: rawSize}, nil
}

// cacheKey hashes everything the image is made of.
func cacheKey(cfg Config, o *osParts) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "gitmetal-e2e-diskimage 2\nversion %s\nlayout %d %d %d %d\ncmdline %s\nrootfs %s\n",
		cfg.Version, bootStartMiB, bootSizeMiB, o.dataMiB, diskSizeMiB(o.dataMiB), kernelCmdline, o.rootfsKey)
	h.Write(o.initramfs)
	fmt.Fprintf(h, "\nsyslinux.cfg %s\n", syslinuxConfig())
	for _, p := range []string{o.kernel, syslinuxMBR, efiStub} {
		if err := hashFile(h, p); err != nil {
			return "", err
		}
	}
	// The syslinux installer embeds ldlinux.sys and ldlinux.c32.
	sl, err := exec.LookPath("syslinux")
	if err != nil {
		return "", err
	}
	if err := hashFile(h, sl); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func hashFile(w io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(w, "file %s\n", filepath.Base(p))
	_, err = io.Copy(w, f)
	return err
}

// run runs a command and returns an error with its output when it fails.
func run(ctx context.Context, dir, name string, args ...string) error {
	return runStdin(ctx, dir, "", name, args...)
}

// runStdin is run with stdin as the command's input.
func runStdin(ctx context.Context, dir, stdin, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	// mtools checks a FAT's geometry against its size and refuses
	// images whose size is not a whole number of "tracks"; the FAT here is
	// fine for every reader that matters (syslinux, OVMF, Linux).
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// errNoMarker is returned by ParseResult for a line that is not a result line.
var errNoMarker = errors.New("not a result line")

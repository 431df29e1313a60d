package diskimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

const mib = 1 << 20

// The raw (uncompressed) image is kept next to the compressed one, for tests
// that boot it directly.
const rawFile = "disk.img"

// syslinuxConfig boots the kernel and initramfs from the FAT partition at
// once, with its menu on the serial port.
func syslinuxConfig() string {
	return "SERIAL 0 115200\nDEFAULT os\nPROMPT 0\nTIMEOUT 0\nLABEL os\n  KERNEL /vmlinuz\n  INITRD /initrd.img\n  APPEND " + kernelCmdline + "\n"
}

// assemble builds the disk image for o in dir (a fresh, private directory)
// and writes its compressed form, digest and raw size there; the digest
// file comes last (readCached looks for it).
func assemble(ctx context.Context, dir string, o *osParts) error {
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(filepath.Join(work, "data", filepath.Dir(WrittenPath[1:])), 0o755); err != nil {
		return err
	}
	write := func(name, content string) error {
		return os.WriteFile(filepath.Join(work, name), []byte(content), 0o644)
	}
	if err := os.WriteFile(filepath.Join(work, "initrd.img"), o.initramfs, 0o644); err != nil {
		return err
	}
	if err := errors.Join(
		write("syslinux.cfg", syslinuxConfig()),
		write("cmdline.txt", kernelCmdline),
		write("os-release", "ID=gitmetal-e2e\nNAME=\"gitmetal e2e test OS\"\n"),
	); err != nil {
		return err
	}

	// The unified kernel image: systemd's EFI stub runs the .linux
	// section with the .initrd and .cmdline sections. The addresses are
	// the ones systemd's documentation gives for objcopy; the stub's own
	// sections end below 0x20000.
	uki := filepath.Join(work, "bootx64.efi")
	if err := run(ctx, work, "objcopy",
		"--add-section", ".osrel=os-release", "--change-section-vma", ".osrel=0x20000",
		"--add-section", ".cmdline=cmdline.txt", "--change-section-vma", ".cmdline=0x30000",
		"--add-section", ".linux="+o.kernel, "--change-section-vma", ".linux=0x2000000",
		"--add-section", ".initrd=initrd.img", "--change-section-vma", ".initrd=0x3000000",
		efiStub, uki); err != nil {
		return fmt.Errorf("unified kernel image: %w", err)
	}

	// The FAT partition, in a file of its own. -h: the hidden sectors
	// before it, so the boot sector knows where it starts.
	boot := filepath.Join(work, "boot.img")
	if err := run(ctx, work, "mkfs.vfat", "-C", "-n", "OSBOOT", "-i", "47e2e001",
		"-h", strconv.Itoa(bootStartMiB*mib/512), boot, strconv.Itoa(bootSizeMiB*1024)); err != nil {
		return err
	}
	if err := run(ctx, work, "mmd", "-i", boot, "::/syslinux", "::/EFI", "::/EFI/BOOT"); err != nil {
		return err
	}
	for src, dst := range map[string]string{
		o.kernel:       "::/vmlinuz",
		"initrd.img":   "::/initrd.img",
		"syslinux.cfg": "::/syslinux/syslinux.cfg",
		uki:            "::/EFI/BOOT/BOOTX64.EFI",
	} {
		if err := run(ctx, work, "mcopy", "-i", boot, src, dst); err != nil {
			return err
		}
	}

	// The data partition: ext4 made from a directory, no mount. The
	// busybox OS's holds a README; the Debian OS's is its root.
	data := filepath.Join(work, "data.img")
	src := o.rootfs
	if src == "" {
		src = filepath.Join(work, "data")
		if err := os.WriteFile(filepath.Join(src, "README"), []byte("gitmetal e2e data partition; the workflow's writefile writes "+WrittenPath+"\n"), 0o644); err != nil {
			return err
		}
	}
	if err := run(ctx, work, "mkfs.ext4", "-q", "-F", "-L", DataLabel, "-d", src,
		data, strconv.Itoa(o.dataMiB*1024)+"k"); err != nil {
		return err
	}
	diskMiB := diskSizeMiB(o.dataMiB)

	// The disk: an MBR partition table written into the file by sfdisk,
	// the partitions copied into place, then the boot loaders.
	raw := filepath.Join(dir, rawFile)
	f, err := os.Create(raw)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(diskMiB) * mib); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	dataStart := bootStartMiB + bootSizeMiB
	table := fmt.Sprintf("label: dos\nlabel-id: 0x47e2e001\nstart=%d, size=%d, type=ef, bootable\nstart=%d, size=%d, type=83\n",
		bootStartMiB*mib/512, bootSizeMiB*mib/512, dataStart*mib/512, o.dataMiB*mib/512)
	if err := runStdin(ctx, work, table, "sfdisk", "--no-reread", "--no-tell-kernel", "-q", raw); err != nil {
		return err
	}
	if err := copyAt(raw, boot, bootStartMiB*mib); err != nil {
		return err
	}
	if err := copyAt(raw, data, int64(dataStart)*mib); err != nil {
		return err
	}
	// syslinux writes ldlinux.sys and ldlinux.c32 into the FAT (through
	// mtools) and its boot sector into the partition's first sector.
	if err := run(ctx, work, "syslinux", "--install", "--offset", strconv.Itoa(bootStartMiB*mib), "--directory", "/syslinux", raw); err != nil {
		return err
	}
	// The MBR's boot code: the first 440 bytes, before the disk signature
	// and the partition table.
	mbr, err := os.ReadFile(syslinuxMBR)
	if err != nil {
		return err
	}
	if len(mbr) > 440 {
		mbr = mbr[:440]
	}
	if err := writeAt(raw, mbr, 0); err != nil {
		return err
	}

	// Compressed, with its digest: what image2disk fetches and checks.
	zst := filepath.Join(dir, imageFile)
	if err := run(ctx, work, "zstd", "-q", "-T0", "-6", "-o", zst, raw); err != nil {
		return err
	}
	sum, err := sha256File(zst)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, rawSizeFile), []byte(strconv.Itoa(diskMiB*mib)+"\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, sumFile), []byte(sum+"  "+imageFile+"\n"), 0o644)
}

// RawPath is the uncompressed disk image next to img.Path.
func (img *Image) RawPath() string { return filepath.Join(filepath.Dir(img.Path), rawFile) }

// copyAt copies the file src into dst at offset, without truncating dst.
func copyAt(dst, src string, offset int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.NewOffsetWriter(out, offset), in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s into %s at %d: %w", src, dst, offset, err)
	}
	return out.Close()
}

func writeAt(dst string, b []byte, offset int64) error {
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := out.WriteAt(b, offset); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func sha256File(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

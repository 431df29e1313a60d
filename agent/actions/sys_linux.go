package actions

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Commands of reboot(2) used by the kexec and reboot actions.
const (
	rebootCmdKexec   = unix.LINUX_REBOOT_CMD_KEXEC
	rebootCmdRestart = unix.LINUX_REBOOT_CMD_RESTART // RB_AUTOBOOT
	kexecNoInitramfs = unix.KEXEC_FILE_NO_INITRAMFS
)

// oDirect is O_DIRECT, 0 where there is none.
const oDirect = unix.O_DIRECT

// errInvalid is what a file system that refuses O_DIRECT answers.
const errInvalid = unix.EINVAL

// clearDirect turns O_DIRECT off on an open file.
func clearDirect(f *os.File) error {
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	_, err = unix.FcntlInt(f.Fd(), unix.F_SETFL, flags&^unix.O_DIRECT)
	return err
}

type linuxSystem struct{}

func (linuxSystem) KexecFileLoad(kernelFd, initrdFd int, cmdline string, flags int) error {
	return unix.KexecFileLoad(kernelFd, initrdFd, cmdline, flags)
}

func (linuxSystem) Reboot(cmd int) error { return unix.Reboot(cmd) }

func syncAll() { unix.Sync() }

// startWriteback asks the kernel to start writing a range of f to the
// disk, without waiting. Errors are left to the final fsync.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// waitWriteback waits until a range of f is on the disk.
func waitWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n,
		unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
}

// rereadPartitions is BLKRRPART, retried for a moment while udev still
// holds a partition open after the write. A partition (an image written
// to /dev/sda2) has no table to re-read: nothing is done.
func rereadPartitions(f *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if _, err := os.Stat(fmt.Sprintf("/sys/dev/block/%d:%d/partition", unix.Major(st.Rdev), unix.Minor(st.Rdev))); err == nil {
		return nil
	}
	var err error
	for range 10 {
		if err = unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); !errors.Is(err, unix.EBUSY) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

func mount(source, target, fstype string, flags uintptr, data string) error {
	return unix.Mount(source, target, fstype, flags, data)
}

func unmount(target string, detach bool) error {
	flags := 0
	if detach {
		flags = unix.MNT_DETACH
	}
	var err error
	for range 10 {
		if err = unix.Unmount(target, flags); !errors.Is(err, unix.EBUSY) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// bindMount binds source recursively onto target and makes the copy a
// slave, so that unmounting it never propagates back to the source (the
// classic chroot pitfall that takes /dev/pts away from the host).
func bindMount(source, target string) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := unix.Mount("", target, "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		_ = unix.Unmount(target, unix.MNT_DETACH)
		return err
	}
	return nil
}

// loopFlags for attachLoop.
const (
	loopAutoclear = unix.LO_FLAGS_AUTOCLEAR
	loopPartscan  = unix.LO_FLAGS_PARTSCAN
)

// attachLoop attaches a regular file to a free loop device and returns its
// path and an open descriptor. With loopAutoclear the device detaches by
// itself once the descriptor is closed and nothing mounts it.
func attachLoop(file string, flags uint32) (string, *os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("attach %s to a loop device: %w", file, err)
	}
	defer ctl.Close()
	backing, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return "", nil, err
	}
	defer backing.Close()
	for range 32 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("attach %s: no free loop device: %w", file, err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := openLoopNode(path, n)
		if err != nil {
			return "", nil, fmt.Errorf("attach %s: %w", file, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = flags
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			// Kernels before 5.8 have no LOOP_CONFIGURE.
			if err = unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_FD, int(backing.Fd())); err == nil {
				if err = unix.IoctlLoopSetStatus64(int(dev.Fd()), &cfg.Info); err != nil {
					_ = unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
				}
			}
		}
		if errors.Is(err, unix.EBUSY) {
			// Another process took it between GET_FREE and now.
			dev.Close()
			continue
		}
		if err != nil {
			dev.Close()
			return "", nil, fmt.Errorf("attach %s to %s: %w", file, path, err)
		}
		return path, dev, nil
	}
	return "", nil, fmt.Errorf("attach %s: every free loop device was taken before it could be used", file)
}

// openLoopNode opens /dev/loopN, making the node when /dev is not a
// devtmpfs (an initramfs with a static /dev).
func openLoopNode(path string, n int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	}
	return f, err
}

// detachLoop detaches a loop device attached by attachLoop and closes it.
// With autoclear set and the device still mounted, the kernel detaches it
// at the last unmount instead.
func detachLoop(dev *os.File) error {
	err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
	dev.Close()
	if errors.Is(err, unix.ENXIO) {
		return nil // already detached
	}
	return err
}

// mknodAt makes a device node or FIFO named name in the directory dir.
func mknodAt(dir *os.File, name string, mode uint32, major, minor uint32) error {
	return unix.Mknodat(int(dir.Fd()), name, mode, int(unix.Mkdev(major, minor)))
}

// Mode bits for mknodAt.
const (
	modeBlock = unix.S_IFBLK
	modeChar  = unix.S_IFCHR
	modeFIFO  = unix.S_IFIFO
)

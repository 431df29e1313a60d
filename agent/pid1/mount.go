package pid1

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// mount is one file system PID 1 mounts.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	// late mounts need a module: they are mounted after the modules load.
	late bool
}

// mounts are mounted in order: /dev before /dev/pts and /dev/shm.
var mounts = []mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", false},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=620,ptmxmode=666", false},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", false},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", false},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", false},
	// efivarfs exists only on UEFI machines, and needs its module.
	{"efivarfs", "/sys/firmware/efi/efivars", "efivarfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
}

// mountAll mounts what is not mounted yet (the late ones, or the others)
// and returns what it mounted;
// errors are collected, not fatal: a missing /dev/shm should not stop an
// install. A mount point that does not exist is made, except under /sys,
// where a missing directory means the machine lacks the feature.
func mountAll(mounted map[string]bool, late bool) ([]string, error) {
	var done []string
	var errs []error
	for _, m := range mounts {
		if mounted[m.target] || m.late != late {
			continue
		}
		if _, err := os.Stat(m.target); err != nil {
			if strings.HasPrefix(m.target, "/sys/") {
				continue
			}
			if err := os.MkdirAll(m.target, 0o755); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		if errors.Is(err, unix.EBUSY) {
			err = nil // mounted already (a devtmpfs the kernel mounted itself)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
			continue
		}
		mounted[m.target] = true
		done = append(done, m.target)
	}
	return done, errors.Join(errs...)
}

package actions

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/gitmetal/gitmetal/schema"
)

// kexecArgs is what kexec_file_load gets, built from the step.
type kexecArgs struct {
	kernel  string // path in the installer (under the mount point)
	initrd  string // "" for none
	cmdline string
	flags   int
}

// kexec: BLOCK_DEVICE + FS_TYPE (the new OS's file system holding the
// kernel), KERNEL_PATH, INITRD_PATH (optional), CMD_LINE. GRUBCFG_PATH,
// which Tinkerbell's kexec read CMD_LINE from, is not supported: CMD_LINE
// must be given. Background: on success it does not return.
func (a *Actions) kexec(ctx context.Context, step schema.Step, out Reporter) (err error) {
	p := newParams(step.Env)
	device := p.required("BLOCK_DEVICE")
	kernel := p.required("KERNEL_PATH")
	initrd := p.str("INITRD_PATH")
	cmdline := p.str("CMD_LINE")
	if p.has("GRUBCFG_PATH") && cmdline == "" {
		p.fail("GRUBCFG_PATH", p.str("GRUBCFG_PATH"), "not supported: set CMD_LINE to the kernel command line")
	}
	if err := p.err(); err != nil {
		return err
	}
	m, err := a.mountFS(device, p.str("FS_TYPE"), "BLOCK_DEVICE", out)
	if err != nil {
		return err
	}
	mounted := true
	defer func() {
		if mounted {
			err = errors.Join(err, m.unmount(out))
		}
	}()
	args, err := kexecArguments(m.dir, kernel, initrd, cmdline)
	if err != nil {
		return err
	}
	kf, err := os.Open(args.kernel)
	if err != nil {
		return fmt.Errorf("env KERNEL_PATH: %w", err)
	}
	files := []*os.File{kf}
	// Closed before the unmount below, which they would keep busy.
	closeFiles := func() {
		for _, f := range files {
			f.Close()
		}
		files = nil
	}
	defer closeFiles()
	initrdFd := -1
	if args.initrd != "" {
		f, err := os.Open(args.initrd)
		if err != nil {
			return fmt.Errorf("env INITRD_PATH: %w", err)
		}
		files = append(files, f)
		initrdFd = int(f.Fd())
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !a.cfg.AllowReboot {
		return fmt.Errorf("kexec %s: %w", kernel, ErrRebootDisabled)
	}
	out.Logf("loading %s (initrd %s) with command line %q", kernel, cmpOrNone(initrd), args.cmdline)
	if err := a.sys.KexecFileLoad(int(kf.Fd()), initrdFd, args.cmdline, args.flags); err != nil {
		return fmt.Errorf("kexec_file_load %s: %w", kernel, err)
	}
	closeFiles()
	// The loaded kernel is in memory: the file system can go, cleanly,
	// before everything stops.
	mounted = false
	if err := m.unmount(out); err != nil {
		out.Logf("%v", err)
	}
	out.Logf("rebooting into %s", kernel)
	syncAll()
	if err := a.sys.Reboot(rebootCmdKexec); err != nil {
		return fmt.Errorf("reboot into the loaded kernel: %w", err)
	}
	return nil
}

func cmpOrNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// kexecArguments resolves the kernel and initrd inside the mounted file
// system (symbolic links such as /vmlinuz -> boot/vmlinuz-6.1.0 are
// resolved as the new OS would) and builds the flags.
func kexecArguments(root, kernel, initrd, cmdline string) (kexecArgs, error) {
	var args kexecArgs
	resolve := func(name, p string) (string, error) {
		full, err := securejoin.SecureJoin(root, p)
		if err != nil {
			return "", fmt.Errorf("env %s=%q: %w", name, p, err)
		}
		fi, err := os.Stat(full)
		if err != nil {
			return "", fmt.Errorf("env %s=%q: not found in BLOCK_DEVICE's file system: %w", name, p, err)
		}
		if !fi.Mode().IsRegular() {
			return "", fmt.Errorf("env %s=%q: not a regular file", name, p)
		}
		return full, nil
	}
	var err error
	if args.kernel, err = resolve("KERNEL_PATH", path.Clean("/"+kernel)); err != nil {
		return args, err
	}
	if initrd != "" {
		if args.initrd, err = resolve("INITRD_PATH", path.Clean("/"+initrd)); err != nil {
			return args, err
		}
	} else {
		args.flags |= kexecNoInitramfs
	}
	args.cmdline = strings.TrimSpace(cmdline)
	return args, nil
}

// reboot: no parameters. Background: on success it does not return.
func (a *Actions) reboot(ctx context.Context, step schema.Step, out Reporter) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !a.cfg.AllowReboot {
		return fmt.Errorf("reboot: %w", ErrRebootDisabled)
	}
	out.Logf("syncing file systems and rebooting")
	syncAll()
	if err := a.sys.Reboot(rebootCmdRestart); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	return nil
}

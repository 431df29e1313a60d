package actions

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// mountPoint is a file system mounted in a temporary directory for the
// length of an action, with whatever was mounted inside it.
type mountPoint struct {
	dir    string
	device string
	loop   *os.File // the loop device when device is a regular file
	inner  []string // mounted inside dir, unmounted first (last first)
}

// mountFS mounts device (a block device, or a regular file through a loop
// device) with fstype in a new directory under Config.TempDir. name is the
// environment variable that named device, for errors.
func (a *Actions) mountFS(device, fstype, name string, out Reporter) (*mountPoint, error) {
	if fstype == "" {
		return nil, fmt.Errorf("env FS_TYPE: required with %s", name)
	}
	fi, err := os.Stat(device)
	if err != nil {
		return nil, fmt.Errorf("env %s: %w", name, err)
	}
	m := &mountPoint{device: device}
	src := device
	switch {
	case fi.Mode().IsRegular():
		path, loop, err := attachLoop(device, loopAutoclear)
		if err != nil {
			return nil, err
		}
		m.loop, src = loop, path
		out.Logf("attached %s to %s", device, path)
	case fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0:
		return nil, fmt.Errorf("env %s: %s is a %s, want a block device", name, device, kind(fi.Mode()))
	}
	m.dir, err = os.MkdirTemp(a.cfg.TempDir, "gitmetal-mnt-")
	if err != nil {
		m.release()
		return nil, err
	}
	if err := mount(src, m.dir, fstype, 0, ""); err != nil {
		m.release()
		return nil, fmt.Errorf("mount %s (%s) on %s: %w", device, fstype, m.dir, err)
	}
	out.Logf("mounted %s (%s) on %s", device, fstype, m.dir)
	return m, nil
}

// bind binds source onto the path rel inside the mount, creating the
// directory when it is missing.
func (m *mountPoint) bind(source, rel string) error {
	root, err := os.OpenRoot(m.dir)
	if err != nil {
		return err
	}
	defer root.Close()
	// MkdirAll through os.Root: a symbolic link in the new OS cannot
	// send the bind mount elsewhere in the installer.
	if err := root.MkdirAll(rel, 0o755); err != nil {
		return fmt.Errorf("bind %s: %w", source, err)
	}
	if fi, err := root.Lstat(rel); err != nil || !fi.IsDir() {
		return fmt.Errorf("bind %s: %s in the target is not a directory", source, rel)
	}
	target := filepath.Join(m.dir, rel)
	if err := bindMount(source, target); err != nil {
		return fmt.Errorf("bind %s on %s: %w", source, target, err)
	}
	m.inner = append(m.inner, target)
	return nil
}

// unmount undoes mountFS and every bind, and removes the directory.
func (m *mountPoint) unmount(out Reporter) error {
	var errs []error
	for _, p := range slices.Backward(m.inner) {
		if err := unmount(p, true); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	m.inner = nil
	// What a command mounted inside and left (an ESP on /boot/efi)
	// would keep the file system busy.
	for _, p := range mountsUnder(m.dir) {
		if err := unmount(p, true); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		} else {
			out.Logf("unmounted %s, left mounted by the action", p)
		}
	}
	if err := unmount(m.dir, false); err != nil {
		errs = append(errs, fmt.Errorf("unmount %s: %w", m.dir, err))
		return errors.Join(errs...) // keep the directory and the loop: still in use
	}
	out.Logf("unmounted %s", m.device)
	m.release()
	return errors.Join(errs...)
}

func (m *mountPoint) release() {
	if m.loop != nil {
		_ = detachLoop(m.loop)
		m.loop = nil
	}
	if m.dir != "" {
		_ = os.Remove(m.dir)
	}
}

// targetRoot is where DEST_PATH goes: the mounted DEST_DISK, or
// Config.Root when DEST_DISK is empty. done undoes the mount.
func (a *Actions) targetRoot(p *params, out Reporter) (dir string, done func() error, err error) {
	disk := p.str("DEST_DISK")
	if disk == "" {
		return a.cfg.Root, func() error { return nil }, nil
	}
	m, err := a.mountFS(disk, p.str("FS_TYPE"), "DEST_DISK", out)
	if err != nil {
		return "", nil, err
	}
	return m.dir, func() error { return m.unmount(out) }, nil
}

// mountsUnder lists the mount points strictly under dir, deepest first,
// from /proc/self/mountinfo.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var found []string
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if p := unescapeMountPath(f[4]); strings.HasPrefix(p, dir+"/") {
			found = append(found, p)
		}
	}
	slices.SortStableFunc(found, func(a, b string) int {
		return strings.Count(b, "/") - strings.Count(a, "/")
	})
	return found
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

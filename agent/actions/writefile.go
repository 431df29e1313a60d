package actions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/gitmetal/gitmetal/schema"
)

// writefile: DEST_DISK, FS_TYPE, DEST_PATH, CONTENTS, UID, GID, MODE
// (default 0644), DIRMODE (default 0755). Missing directories are made
// with DIRMODE and owned by UID/GID, as Tinkerbell's writefile does. The
// file is written under a temporary name and renamed over DEST_PATH, so
// it is never seen half-written and a symbolic link at DEST_PATH is
// replaced, not followed.
func (a *Actions) writefile(ctx context.Context, step schema.Step, out Reporter) (err error) {
	p := newParams(step.Env)
	rel := relPath(p, "DEST_PATH")
	contents := p.str("CONTENTS")
	uid, gid := p.id("UID"), p.id("GID")
	mode := p.mode("MODE", 0o644)
	dirMode := p.mode("DIRMODE", 0o755)
	if err := p.err(); err != nil {
		return err
	}
	dir, done, err := a.targetRoot(p, out)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, done()) }()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := makeParents(root, path.Dir(rel), dirMode, uid, gid, out); err != nil {
		return escapeHint(err)
	}
	if err := writeAtomic(root, rel, []byte(contents), mode, uid, gid); err != nil {
		return escapeHint(fmt.Errorf("/%s: %w", rel, err))
	}
	out.Logf("wrote %s (%d bytes, mode %04o, uid %d, gid %d)", "/"+rel, len(contents), unixMode(mode), uid, gid)
	return nil
}

// relPath reads a path inside the target file system ("/etc/hostname")
// and returns it relative to the target's root ("etc/hostname").
func relPath(p *params, name string) string {
	v := p.required(name)
	if v == "" {
		return ""
	}
	for part := range strings.SplitSeq(v, "/") {
		if part == ".." {
			p.fail(name, v, "must not contain \"..\"")
			return ""
		}
	}
	rel := strings.TrimPrefix(path.Clean("/"+v), "/")
	if rel == "" {
		p.fail(name, v, "names the root directory, want a file")
	}
	return rel
}

// makeParents makes the missing directories of dir, each with mode and
// owner.
func makeParents(root *os.Root, dir string, mode fs.FileMode, uid, gid int, out Reporter) error {
	if dir == "." || dir == "" {
		return nil
	}
	cur := ""
	for part := range strings.SplitSeq(dir, "/") {
		cur = path.Join(cur, part)
		fi, err := root.Lstat(cur)
		if err == nil {
			if fi.Mode()&fs.ModeSymlink != 0 {
				// Follow it only if it stays inside the root: os.Root
				// refuses otherwise.
				if fi, err = root.Stat(cur); err != nil {
					return fmt.Errorf("/%s: %w", cur, err)
				}
			}
			if !fi.IsDir() {
				return fmt.Errorf("/%s exists and is not a directory", cur)
			}
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := root.Mkdir(cur, 0o700); err != nil {
			return err
		}
		if uid >= 0 || gid >= 0 {
			if err := root.Lchown(cur, uid, gid); err != nil {
				return err
			}
		}
		if err := root.Chmod(cur, mode|fs.ModeDir); err != nil {
			return err
		}
		out.Logf("made directory /%s (mode %04o)", cur, unixMode(mode))
	}
	return nil
}

// writeAtomic writes data to name through a temporary file in the same
// directory, with its mode and owner set before it is renamed into place.
func writeAtomic(root *os.Root, name string, data []byte, mode fs.FileMode, uid, gid int) error {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := path.Join(path.Dir(name), ".gitmetal-"+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			_ = root.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if uid >= 0 || gid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return err
		}
	}
	// After chown, which clears set-id bits.
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := root.Rename(tmp, name); err != nil {
		return err
	}
	ok = true
	return nil
}

// unixMode returns the permission bits of m as chmod(1) spells them.
func unixMode(m fs.FileMode) uint32 {
	v := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}

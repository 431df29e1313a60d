package actions

import (
	"archive/tar"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// extractor unpacks a tar stream into a directory opened as an os.Root,
// so that no entry, whatever its name or the links before it, can write
// outside that directory.
type extractor struct {
	root    *os.Root
	owners  bool // set owners from the archive (only root can)
	out     Reporter
	buf     []byte
	dirs    []dirMeta
	files   int
	skipped int
	written atomic.Int64
}

// dirMeta is applied once the archive is done: a directory's time changes
// as entries are added, and a read-only mode would stop them.
type dirMeta struct {
	name     string
	mode     fs.FileMode
	uid, gid int
	mtime    time.Time
}

func newExtractor(root *os.Root, out Reporter) *extractor {
	return &extractor{root: root, owners: os.Geteuid() == 0, out: out, buf: make([]byte, 1<<20)}
}

// entryName checks an entry's name and returns it relative to the
// destination ("" for the destination itself). Absolute names and any ".."
// are refused, as a tar made for a root file system never has them.
func entryName(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("entry with an empty name")
	case strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("entry %q: absolute path refused", name)
	}
	for part := range strings.SplitSeq(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("entry %q: path with \"..\" refused", name)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// symlinkTarget refuses a relative link that climbs out of the
// destination. Absolute targets are kept: they mean a path in the new
// OS once it runs, and the extractor itself never follows them (os.Root
// refuses absolute links).
func symlinkTarget(name, target string) error {
	if target == "" {
		return fmt.Errorf("entry %q: symbolic link with an empty target", name)
	}
	if path.IsAbs(target) {
		return nil
	}
	if resolved := path.Join(path.Dir(name), target); resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("entry %q: symbolic link to %q points outside the destination: refused", name, target)
	}
	return nil
}

func (x *extractor) extract(ctx context.Context, tr *tar.Reader) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return x.finish()
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	return escapeHint(x.unpack(hdr, r))
}

// escapeHint explains os.Root's words for a path that a symbolic link
// leads out of the tree.
func escapeHint(err error) error {
	if err != nil && strings.Contains(err.Error(), "path escapes from parent") {
		return fmt.Errorf("%w (through a symbolic link that leads outside the destination: refused)", err)
	}
	return err
}

func (x *extractor) unpack(hdr *tar.Header, r io.Reader) error {
	name, err := entryName(hdr.Name)
	if err != nil {
		return err
	}
	mode := hdr.FileInfo().Mode()
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.dir(name, hdr, mode)
	case tar.TypeReg, tar.TypeRegA:
		return x.file(name, hdr, mode, r)
	case tar.TypeSymlink:
		return x.symlink(name, hdr)
	case tar.TypeLink:
		return x.link(name, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return x.node(name, hdr, mode)
	}
	return fmt.Errorf("entry %q: unsupported type %q", hdr.Name, hdr.Typeflag)
}

// prepare makes name's parent directories and removes whatever non-
// directory sits at name, so that creating it never follows a link.
func (x *extractor) prepare(name string) error {
	if dir := path.Dir(name); dir != "." {
		if err := x.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("entry %q: %w", name, err)
		}
	}
	fi, err := x.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("entry %q: %w", name, err)
	case fi.IsDir():
		return fmt.Errorf("entry %q: a directory is in the way", name)
	}
	if err := x.root.Remove(name); err != nil {
		return fmt.Errorf("entry %q: replace: %w", name, err)
	}
	return nil
}

func (x *extractor) dir(name string, hdr *tar.Header, mode fs.FileMode) error {
	meta := dirMeta{name: cmp.Or(name, "."), mode: mode, uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime}
	if name != "" {
		fi, err := x.root.Lstat(name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := x.root.MkdirAll(path.Dir(name), 0o755); err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			if err := x.root.Mkdir(name, 0o700); err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
		case err != nil:
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			// A link to a directory already there (lib -> usr/lib) stays,
			// if it stays inside; its target keeps its own metadata.
			if fi, err := x.root.Stat(name); err != nil || !fi.IsDir() {
				return fmt.Errorf("entry %q: a symbolic link that is not a directory inside the destination is in the way", hdr.Name)
			}
			return nil
		case !fi.IsDir():
			if err := x.prepare(name); err != nil {
				return err
			}
			if err := x.root.Mkdir(name, 0o700); err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
		}
	}
	x.dirs = append(x.dirs, meta)
	x.files++
	return nil
}

func (x *extractor) file(name string, hdr *tar.Header, mode fs.FileMode, r io.Reader) error {
	if name == "" {
		return fmt.Errorf("entry %q: a file cannot be the destination directory", hdr.Name)
	}
	if err := x.prepare(name); err != nil {
		return err
	}
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	defer f.Close()
	n, err := io.CopyBuffer(onlyWriter{f}, r, x.buf)
	x.written.Add(n)
	if err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	if err := x.meta(f, name, hdr, mode); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	x.files++
	return f.Close()
}

// onlyWriter hides *os.File's ReadFrom, whose copy_file_range and splice
// paths do not apply to a tar stream, so that CopyBuffer uses the buffer.
type onlyWriter struct{ io.Writer }

// meta sets owner, mode and times on an open file.
func (x *extractor) meta(f *os.File, name string, hdr *tar.Header, mode fs.FileMode) error {
	if x.owners {
		if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if err := f.Chmod(mode); err != nil { // after chown, which clears set-id bits
		return err
	}
	return x.root.Chtimes(name, hdr.AccessTime, hdr.ModTime)
}

func (x *extractor) symlink(name string, hdr *tar.Header) error {
	if name == "" {
		return fmt.Errorf("entry %q: a link cannot be the destination directory", hdr.Name)
	}
	if err := symlinkTarget(name, hdr.Linkname); err != nil {
		return err
	}
	if err := x.prepare(name); err != nil {
		return err
	}
	if err := x.root.Symlink(hdr.Linkname, name); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	if x.owners {
		if err := x.root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
	x.files++
	return nil
}

func (x *extractor) link(name string, hdr *tar.Header) error {
	target, err := entryName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hard link %q: %w", hdr.Name, err)
	}
	if name == "" || target == "" {
		return fmt.Errorf("entry %q: hard link to %q refused", hdr.Name, hdr.Linkname)
	}
	if err := x.prepare(name); err != nil {
		return err
	}
	if err := x.root.Link(target, name); err != nil {
		return fmt.Errorf("entry %q: hard link to %q: %w", hdr.Name, hdr.Linkname, err)
	}
	x.files++
	return nil
}

func (x *extractor) node(name string, hdr *tar.Header, mode fs.FileMode) error {
	if !x.owners {
		// Only root may make device nodes; a FIFO could be made, but
		// a half-made /dev is worse than a consistent skip.
		x.skipped++
		return nil
	}
	if name == "" {
		return fmt.Errorf("entry %q: a device cannot be the destination directory", hdr.Name)
	}
	if err := x.prepare(name); err != nil {
		return err
	}
	dir, err := x.root.Open(path.Dir(name))
	if err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	defer dir.Close()
	typ := map[byte]uint32{tar.TypeChar: modeChar, tar.TypeBlock: modeBlock, tar.TypeFifo: modeFIFO}[hdr.Typeflag]
	if err := mknodAt(dir, path.Base(name), typ|unixMode(mode), uint32(hdr.Devmajor), uint32(hdr.Devminor)); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	if err := x.root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	if err := x.root.Chmod(name, mode); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	x.files++
	return nil
}

// finish applies the directories' metadata, deepest first.
func (x *extractor) finish() error {
	slices.SortStableFunc(x.dirs, func(a, b dirMeta) int {
		return cmp.Compare(strings.Count(b.name, "/"), strings.Count(a.name, "/"))
	})
	for _, d := range x.dirs {
		if x.owners {
			if err := x.root.Lchown(d.name, d.uid, d.gid); err != nil {
				return fmt.Errorf("directory %q: %w", d.name, err)
			}
		}
		if err := x.root.Chmod(d.name, d.mode); err != nil {
			return fmt.Errorf("directory %q: %w", d.name, err)
		}
		if err := x.root.Chtimes(d.name, d.mtime, d.mtime); err != nil {
			return fmt.Errorf("directory %q: %w", d.name, err)
		}
	}
	return nil
}

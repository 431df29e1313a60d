package ipxe

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotFound is returned for a name that is not served: it is not a valid
// name, or no such file exists. Callers answer "not found" without saying
// which, so a client learns nothing about the server's file system.
var ErrNotFound = errors.New("file not found")

// Binaries is a flat directory of iPXE binaries (undionly.kpxe, ipxe.efi,
// snponly.efi, snp.efi, ...), served by TFTP and by GET /ipxe/bin/{name}.
//
// Only the directory's own entries are reachable: a name is one path
// element, never a path. Symbolic links among those entries are followed,
// wherever they point, because Debian's ipxe package installs
// /usr/lib/ipxe/ipxe.efi as a link to /boot/ipxe.efi; the links are the
// operator's choice, and a client cannot name anything else. Trees that
// clients can walk (the TFTP assets, the installer files) are opened with
// os.Root instead, which keeps every path and link inside the tree.
type Binaries struct {
	dir string
}

// OpenBinaries checks that dir is a directory and returns it as Binaries.
func OpenBinaries(dir string) (*Binaries, error) {
	if dir == "" {
		return nil, errors.New("ipxe binaries: no directory given")
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("ipxe binaries: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("ipxe binaries: %s is not a directory", dir)
	}
	return &Binaries{dir: dir}, nil
}

// Dir returns the directory.
func (b *Binaries) Dir() string { return b.dir }

// Open opens the binary called name and returns it with its FileInfo. Any
// name that is not a plain file name of the directory (empty, "." or "..",
// hidden, containing '/', '\\', NUL or control characters), and anything
// that is not a regular file, gives ErrNotFound.
func (b *Binaries) Open(name string) (*os.File, fs.FileInfo, error) {
	if !ValidBinaryName(name) {
		return nil, nil, ErrNotFound
	}
	f, err := os.Open(filepath.Join(b.dir, name))
	return regularFile(name, f, err)
}

// regularFile returns f, just opened as name (err is the open's), with its
// file information when it is a regular file; otherwise it closes f and
// returns an error that wraps ErrNotFound.
func regularFile(name string, f *os.File, err error) (*os.File, fs.FileInfo, error) {
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%w: %s is not a regular file", ErrNotFound, name)
	}
	return f, st, nil
}

// ValidBinaryName reports whether name can name an entry of a Binaries
// directory: one path element of printable characters that does not start
// with a dot and holds no '/' or '\\'.
func ValidBinaryName(name string) bool {
	if name == "" || len(name) > 255 || name[0] == '.' {
		return false
	}
	if strings.ContainsAny(name, `/\`) {
		return false
	}
	return !hasControl(name)
}

// hasControl reports whether s holds a NUL, another ASCII control
// character or DEL.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// Tree is a directory tree served by name: the TFTP assets and the
// installer files. It is opened with os.Root, so neither a name nor a
// symbolic link inside the tree can reach outside it, even if the tree
// changes while it is served.
type Tree struct {
	root *os.Root
}

// OpenTree opens dir as a Tree. Close releases it.
func OpenTree(dir string) (*Tree, error) {
	if dir == "" {
		return nil, errors.New("tree: no directory given")
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("tree: %w", err)
	}
	return &Tree{root: r}, nil
}

// Dir returns the tree's directory.
func (t *Tree) Dir() string { return t.root.Name() }

// Close releases the tree's directory handle.
func (t *Tree) Close() error { return t.root.Close() }

// Open opens the regular file at the slash-separated path name, relative to
// the tree, and returns it with its FileInfo. Absolute paths, ".."
// elements, empty elements, backslashes, NUL and other control characters,
// links that leave the tree, directories and special files all give
// ErrNotFound.
func (t *Tree) Open(name string) (*os.File, fs.FileInfo, error) {
	if !ValidTreePath(name) {
		return nil, nil, ErrNotFound
	}
	f, err := t.root.Open(filepath.FromSlash(name))
	return regularFile(name, f, err)
}

// ValidTreePath reports whether name is a relative slash-separated path of
// printable characters whose elements are neither empty, "." nor "..", and
// which holds no backslash.
func ValidTreePath(name string) bool {
	if name == "" || len(name) > 1024 || hasControl(name) || strings.ContainsRune(name, '\\') {
		return false
	}
	for el := range strings.SplitSeq(name, "/") {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	return true
}

package source

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/gitmetal/gitmetal/schema"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// repo is a go-git repository whose object store is used under a mutex:
// go-git's storage is not documented as safe for concurrent use, and the
// loader's workers call File.Open at once.
type repo struct {
	mu sync.Mutex
	r  *git.Repository
	// shared is set when other programs write to the repository: their new
	// packs are found by reindexing when an object is missing.
	shared bool
}

// retryLocked runs fn and, for a shared repository whose packs changed
// behind go-git's back, once more after reindexing.
func (rp *repo) retryLocked(fn func() error) error {
	err := fn()
	if err == nil || !rp.shared || !(errors.Is(err, plumbing.ErrObjectNotFound) || errors.Is(err, fs.ErrNotExist)) {
		return err
	}
	if rp.reindexLocked() {
		return fn()
	}
	return err
}

// reindexLocked makes go-git read the list of packs again, and reports
// whether it could.
func (rp *repo) reindexLocked() bool {
	s, ok := rp.r.Storer.(*filesystem.Storage)
	if ok {
		s.Reindex()
	}
	return ok
}

// blob returns the content of a blob.
func (rp *repo) blob(h plumbing.Hash) ([]byte, error) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	var data []byte
	err := rp.retryLocked(func() error {
		o, err := rp.r.Storer.EncodedObject(plumbing.BlobObject, h)
		if err != nil {
			return err
		}
		rd, err := o.Reader()
		if err != nil {
			return err
		}
		defer rd.Close()
		data = make([]byte, 0, o.Size())
		buf := data[:o.Size()]
		n, err := io.ReadFull(rd, buf)
		data = buf[:n]
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	return data, nil
}

// treeLocked returns a tree object.
func (rp *repo) treeLocked(h plumbing.Hash) (*object.Tree, error) {
	var t *object.Tree
	err := rp.retryLocked(func() (err error) {
		t, err = object.GetTree(rp.r.Storer, h)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read tree %s: %w", h, err)
	}
	return t, nil
}

// commitLocked returns a commit object.
func (rp *repo) commitLocked(h plumbing.Hash) (*object.Commit, error) {
	var c *object.Commit
	err := rp.retryLocked(func() (err error) {
		c, err = object.GetCommit(rp.r.Storer, h)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read commit %s: %w", h, err)
	}
	return c, nil
}

// peelLocked returns the commit an object (a commit or an annotated tag,
// possibly of a tag) stands for.
func (rp *repo) peelLocked(h plumbing.Hash) (plumbing.Hash, error) {
	for range 10 {
		var o plumbing.EncodedObject
		err := rp.retryLocked(func() (err error) {
			o, err = rp.r.Storer.EncodedObject(plumbing.AnyObject, h)
			return err
		})
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("read object %s: %w", h, err)
		}
		switch o.Type() {
		case plumbing.CommitObject:
			return h, nil
		case plumbing.TagObject:
			t, err := object.DecodeTag(rp.r.Storer, o)
			if err != nil {
				return plumbing.ZeroHash, fmt.Errorf("read tag %s: %w", h, err)
			}
			h = t.Target
		default:
			return plumbing.ZeroHash, fmt.Errorf("%s is a %s, not a commit", h, o.Type())
		}
	}
	return plumbing.ZeroHash, fmt.Errorf("%s: too many nested tags", h)
}

// rootLocked returns the hash of the fleet root, the tree at subdir of the
// commit's tree.
func (rp *repo) rootLocked(c *object.Commit, subdir string) (plumbing.Hash, error) {
	if subdir == "" {
		return c.TreeHash, nil
	}
	t, err := rp.treeLocked(c.TreeHash)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	e, err := t.FindEntry(subdir)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("fleet path %q in commit %s: %w", subdir, c.Hash, err)
	}
	if e.Mode != filemode.Dir {
		return plumbing.ZeroHash, fmt.Errorf("fleet path %q in commit %s is not a directory", subdir, c.Hash)
	}
	return e.Hash, nil
}

// file returns the File for a blob at p.
func (rp *repo) file(p string, h plumbing.Hash) schema.File {
	return schema.File{Path: p, Blob: h.String(), Open: func() ([]byte, error) { return rp.blob(h) }}
}

// buildLocked builds the Tree of commit c, whose fleet root is root, from
// prev: top-down from prev's root when prev was made by owner from this
// repository, else by reading every file and comparing.
func (rp *repo) buildLocked(owner any, prev *Tree, c *object.Commit, root plumbing.Hash) (*Tree, error) {
	t := &Tree{
		Revision: c.Hash.String(),
		Commit:   commitInfo(c),
		owner:    owner,
		root:     root,
	}
	if prev != nil && prev.owner == owner && !prev.root.IsZero() {
		if prev.root == root {
			t.Files = prev.Files
			return t, nil
		}
		d := &treeDiff{rp: rp, prev: prev.Files}
		if err := d.diff("", prev.root, root); err != nil {
			return nil, err
		}
		t.Files = prev.Files
		if d.files != nil {
			t.Files = d.files
		}
		slices.Sort(d.changed)
		slices.Sort(d.removed)
		t.Changed, t.Removed = d.changed, d.removed
		return t, nil
	}
	d := &treeDiff{rp: rp, files: map[string]schema.File{}}
	if err := d.add("", root); err != nil {
		return nil, err
	}
	t.Files = d.files
	t.Changed, t.Removed = diffFiles(filesOf(prev), t.Files)
	if prev != nil && len(t.Changed) == 0 && len(t.Removed) == 0 {
		t.Files = prev.Files // keep sharing
	}
	return t, nil
}

// treeDiff applies the difference between two trees to a copy of prev.
type treeDiff struct {
	rp               *repo
	prev             map[string]schema.File
	files            map[string]schema.File // nil until the first change
	changed, removed []string
}

func (d *treeDiff) write() {
	if d.files == nil {
		d.files = maps.Clone(d.prev)
	}
}

// isFile reports whether a tree entry mode is a file the loader can read:
// symbolic links and submodules are not.
func isFile(m filemode.FileMode) bool {
	return m == filemode.Regular || m == filemode.Executable || m == filemode.Deprecated
}

// skipDir reports whether no file under a directory can be one the loader
// reads (schema.KindOf refuses hidden path elements and cue.mod).
func skipDir(name string) bool {
	return strings.HasPrefix(name, ".") || name == "cue.mod"
}

// sortKey is the name a tree entry is ordered by in a git tree.
func sortKey(e *object.TreeEntry) string {
	if e.Mode == filemode.Dir {
		return e.Name + "/"
	}
	return e.Name
}

// diff walks two trees at prefix, descending only into subtrees whose
// hashes differ.
func (d *treeDiff) diff(prefix string, oldH, newH plumbing.Hash) error {
	ot, err := d.rp.treeLocked(oldH)
	if err != nil {
		return err
	}
	nt, err := d.rp.treeLocked(newH)
	if err != nil {
		return err
	}
	a, b := ot.Entries, nt.Entries
	for len(a) > 0 || len(b) > 0 {
		var c int
		switch {
		case len(a) == 0:
			c = 1
		case len(b) == 0:
			c = -1
		default:
			c = strings.Compare(sortKey(&a[0]), sortKey(&b[0]))
		}
		switch {
		case c < 0:
			if err := d.removeEntry(prefix, &a[0]); err != nil {
				return err
			}
			a = a[1:]
		case c > 0:
			if err := d.addEntry(prefix, &b[0]); err != nil {
				return err
			}
			b = b[1:]
		default:
			oe, ne := &a[0], &b[0]
			a, b = a[1:], b[1:]
			if oe.Hash == ne.Hash && (oe.Mode == ne.Mode || isFile(oe.Mode) == isFile(ne.Mode)) {
				continue
			}
			if oe.Mode == filemode.Dir {
				if !skipDir(oe.Name) {
					if err := d.diff(prefix+oe.Name+"/", oe.Hash, ne.Hash); err != nil {
						return err
					}
				}
				continue
			}
			switch of, nf := isFile(oe.Mode), isFile(ne.Mode); {
			case of && nf:
				d.set(prefix+ne.Name, ne.Hash)
			case of:
				if err := d.removeEntry(prefix, oe); err != nil {
					return err
				}
			case nf:
				if err := d.addEntry(prefix, ne); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// addEntry adds a new entry: a file, or every file of a directory.
func (d *treeDiff) addEntry(prefix string, e *object.TreeEntry) error {
	switch {
	case e.Mode == filemode.Dir:
		if !skipDir(e.Name) {
			return d.add(prefix+e.Name+"/", e.Hash)
		}
	case isFile(e.Mode):
		d.set(prefix+e.Name, e.Hash)
	}
	return nil
}

// removeEntry removes an entry that is gone: a file, or every file of a
// directory.
func (d *treeDiff) removeEntry(prefix string, e *object.TreeEntry) error {
	switch {
	case e.Mode == filemode.Dir:
		if !skipDir(e.Name) {
			return d.remove(prefix+e.Name+"/", e.Hash)
		}
	case isFile(e.Mode):
		p := prefix + e.Name
		if _, ok := d.prev[p]; ok {
			d.write()
			delete(d.files, p)
			d.removed = append(d.removed, p)
		}
	}
	return nil
}

// set records the blob at p when the loader reads p.
func (d *treeDiff) set(p string, h plumbing.Hash) {
	if schema.KindOf(p) == schema.KindUnknown {
		return
	}
	d.write()
	if old, ok := d.files[p]; ok && old.Blob == h.String() {
		return // a removal and an addition of the same content
	}
	d.files[p] = d.rp.file(p, h)
	d.changed = append(d.changed, p)
}

// add adds every file of the tree h at prefix.
func (d *treeDiff) add(prefix string, h plumbing.Hash) error {
	t, err := d.rp.treeLocked(h)
	if err != nil {
		return err
	}
	for i := range t.Entries {
		if err := d.addEntry(prefix, &t.Entries[i]); err != nil {
			return err
		}
	}
	return nil
}

// remove removes every file of the old tree h at prefix.
func (d *treeDiff) remove(prefix string, h plumbing.Hash) error {
	t, err := d.rp.treeLocked(h)
	if err != nil {
		return err
	}
	for i := range t.Entries {
		if err := d.removeEntry(prefix, &t.Entries[i]); err != nil {
			return err
		}
	}
	return nil
}

func commitInfo(c *object.Commit) *Commit {
	summary, _, _ := strings.Cut(strings.TrimSpace(c.Message), "\n")
	return &Commit{
		Hash:    c.Hash.String(),
		Author:  c.Author.Name + " <" + c.Author.Email + ">",
		Time:    c.Committer.When,
		Summary: strings.TrimSpace(summary),
	}
}

// cleanSubdir returns a fleet path as a clean slash-separated path relative
// to the repository root, "" for the root.
func cleanSubdir(p string) (string, error) {
	p = strings.ReplaceAll(p, "\\", "/")
	for part := range strings.SplitSeq(p, "/") {
		if part == ".." {
			return "", fmt.Errorf("fleet path %q leaves the repository", p)
		}
	}
	return path.Clean("/" + p)[1:], nil
}

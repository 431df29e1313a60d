package source

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/gitmetal/gitmetal/schema"
)

// DirConfig configures a Dir source. Zero values take the documented
// defaults.
type DirConfig struct {
	// Path is the fleet root directory.
	Path string
	// Debounce is how long the directory must be quiet after a change
	// before Notify fires (default 5ms); a stream of changes fires at the
	// latest after 20 times as long.
	Debounce time.Duration
}

// Dir is a Source reading a plain directory, for development: every
// directory is watched with fsnotify, and Sync re-reads only the paths the
// events named (everything on the first Sync, or when the kernel dropped
// events).
type Dir struct {
	root string
	w    *watcher

	mu     sync.Mutex // guards dirty and rescan, written by the watcher
	dirty  map[string]struct{}
	rescan bool

	syncMu sync.Mutex // serialises Sync; guards the fields below
	cur    *dirState
	dirs   map[string]bool // watched directories, relative to root ("" is root)
	closed bool
}

// dirState is the content of the directory as of the last Sync.
type dirState struct {
	rev   string
	files map[string]schema.File
	sum   digest
}

// NewDir returns a Dir watching cfg.Path. Its first Sync reads it all.
func NewDir(cfg DirConfig) (*Dir, error) {
	if cfg.Path == "" {
		return nil, errors.New("directory source: no path")
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 5 * time.Millisecond
	}
	root, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("directory source: %w", err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("directory source: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("directory source: %s is not a directory", root)
	}
	d := &Dir{root: root, dirty: map[string]struct{}{}, dirs: map[string]bool{}}
	d.w, err = newWatcher(cfg.Debounce, d.accept, func() {
		d.mu.Lock()
		d.rescan = true
		d.mu.Unlock()
	})
	if err != nil {
		return nil, fmt.Errorf("directory source: %w", err)
	}
	return d, nil
}

// accept records the path an event names; it runs on the watcher's
// goroutine.
func (d *Dir) accept(fw *fsnotify.Watcher, ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	rel, err := filepath.Rel(d.root, ev.Name)
	if err != nil || strings.HasPrefix(rel, "..") {
		return false
	}
	rel = filepath.ToSlash(rel)
	if ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Remove) {
		unwatch(fw, ev.Name)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if rel == "." {
		d.rescan = true // the root itself moved or went
		return true
	}
	if hiddenPath(rel) {
		return false
	}
	d.dirty[rel] = struct{}{}
	return true
}

// unwatch removes the watches of a directory that moved or went, and of the
// directories below it. The kernel keeps a moved directory's watch, and
// fsnotify its old name: a watch added under the new name would reuse it,
// old name and all, so the old watches must go before the new name is
// read. This runs on the watcher's goroutine, so they are gone before the
// event that names the new place is accepted.
func unwatch(fw *fsnotify.Watcher, dir string) {
	prefix := dir + string(filepath.Separator)
	for _, p := range fw.WatchList() {
		if p == dir || strings.HasPrefix(p, prefix) {
			_ = fw.Remove(p) // may be gone already: deleted, or moved itself
		}
	}
}

// hiddenPath reports whether a path is one the loader never reads,
// whatever lies under it.
func hiddenPath(p string) bool {
	for part := range strings.SplitSeq(p, "/") {
		if skipDir(part) {
			return true
		}
	}
	return false
}

// String returns "dir" and the directory's path.
func (d *Dir) String() string { return "dir " + d.root }

// Notify fires after the directory changed and was quiet for the debounce
// delay.
func (d *Dir) Notify() <-chan struct{} { return d.w.notify }

// Close stops watching.
func (d *Dir) Close() error {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	d.closed = true
	return d.w.close()
}

// Sync reads what changed since the last Sync and returns the directory's
// content.
func (d *Dir) Sync(ctx context.Context, prev *Tree) (*Tree, error) {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("%s: closed", d)
	}
	d.mu.Lock()
	dirty, rescan := d.dirty, d.rescan || d.cur == nil
	d.dirty, d.rescan = map[string]struct{}{}, false
	d.mu.Unlock()

	base := d.cur
	var (
		next             *dirState
		changed, removed []string
		err              error
	)
	switch {
	case rescan:
		next, changed, removed, err = d.scanAll(ctx, base)
	case len(dirty) > 0:
		next, changed, removed, err = d.apply(ctx, base, dirty)
	default:
		next = base
	}
	if err != nil {
		// What was half-read is dropped: read everything again next time.
		d.mu.Lock()
		d.rescan = true
		d.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", d, err)
	}
	d.cur = next
	if prev != nil && prev.Revision == next.rev {
		return prev, nil
	}
	t := &Tree{Revision: next.rev, Files: next.files}
	if prev != nil && base != nil && prev.Revision == base.rev {
		t.Changed, t.Removed = changed, removed
	} else {
		t.Changed, t.Removed = diffFiles(filesOf(prev), next.files)
	}
	return t, nil
}

// scanAll reads the whole directory, watching every directory in it.
func (d *Dir) scanAll(ctx context.Context, base *dirState) (*dirState, []string, []string, error) {
	dirs := map[string]bool{}
	files, err := scanTree(ctx, d.root, "", func(rel, abs string) error {
		dirs[rel] = true
		return d.watch(abs)
	})
	if err != nil {
		return nil, nil, nil, err
	}
	d.dirs = dirs
	var baseFiles map[string]schema.File
	if base != nil {
		baseFiles = base.files
	}
	changed, removed := diffFiles(baseFiles, files)
	if base != nil && len(changed) == 0 && len(removed) == 0 {
		return base, nil, nil, nil
	}
	// Share the unchanged files' values with the previous state.
	for p, f := range baseFiles {
		if nf, ok := files[p]; ok && nf.Blob == f.Blob {
			files[p] = f
		}
	}
	var sum digest
	for p, f := range files {
		sum.add(entryDigest(p, f.Blob))
	}
	return &dirState{rev: sum.revision(), files: files, sum: sum}, changed, removed, nil
}

// watch adds a watch on a directory.
func (d *Dir) watch(abs string) error {
	if err := d.w.fs.Add(abs); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return fmt.Errorf("watch %s: %w (raise fs.inotify.max_user_watches)", abs, err)
		}
		return fmt.Errorf("watch %s: %w", abs, err)
	}
	return nil
}

// dirChange applies changed paths to a copy of a state.
type dirChange struct {
	d       *Dir
	base    map[string]schema.File
	files   map[string]schema.File // base until the first write
	cloned  bool
	sum     digest
	touched map[string]struct{}
}

// apply re-reads the dirty paths.
func (d *Dir) apply(ctx context.Context, base *dirState, dirty map[string]struct{}) (*dirState, []string, []string, error) {
	ch := &dirChange{d: d, base: base.files, files: base.files, sum: base.sum, touched: map[string]struct{}{}}
	for _, p := range slices.Sorted(maps.Keys(dirty)) {
		if err := ch.refresh(ctx, p); err != nil {
			return nil, nil, nil, err
		}
	}
	var changed, removed []string
	for p := range ch.touched {
		nf, inNew := ch.files[p]
		of, inOld := ch.base[p]
		switch {
		case inNew && (!inOld || of.Blob != nf.Blob):
			changed = append(changed, p)
		case inOld && !inNew:
			removed = append(removed, p)
		}
	}
	if len(changed) == 0 && len(removed) == 0 {
		return base, nil, nil, nil
	}
	slices.Sort(changed)
	slices.Sort(removed)
	return &dirState{rev: ch.sum.revision(), files: ch.files, sum: ch.sum}, changed, removed, nil
}

// refresh brings one path up to date: a file, a directory, or nothing.
func (ch *dirChange) refresh(ctx context.Context, p string) error {
	abs := filepath.Join(ch.d.root, filepath.FromSlash(p))
	fi, err := os.Lstat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		ch.drop(p)
		ch.dropDir(p)
	case err != nil:
		return err
	case fi.IsDir():
		ch.drop(p)
		return ch.scanDir(ctx, p, abs)
	case fi.Mode().IsRegular():
		ch.dropDir(p)
		if schema.KindOf(p) == schema.KindUnknown {
			return nil
		}
		data, err := os.ReadFile(abs)
		if errors.Is(err, fs.ErrNotExist) {
			ch.drop(p) // gone again; its removal is a later event
			return nil
		}
		if err != nil {
			return err
		}
		ch.set(p, abs, schema.BlobHash(data))
	default: // a symbolic link or a device: not read, like schema.ReadDir
		ch.drop(p)
		ch.dropDir(p)
	}
	return nil
}

// scanDir reads a directory that appeared (or changed) and watches it.
func (ch *dirChange) scanDir(ctx context.Context, p, abs string) error {
	d := ch.d
	known := d.dirs[p]
	seenDirs := map[string]bool{}
	files, err := scanTree(ctx, abs, p+"/", func(rel, abs string) error {
		seenDirs[rel] = true
		d.dirs[rel] = true
		return d.watch(abs)
	})
	if err != nil {
		return err
	}
	for q, f := range files {
		ch.set(q, filepath.Join(d.root, filepath.FromSlash(q)), f.Blob)
	}
	if !known {
		return nil
	}
	// The directory was there before: drop what it no longer holds.
	prefix := p + "/"
	for q := range ch.files {
		if _, ok := files[q]; !ok && strings.HasPrefix(q, prefix) {
			ch.drop(q)
		}
	}
	for q := range d.dirs {
		if strings.HasPrefix(q, prefix) && !seenDirs[q] {
			delete(d.dirs, q)
		}
	}
	return nil
}

func (ch *dirChange) write() {
	if !ch.cloned {
		ch.files = maps.Clone(ch.base)
		ch.cloned = true
	}
}

// set records the blob of the file p.
func (ch *dirChange) set(p, abs, blob string) {
	old, ok := ch.files[p]
	if ok && old.Blob == blob {
		return
	}
	ch.write()
	if ok {
		ch.sum.sub(entryDigest(p, old.Blob))
	}
	if b, ok := ch.base[p]; ok && b.Blob == blob {
		ch.files[p] = b // back to what it was: share it
	} else {
		ch.files[p] = dirFile(p, abs, blob)
	}
	ch.sum.add(entryDigest(p, blob))
	ch.touched[p] = struct{}{}
}

// drop removes the file p, if known.
func (ch *dirChange) drop(p string) {
	old, ok := ch.files[p]
	if !ok {
		return
	}
	ch.write()
	delete(ch.files, p)
	ch.sum.sub(entryDigest(p, old.Blob))
	ch.touched[p] = struct{}{}
}

// dropDir removes every file under p, if p was a directory. (Its watches
// went when the event came: see unwatch.)
func (ch *dirChange) dropDir(p string) {
	d := ch.d
	if !d.dirs[p] {
		return
	}
	prefix := p + "/"
	for q := range d.dirs {
		if q == p || strings.HasPrefix(q, prefix) {
			delete(d.dirs, q)
		}
	}
	for q := range ch.files {
		if strings.HasPrefix(q, prefix) {
			ch.drop(q)
		}
	}
}

// dirFile returns the File of a directory's file. Open refuses content
// that is not the blob that was hashed (the file changed since, and the
// change's event brings a new revision): the loader caches validation by
// blob, and must never cache one content under another's hash.
func dirFile(p, abs, blob string) schema.File {
	return schema.File{Path: p, Blob: blob, Open: func() ([]byte, error) {
		data, err := os.ReadFile(abs)
		if err != nil {
			return nil, err
		}
		if schema.BlobHash(data) != blob {
			return nil, fmt.Errorf("%s changed since it was read", abs)
		}
		return data, nil
	}}
}

// scanTree reads the files the loader reads under dir, calling onDir for
// dir and each directory below before reading it. Keys are prefix + the
// slash-separated path relative to dir; onDir gets the same form of path
// without the trailing slash ("" for dir itself when prefix is "").
func scanTree(ctx context.Context, dir, prefix string, onDir func(rel, abs string) error) (map[string]schema.File, error) {
	type job struct{ rel, abs string }
	var jobs []job
	err := filepath.WalkDir(dir, func(abs string, e fs.DirEntry, err error) error {
		if err != nil {
			if abs != dir && errors.Is(err, fs.ErrNotExist) {
				return nil // gone while walking; its event follows
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, abs)
		if err != nil {
			return err
		}
		rel = prefix + filepath.ToSlash(rel)
		if abs == dir {
			rel = strings.TrimSuffix(prefix, "/")
		}
		if e.IsDir() {
			if abs != dir && skipDir(e.Name()) {
				return filepath.SkipDir
			}
			if onDir != nil {
				return onDir(rel, abs)
			}
			return nil
		}
		if e.Type().IsRegular() && schema.KindOf(rel) != schema.KindUnknown {
			jobs = append(jobs, job{rel, abs})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	blobs := make([]string, len(jobs))
	errs := make([]error, len(jobs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(jobs)) {
		wg.Go(func() {
			for {
				n := int(next.Add(1) - 1)
				if n >= len(jobs) || ctx.Err() != nil {
					return
				}
				data, err := os.ReadFile(jobs[n].abs)
				if err != nil {
					errs[n] = err
					continue
				}
				blobs[n] = schema.BlobHash(data)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	files := make(map[string]schema.File, len(jobs))
	for n, j := range jobs {
		switch {
		case errors.Is(errs[n], fs.ErrNotExist):
			// Removed while reading; its event follows.
		case errs[n] != nil:
			return nil, errs[n]
		default:
			files[j.rel] = dirFile(j.rel, j.abs, blobs[n])
		}
	}
	return files, nil
}

// ReadWorkTree returns the fleet in a directory (subdir of dir), as the
// directory source would: for `gitmetal plan` against the working tree.
// Its Revision is what a Dir of the same content reports.
func ReadWorkTree(dir, subdir string) (*Tree, error) {
	sub, err := cleanSubdir(subdir)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(dir, filepath.FromSlash(sub))
	files, err := scanTree(context.Background(), root, "", nil)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", root, err)
	}
	var sum digest
	for p, f := range files {
		sum.add(entryDigest(p, f.Blob))
	}
	t := &Tree{Revision: sum.revision(), Files: files}
	t.Changed, _ = diffFiles(nil, files)
	return t, nil
}

// digest is an order-independent digest of a path→blob map: the sum,
// modulo 2²⁵⁶, of the SHA-256 of each "path\x00blob". Adding or removing
// one entry updates it in constant time, so a change to one file in a large
// directory does not rehash the others.
type digest [4]uint64

func entryDigest(p, blob string) digest {
	h := sha256.Sum256([]byte(p + "\x00" + blob))
	return digest{
		binary.LittleEndian.Uint64(h[0:]), binary.LittleEndian.Uint64(h[8:]),
		binary.LittleEndian.Uint64(h[16:]), binary.LittleEndian.Uint64(h[24:]),
	}
}

func (d *digest) add(e digest) {
	var c uint64
	for i := range d {
		d[i], c = bits.Add64(d[i], e[i], c)
	}
}

func (d *digest) sub(e digest) {
	var b uint64
	for i := range d {
		d[i], b = bits.Sub64(d[i], e[i], b)
	}
}

// revision returns the Revision of a directory with this digest.
func (d digest) revision() string {
	var b [32]byte
	for i, v := range d {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	h := sha256.Sum256(b[:])
	return "dir:" + hex.EncodeToString(h[:])
}

package source

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/test/gittest"
	"github.com/google/go-cmp/cmp"
)

func newDirOK(t *testing.T, path string) *Dir {
	t.Helper()
	d, err := NewDir(DirConfig{Path: path})
	if err != nil {
		t.Fatalf("NewDir(%s): %v", path, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// syncUntil waits for the directory source's notifications and syncs from
// prev until the tree is what the directory holds, as ReadWorkTree reads
// it. Several notifications may come for one edit; each Sync is from prev,
// so Changed and Removed are the whole edit's.
func syncUntil(t *testing.T, d *Dir, prev *Tree) *Tree {
	t.Helper()
	want, err := ReadWorkTree(d.root, "")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case <-d.Notify():
		case <-deadline:
			t.Fatalf("no notification brought revision %s", want.Revision)
		}
		tree := syncOK(t, d, prev)
		if tree.Revision == want.Revision {
			if diff := cmp.Diff(blobs(want), blobs(tree)); diff != "" {
				t.Fatalf("files at %s (-want +got):\n%s", tree.Revision, diff)
			}
			checkFiles(t, tree)
			return tree
		}
	}
}

func TestDirSync(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFleet(t, dir)
	d := newDirOK(t, dir)
	path := func(p string) string { return filepath.Join(dir, filepath.FromSlash(p)) }

	t1 := syncOK(t, d, nil)
	wt, err := ReadWorkTree(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if t1.Revision != wt.Revision || !strings.HasPrefix(t1.Revision, "dir:") {
		t.Errorf("got revision %q, want %q", t1.Revision, wt.Revision)
	}
	if diff := cmp.Diff(blobs(wt), blobs(t1)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if len(t1.Files) != 6 {
		t.Errorf("got %d files, want the 6 fleet files: %v", len(t1.Files), sortedKeys(t1.Files))
	}
	wantDiff(t, t1, sortedKeys(t1.Files), nil)
	checkFiles(t, t1)
	if t1.Commit != nil {
		t.Errorf("got commit %+v, want none", t1.Commit)
	}
	if got := syncOK(t, d, t1); got != t1 {
		t.Error("sync with nothing new: got a new tree, want the previous one")
	}

	steps := []struct {
		name             string
		edit             func()
		changed, removed []string
	}{
		{
			name:    "write",
			edit:    func() { gittest.WriteFile(t, path("hardware/rack-a/node-1.cue"), "changed\n") },
			changed: []string{"hardware/rack-a/node-1.cue"},
		},
		{
			name: "rename a file",
			edit: func() {
				if err := os.Rename(path("hardware/rack-a/node-2.cue"), path("hardware/rack-b/node-2.cue")); err != nil {
					t.Fatal(err)
				}
			},
			changed: []string{"hardware/rack-b/node-2.cue"},
			removed: []string{"hardware/rack-a/node-2.cue"},
		},
		{
			name: "remove a file",
			edit: func() {
				if err := os.Remove(path("workflows/node-1.json")); err != nil {
					t.Fatal(err)
				}
			},
			removed: []string{"workflows/node-1.json"},
		},
		{
			name: "new subdirectories",
			edit: func() {
				gittest.WriteFile(t, path("hardware/rack-z/a.cue"), "a\n")
				gittest.WriteFile(t, path("hardware/rack-z/deep/b.cue"), "b\n")
			},
			changed: []string{"hardware/rack-z/a.cue", "hardware/rack-z/deep/b.cue"},
		},
		{
			name:    "write in a new subdirectory",
			edit:    func() { gittest.WriteFile(t, path("hardware/rack-z/deep/c.cue"), "c\n") },
			changed: []string{"hardware/rack-z/deep/c.cue"},
		},
		{
			name: "rename a directory",
			edit: func() {
				if err := os.Rename(path("hardware/rack-z"), path("hardware/rack-w")); err != nil {
					t.Fatal(err)
				}
			},
			changed: []string{"hardware/rack-w/a.cue", "hardware/rack-w/deep/b.cue", "hardware/rack-w/deep/c.cue"},
			removed: []string{"hardware/rack-z/a.cue", "hardware/rack-z/deep/b.cue", "hardware/rack-z/deep/c.cue"},
		},
		{
			name:    "write in a renamed directory",
			edit:    func() { gittest.WriteFile(t, path("hardware/rack-w/deep/b.cue"), "b2\n") },
			changed: []string{"hardware/rack-w/deep/b.cue"},
		},
		{
			name: "editor save: write a temporary file, rename it over",
			edit: func() {
				gittest.WriteFile(t, path("templates/.ubuntu.cue.swp"), "saved\n")
				if err := os.Rename(path("templates/.ubuntu.cue.swp"), path("templates/ubuntu.cue")); err != nil {
					t.Fatal(err)
				}
			},
			changed: []string{"templates/ubuntu.cue"},
		},
		{
			name: "remove a directory",
			edit: func() {
				if err := os.RemoveAll(path("hardware/rack-w")); err != nil {
					t.Fatal(err)
				}
			},
			removed: []string{"hardware/rack-w/a.cue", "hardware/rack-w/deep/b.cue", "hardware/rack-w/deep/c.cue"},
		},
		{
			name: "replace a directory",
			edit: func() {
				if err := os.RemoveAll(path("hardware/rack-b")); err != nil {
					t.Fatal(err)
				}
				gittest.WriteFile(t, path("hardware/rack-b/node-3.yaml"), "hardware:\n  name: node-3\n")
				gittest.WriteFile(t, path("hardware/rack-b/new.cue"), "new\n")
			},
			changed: []string{"hardware/rack-b/new.cue"},
			removed: []string{"hardware/rack-b/node-2.cue"},
		},
		{
			name: "a file becomes a directory",
			edit: func() {
				if err := os.Remove(path("gitmetal.cue")); err != nil {
					t.Fatal(err)
				}
				gittest.WriteFile(t, path("hardware/rack-b/node-3.yaml.d/x.cue"), "x\n")
				if err := os.Remove(path("hardware/rack-b/node-3.yaml")); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(path("hardware/rack-b/node-3.yaml.d"), path("hardware/rack-b/node-3.yaml")); err != nil {
					t.Fatal(err)
				}
			},
			changed: []string{"hardware/rack-b/node-3.yaml/x.cue"},
			removed: []string{"gitmetal.cue", "hardware/rack-b/node-3.yaml"},
		},
	}
	prev := t1
	for _, s := range steps {
		s.edit()
		next := syncUntil(t, d, prev)
		t.Logf("%s: %s", s.name, next.Revision)
		wantDiff(t, next, s.changed, s.removed)
		checkShared(t, prev, next)
		prev = next
	}

	// Files the loader does not read change nothing.
	gittest.WriteFile(t, path("README.md"), "changed\n")
	gittest.WriteFile(t, path("hardware/.hidden/y.cue"), "y\n")
	gittest.WriteFile(t, path("cue.mod/x.cue"), "x\n")
	time.Sleep(50 * time.Millisecond)
	if got := syncOK(t, d, prev); got != prev {
		t.Errorf("after writing files the loader does not read: got %s, want the previous tree", got.Revision)
	}

	// A lost event stream rescans everything, and finds nothing new.
	d.w.lost()
	if got := syncOK(t, d, prev); got != prev {
		t.Errorf("rescan of an unchanged directory: got %s, want the previous tree", got.Revision)
	}

	// A tree from long ago is diffed in full.
	back := syncOK(t, d, t1)
	wantChanged, wantRemoved := diffFiles(t1.Files, prev.Files)
	wantDiff(t, back, wantChanged, wantRemoved)
	all := syncOK(t, d, nil)
	wantDiff(t, all, sortedKeys(prev.Files), nil)

	// Open refuses content that is not the blob.
	f := prev.Files["hardware/rack-a/node-1.cue"]
	gittest.WriteFile(t, path("hardware/rack-a/node-1.cue"), "changed again\n")
	if _, err := f.Open(); err == nil || !strings.Contains(err.Error(), "changed since") {
		t.Errorf("open of a file changed since it was hashed: got %v, want an error", err)
	}
}

func TestDirClose(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFleet(t, dir)
	d, err := NewDir(DirConfig{Path: dir, Debounce: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	syncOK(t, d, nil)
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case <-d.w.done:
	default:
		t.Error("the watcher's goroutine is still running after Close")
	}
	if err := d.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := d.Sync(context.Background(), nil); err == nil {
		t.Error("sync after close: got no error")
	}
}

func TestDirConfigErrors(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "f")
	gittest.WriteFile(t, file, "x")
	for _, cfg := range []DirConfig{{}, {Path: filepath.Join(t.TempDir(), "missing")}, {Path: file}} {
		if d, err := NewDir(cfg); err == nil {
			d.Close()
			t.Errorf("NewDir(%+v): got no error", cfg)
		}
	}
}

func TestDigest(t *testing.T) {
	t.Parallel()
	var a, b digest
	entries := [][2]string{{"a", "1"}, {"b", "2"}, {"c", "3"}}
	for _, e := range entries {
		a.add(entryDigest(e[0], e[1]))
	}
	for i := len(entries) - 1; i >= 0; i-- {
		b.add(entryDigest(entries[i][0], entries[i][1]))
	}
	if a != b {
		t.Error("digest depends on the order of entries")
	}
	b.sub(entryDigest("b", "2"))
	b.add(entryDigest("b", "9"))
	if a == b {
		t.Error("digest did not change with an entry")
	}
	b.sub(entryDigest("b", "9"))
	b.add(entryDigest("b", "2"))
	if a != b || a.revision() != b.revision() {
		t.Error("digest did not come back when the entry did")
	}
	var empty digest
	if empty.revision() == a.revision() {
		t.Error("empty and non-empty directories have one revision")
	}
}

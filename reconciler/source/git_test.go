package source

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/gitmetal/gitmetal/test/gittest"
	"github.com/google/go-cmp/cmp"
)

// transport makes the configuration of a Git source following the upstream
// repository r in one of the ways a repository can be reached.
type remoteKind struct {
	name   string
	config func(t *testing.T, r *gittest.Repo) GitConfig
}

func transports() []remoteKind {
	return []remoteKind{
		{"local path", func(t *testing.T, r *gittest.Repo) GitConfig {
			return GitConfig{URL: r.Dir}
		}},
		{"file URL", func(t *testing.T, r *gittest.Repo) GitConfig {
			return GitConfig{URL: "file://" + r.Dir, Dir: filepath.Join(t.TempDir(), "clone")}
		}},
		{"smart HTTP", func(t *testing.T, r *gittest.Repo) GitConfig {
			srv := newGitServer(t, filepath.Dir(r.Dir), nil)
			return GitConfig{URL: srv.url(filepath.Base(r.Dir)), Dir: filepath.Join(t.TempDir(), "clone")}
		}},
	}
}

func newGitOK(t *testing.T, cfg GitConfig) *Git {
	t.Helper()
	g, err := NewGit(cfg)
	if err != nil {
		t.Fatalf("NewGit(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return g
}

// openID identifies the closure behind a File's Open: equal for a File
// value shared between trees, different for two Files made separately.
func openID(f func() ([]byte, error)) uintptr {
	return *(*uintptr)(unsafe.Pointer(&f))
}

// checkTree checks a git tree against what the git CLI says rev holds, and
// against a fresh full read of the revision.
func checkTree(t *testing.T, r *gittest.Repo, tree *Tree, rev, subdir string) {
	t.Helper()
	if tree.Revision != rev {
		t.Fatalf("got revision %s, want %s", tree.Revision, rev)
	}
	want := lsTree(r, rev, subdir)
	if diff := cmp.Diff(want, blobs(tree)); diff != "" {
		t.Errorf("files of %s (-git ls-tree +got):\n%s", rev, diff)
	}
	full, err := ReadRevision(r.Dir, rev, subdir)
	if err != nil {
		t.Fatalf("ReadRevision: %v", err)
	}
	if diff := cmp.Diff(blobs(full), blobs(tree)); diff != "" {
		t.Errorf("files of %s (-full read +incremental):\n%s", rev, diff)
	}
	checkFiles(t, tree)
}

// checkShared checks that the files of next that did not change are the
// very values of prev.
func checkShared(t *testing.T, prev, next *Tree) {
	t.Helper()
	changed := map[string]bool{}
	for _, p := range next.Changed {
		changed[p] = true
	}
	for p, f := range next.Files {
		if changed[p] {
			continue
		}
		old, ok := prev.Files[p]
		if !ok || openID(old.Open) != openID(f.Open) || old.Blob != f.Blob {
			t.Errorf("unchanged %s: not shared with the previous tree", p)
		}
	}
}

func TestGitSync(t *testing.T) {
	t.Parallel()
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			r := gittest.New(t, "main")
			writeFleet(t, r.Dir)
			c1 := r.Commit("first\n\nbody")
			g := newGitOK(t, tr.config(t, r))

			t1 := syncOK(t, g, nil)
			checkTree(t, r, t1, c1, "")
			wantDiff(t, t1, sortedKeys(lsTree(r, c1, "")), nil)
			if len(t1.Files) != 6 {
				t.Errorf("got %d files, want the 6 fleet files: %v", len(t1.Files), sortedKeys(t1.Files))
			}
			wantCommit := &Commit{Hash: c1, Author: "Test Author <author@example.com>", Summary: "first"}
			if diff := cmp.Diff(wantCommit, t1.Commit, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Time" }, cmp.Ignore())); diff != "" {
				t.Errorf("commit (-want +got):\n%s", diff)
			}
			if t1.Commit.Time.IsZero() || time.Since(t1.Commit.Time) > time.Hour {
				t.Errorf("got commit time %v, want about now", t1.Commit.Time)
			}

			// The loader's workers open files at once, while the next
			// Sync may run.
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() { checkFiles(t, t1) })
			}
			if got := syncOK(t, g, t1); got != t1 {
				t.Errorf("sync with nothing new: got a new tree %s, want the previous one", got.Revision)
			}
			wg.Wait()

			steps := []struct {
				name             string
				edit             func()
				changed, removed []string
			}{
				{
					name: "change, add and remove one file each",
					edit: func() {
						r.Write("hardware/rack-a/node-1.cue", "hardware: name: \"node-1\", labels: x: \"y\"\n")
						r.Write("hardware/rack-b/node-4.cue", "hardware: name: \"node-4\"\n")
						r.Remove("hardware/rack-a/node-2.cue")
					},
					changed: []string{"hardware/rack-a/node-1.cue", "hardware/rack-b/node-4.cue"},
					removed: []string{"hardware/rack-a/node-2.cue"},
				},
				{
					name: "only files the loader does not read",
					edit: func() {
						r.Write("README.md", "# changed\n")
						r.Write("docs/more.cue", "x: 1\n")
						r.Write("hardware/.hidden/y.cue", "y: 1\n")
					},
				},
				{
					name:    "rename a directory",
					edit:    func() { r.Git("mv", "hardware/rack-b", "hardware/rack-c") },
					changed: []string{"hardware/rack-c/node-3.yaml", "hardware/rack-c/node-4.cue"},
					removed: []string{"hardware/rack-b/node-3.yaml", "hardware/rack-b/node-4.cue"},
				},
				{
					name: "a file becomes a directory",
					edit: func() {
						r.Remove("templates/ubuntu.cue")
						r.Write("templates/ubuntu.cue/x.cue", "template: name: \"x\"\n")
					},
					changed: []string{"templates/ubuntu.cue/x.cue"},
					removed: []string{"templates/ubuntu.cue"},
				},
				{
					name: "mode change and a symbolic link",
					edit: func() {
						if err := os.Chmod(filepath.Join(r.Dir, "gitmetal.cue"), 0o755); err != nil {
							t.Fatal(err)
						}
						if err := os.Symlink("node-1.cue", filepath.Join(r.Dir, "hardware/rack-a/link.cue")); err != nil {
							t.Fatal(err)
						}
					},
				},
				{
					name: "same content at a new path",
					edit: func() {
						r.Write("workflows/copy.json", "{\"workflow\": {\"name\": \"node-1\"}}\n")
					},
					changed: []string{"workflows/copy.json"},
				},
			}
			prev := t1
			for _, s := range steps {
				s.edit()
				rev := r.Commit(s.name)
				next := syncOK(t, g, prev)
				if next == prev {
					t.Fatalf("%s: got the previous tree, want revision %s", s.name, rev)
				}
				checkTree(t, r, next, rev, "")
				wantDiff(t, next, s.changed, s.removed)
				checkShared(t, prev, next)
				prev = next
			}
		})
	}
}

func TestGitSubdir(t *testing.T) {
	t.Parallel()
	r := gittest.New(t, "main")
	writeFleet(t, filepath.Join(r.Dir, "fleet"))
	r.Write("other/hardware/x/y.cue", "outside\n")
	c1 := r.Commit("first")

	for _, cfg := range []GitConfig{
		{URL: r.Dir, Path: "fleet"},
		{URL: filepath.Join(r.Dir, "fleet")}, // a path inside the working tree
		{URL: "file://" + r.Dir, Path: "/fleet/", Dir: t.TempDir()},
	} {
		g := newGitOK(t, cfg)
		t1 := syncOK(t, g, nil)
		checkTree(t, r, t1, c1, "fleet")
		if _, ok := t1.Files["hardware/rack-a/node-1.cue"]; !ok {
			t.Errorf("%s: got files %v, want them relative to the fleet path", g, sortedKeys(t1.Files))
		}

		r.Write("other/hardware/x/y.cue", "changed outside\n")
		c2 := r.Commit("outside " + g.String())
		t2 := syncOK(t, g, t1)
		checkTree(t, r, t2, c2, "fleet")
		wantDiff(t, t2, nil, nil)

		r.Write("fleet/hardware/rack-a/node-1.cue", "changed inside "+g.String()+"\n")
		c3 := r.Commit("inside " + g.String())
		t3 := syncOK(t, g, t2)
		checkTree(t, r, t3, c3, "fleet")
		wantDiff(t, t3, []string{"hardware/rack-a/node-1.cue"}, nil)
		c1 = c3
	}

	g := newGitOK(t, GitConfig{URL: r.Dir, Path: "missing"})
	if tree, err := g.Sync(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("sync of a missing fleet path: got %v, %v; want an error naming the path", tree, err)
	}
	if _, err := NewGit(GitConfig{URL: r.Dir, Path: "../x"}); err == nil {
		t.Error("NewGit with a path leaving the repository: got no error")
	}
}

func TestGitRefs(t *testing.T) {
	t.Parallel()
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			r := gittest.New(t, "main")
			writeFleet(t, r.Dir)
			c1 := r.Commit("first")
			r.Git("tag", "v1")
			r.Git("tag", "-a", "v2", "-m", "annotated")
			r.Git("branch", "dev")

			source := func(ref string) *Git {
				cfg := tr.config(t, r)
				cfg.Ref = ref
				return newGitOK(t, cfg)
			}
			refs := map[string]*Git{"v1": source("v1"), "v2": source("v2"), "sha": source(c1), "dev": source("dev"), "main": source("main")}
			trees := map[string]*Tree{}
			for name, g := range refs {
				trees[name] = syncOK(t, g, nil)
				checkTree(t, r, trees[name], c1, "")
			}

			r.Write("hardware/rack-a/node-1.cue", "main moved\n")
			c2 := r.Commit("second")
			want := map[string]string{"v1": c1, "v2": c1, "sha": c1, "dev": c1, "main": c2}
			for name, g := range refs {
				trees[name] = syncOK(t, g, trees[name])
				if got := trees[name].Revision; got != want[name] {
					t.Errorf("ref %s after a commit on main: got %s, want %s", name, got, want[name])
				}
			}

			r.Git("tag", "-f", "v1", c2)
			r.Git("tag", "-f", "-a", "v2", "-m", "moved", c2)
			r.Git("checkout", "-q", "dev")
			r.Write("hardware/rack-b/dev.cue", "dev\n")
			c3 := r.Commit("on dev")
			want = map[string]string{"v1": c2, "v2": c2, "sha": c1, "dev": c3, "main": c2}
			for name, g := range refs {
				next := syncOK(t, g, trees[name])
				checkTree(t, r, next, want[name], "")
				if name == "dev" {
					wantDiff(t, next, []string{"hardware/rack-b/dev.cue"}, nil)
				}
			}
		})
	}
}

func TestGitDefaultBranch(t *testing.T) {
	t.Parallel()
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			r := gittest.New(t, "trunk")
			writeFleet(t, r.Dir)
			r.Commit("first")
			r.Git("branch", "main") // a main that is not the default
			r.Write("gitmetal.cue", "settings: site: \"dc2\"\n")
			c2 := r.Commit("second")
			g := newGitOK(t, tr.config(t, r))
			checkTree(t, r, syncOK(t, g, nil), c2, "")
		})
	}
}

func TestGitRemoteDown(t *testing.T) {
	t.Parallel()
	r := gittest.New(t, "main")
	writeFleet(t, r.Dir)
	c1 := r.Commit("first")
	srv := newGitServer(t, filepath.Dir(r.Dir), nil)
	g := newGitOK(t, GitConfig{URL: srv.url(filepath.Base(r.Dir)), Dir: t.TempDir(), Timeout: 10 * time.Second})
	t1 := syncOK(t, g, nil)
	checkTree(t, r, t1, c1, "")

	srv.stop()
	r.Write("hardware/rack-a/node-1.cue", "changed\n")
	c2 := r.Commit("second")
	tree, err := g.Sync(context.Background(), t1)
	if err == nil {
		t.Fatalf("sync with the remote down: got revision %s, want an error", tree.Revision)
	}
	var verr *VerifyError
	if errors.As(err, &verr) || !strings.Contains(err.Error(), "fetch") {
		t.Errorf("sync with the remote down: got %v, want a fetch error", err)
	}

	srv.start()
	t2 := syncOK(t, g, t1)
	checkTree(t, r, t2, c2, "")
	wantDiff(t, t2, []string{"hardware/rack-a/node-1.cue"}, nil)
}

func TestGitBasicAuth(t *testing.T) {
	t.Parallel()
	r := gittest.New(t, "main")
	writeFleet(t, r.Dir)
	c1 := r.Commit("first")
	srv := newGitServer(t, filepath.Dir(r.Dir), func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if u, p, ok := req.BasicAuth(); !ok || u != "fleet" || p != "s3cret" {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, req)
		})
	})
	url := srv.url(filepath.Base(r.Dir))

	g := newGitOK(t, GitConfig{URL: url, Dir: t.TempDir()})
	if _, err := g.Sync(context.Background(), nil); err == nil {
		t.Error("sync without credentials: got no error")
	}
	g = newGitOK(t, GitConfig{URL: url, Dir: t.TempDir(), Auth: Auth{Username: "fleet", Password: "s3cret"}})
	checkTree(t, r, syncOK(t, g, nil), c1, "")

	withPassword := strings.Replace(url, "http://", "http://fleet:s3cret@", 1)
	g = newGitOK(t, GitConfig{URL: withPassword, Dir: t.TempDir()})
	if s := g.String(); strings.Contains(s, "s3cret") {
		t.Errorf("String() = %q, shows the password", s)
	}
}

func TestGitRestartReusesClone(t *testing.T) {
	t.Parallel()
	r := gittest.New(t, "main")
	writeFleet(t, r.Dir)
	c1 := r.Commit("first")
	clone := filepath.Join(t.TempDir(), "state", "repo")
	g := newGitOK(t, GitConfig{URL: "file://" + r.Dir, Dir: clone})
	syncOK(t, g, nil)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}

	// With the remote gone, a restart pinned to a synced commit needs
	// nothing from it.
	moved := r.Dir + ".moved"
	if err := os.Rename(r.Dir, moved); err != nil {
		t.Fatal(err)
	}
	g = newGitOK(t, GitConfig{URL: "file://" + r.Dir, Ref: c1, Dir: clone})
	if tree := syncOK(t, g, nil); tree.Revision != c1 {
		t.Errorf("restart from the clone: got %s, want %s", tree.Revision, c1)
	}
	g = newGitOK(t, GitConfig{URL: "file://" + r.Dir, Dir: clone})
	if _, err := g.Sync(context.Background(), nil); err == nil {
		t.Error("sync of a branch with the remote gone: got no error")
	}
	if err := os.Rename(moved, r.Dir); err != nil {
		t.Fatal(err)
	}
	r.Write("gitmetal.cue", "settings: site: \"dc3\"\n")
	c2 := r.Commit("second")
	checkTree(t, r, syncOK(t, g, nil), c2, "")

	// A clone directory that is not empty and not a repository is refused,
	// not wiped.
	other := t.TempDir()
	gittest.WriteFile(t, filepath.Join(other, "precious.txt"), "keep me\n")
	g = newGitOK(t, GitConfig{URL: "file://" + r.Dir, Dir: other})
	if _, err := g.Sync(context.Background(), nil); err == nil {
		t.Error("sync into a foreign directory: got no error")
	}
	if _, err := os.Stat(filepath.Join(other, "precious.txt")); err != nil {
		t.Errorf("foreign directory: %v", err)
	}
}

func TestGitNotifyLocal(t *testing.T) {
	t.Parallel()
	r := gittest.New(t, "main")
	writeFleet(t, r.Dir)
	r.Commit("first")
	g := newGitOK(t, GitConfig{URL: r.Dir})
	if g.Notify() == nil {
		t.Fatal("Notify of a local repository: got nil")
	}
	t1 := syncOK(t, g, nil)
	for _, step := range []struct {
		name string
		do   func() string
	}{
		{"commit", func() string {
			r.Write("hardware/rack-a/node-1.cue", "changed\n")
			return r.Commit("second")
		}},
		{"new branch checked out", func() string {
			r.Git("checkout", "-q", "-b", "feature/x")
			r.Write("hardware/rack-a/node-9.cue", "new\n")
			return r.Commit("on a branch")
		}},
		{"packed refs", func() string {
			r.Git("checkout", "-q", "main")
			r.Git("pack-refs", "--all")
			return r.Git("rev-parse", "HEAD")
		}},
	} {
		// Drain a notification of an earlier step.
		select {
		case <-g.Notify():
		default:
		}
		want := step.do()
		select {
		case <-g.Notify():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no notification", step.name)
		}
		t1 = syncOK(t, g, t1)
		checkTree(t, r, t1, want, "")
	}

	cfg := GitConfig{URL: "file://" + r.Dir, Dir: t.TempDir()}
	if n := newGitOK(t, cfg).Notify(); n != nil {
		t.Error("Notify of a remote: got a channel, want nil")
	}
}

func TestGitLocalRepack(t *testing.T) {
	t.Parallel()
	r := gittest.New(t, "main")
	writeFleet(t, r.Dir)
	r.Commit("first")
	g := newGitOK(t, GitConfig{URL: r.Dir})
	t1 := syncOK(t, g, nil)

	// Objects move into a pack go-git has not indexed yet, and the loose
	// copies go.
	r.Write("hardware/rack-a/node-1.cue", "changed\n")
	c2 := r.Commit("second")
	r.Git("repack", "-a", "-d", "-q")
	r.Git("prune-packed")
	checkFiles(t, t1)
	t2 := syncOK(t, g, t1)
	checkTree(t, r, t2, c2, "")
	wantDiff(t, t2, []string{"hardware/rack-a/node-1.cue"}, nil)

	r.Write("hardware/rack-a/node-1.cue", "changed again\n")
	c3 := r.Commit("third")
	r.Git("gc", "-q", "--prune=now")
	t3 := syncOK(t, g, t2)
	checkTree(t, r, t3, c3, "")
}

func TestIsRepository(t *testing.T) {
	t.Parallel()
	r := gittest.New(t, "main")
	writeFleet(t, r.Dir)
	r.Commit("first")
	for _, tc := range []struct {
		dir  string
		want bool
	}{
		{r.Dir, true},
		{filepath.Join(r.Dir, "hardware"), true},
		{filepath.Join(r.Dir, ".git"), true},
		{t.TempDir(), false},
		{filepath.Join(t.TempDir(), "missing"), false},
	} {
		if got := IsRepository(tc.dir); got != tc.want {
			t.Errorf("IsRepository(%s) = %v, want %v", tc.dir, got, tc.want)
		}
	}
}

func TestGitConfigErrors(t *testing.T) {
	t.Parallel()
	r := gittest.New(t, "main")
	for _, tc := range []struct {
		name string
		cfg  GitConfig
	}{
		{"no URL", GitConfig{}},
		{"remote without a clone directory", GitConfig{URL: "https://example.com/fleet.git"}},
		{"local path that is no repository", GitConfig{URL: t.TempDir()}},
		{"bad keyring", GitConfig{URL: r.Dir, Keyring: "not a key"}},
	} {
		if g, err := NewGit(tc.cfg); err == nil {
			g.Close()
			t.Errorf("%s: got no error", tc.name)
		}
	}
}

func TestReadRevision(t *testing.T) {
	t.Parallel()
	r := gittest.New(t, "main")
	writeFleet(t, filepath.Join(r.Dir, "fleet"))
	c1 := r.Commit("first")
	r.Git("tag", "-a", "v1", "-m", "one")
	r.Write("fleet/hardware/rack-a/node-1.cue", "changed\n")
	c2 := r.Commit("second")
	r.Write("fleet/hardware/rack-a/node-1.cue", "not committed\n")

	for _, tc := range []struct{ rev, want string }{
		{"", c2}, {"HEAD", c2}, {"main", c2}, {"HEAD~1", c1}, {"v1", c1}, {c1, c1}, {c1[:10], c1},
	} {
		tree, err := ReadRevision(r.Dir, tc.rev, "fleet")
		if err != nil {
			t.Errorf("ReadRevision(%q): %v", tc.rev, err)
			continue
		}
		checkTree(t, r, tree, tc.want, "fleet")
		if tree.Commit == nil || tree.Commit.Hash != tc.want {
			t.Errorf("ReadRevision(%q): got commit %+v, want %s", tc.rev, tree.Commit, tc.want)
		}
		wantDiff(t, tree, sortedKeys(tree.Files), nil)
	}
	if _, err := ReadRevision(r.Dir, "nope", ""); err == nil {
		t.Error("ReadRevision of an unknown revision: got no error")
	}

	wt, err := ReadWorkTree(r.Dir, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, wt)
	want := lsTree(r, c2, "fleet")
	want["hardware/rack-a/node-1.cue"] = r.Git("hash-object", "fleet/hardware/rack-a/node-1.cue")
	if diff := cmp.Diff(want, blobs(wt)); diff != "" {
		t.Errorf("work tree (-want +got):\n%s", diff)
	}
	d, err := NewDir(DirConfig{Path: filepath.Join(r.Dir, "fleet")})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := syncOK(t, d, nil).Revision; got != wt.Revision || !strings.HasPrefix(got, "dir:") {
		t.Errorf("directory source revision %s, work tree revision %s: want equal, dir:...", got, wt.Revision)
	}
}

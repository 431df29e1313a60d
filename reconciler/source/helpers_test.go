package source

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/cgi"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/gittest"
	"github.com/google/go-cmp/cmp"
)

// The sources implement Source.
var (
	_ Source = (*Git)(nil)
	_ Source = (*Dir)(nil)
)

// lsTree returns what git says the fleet of r at rev under subdir is: path
// (relative to subdir) → blob, for the files the loader reads.
func lsTree(r *gittest.Repo, rev, subdir string) map[string]string {
	r.T.Helper()
	out := r.Git("ls-tree", "-r", "--full-tree", rev)
	m := map[string]string{}
	for line := range strings.Lines(out) {
		meta, p, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "\t")
		f := strings.Fields(meta)
		if !ok || len(f) != 3 || f[1] != "blob" || f[0] == "120000" {
			continue
		}
		if subdir != "" {
			var found bool
			if p, found = strings.CutPrefix(p, subdir+"/"); !found {
				continue
			}
		}
		if schema.KindOf(p) != schema.KindUnknown {
			m[p] = f[2]
		}
	}
	return m
}

// blobs returns a tree's path → blob map.
func blobs(t *Tree) map[string]string {
	m := make(map[string]string, len(t.Files))
	for p, f := range t.Files {
		m[p] = f.Blob
	}
	return m
}

// checkFiles checks that every File of a tree is well formed and that its
// content is its blob.
func checkFiles(t testing.TB, tree *Tree) {
	t.Helper()
	for p, f := range tree.Files {
		if f.Path != p || f.Data != nil || f.Open == nil {
			t.Errorf("file %q: got Path %q, Data %v, Open set %v; want the key, nil, true", p, f.Path, f.Data, f.Open != nil)
			continue
		}
		data, err := f.Open()
		if err != nil {
			t.Errorf("open %s: %v", p, err)
			continue
		}
		if got := schema.BlobHash(data); got != f.Blob {
			t.Errorf("open %s: content hashes to %s, want the blob %s", p, got, f.Blob)
		}
	}
}

// sortedKeys returns the keys of m, sorted; nil for none.
func sortedKeys[V any](m map[string]V) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
}

// fleetFiles returns a small repository's content: fleet files of every
// kind and files the loader does not read.
func fleetFiles() map[string]string {
	return map[string]string{
		"gitmetal.cue":                  "settings: site: \"dc1\"\n",
		"hardware/rack-a/node-1.cue":    "hardware: name: \"node-1\"\n",
		"hardware/rack-a/node-2.cue":    "hardware: name: \"node-2\"\n",
		"hardware/rack-b/node-3.yaml":   "hardware:\n  name: node-3\n",
		"templates/ubuntu.cue":          "template: name: \"ubuntu\"\n",
		"workflows/node-1.json":         "{\"workflow\": {\"name\": \"node-1\"}}\n",
		"README.md":                     "# fleet\n",
		"docs/notes.cue":                "// not a fleet file\n",
		"hardware/.hidden/x.cue":        "hidden\n",
		"cue.mod/module.cue":            "module: \"example.com/fleet\"\n",
		"hardware/rack-a/node-1.cue.md": "notes\n",
	}
}

// writeFleet writes fleetFiles under dir.
func writeFleet(t testing.TB, dir string) {
	t.Helper()
	for p, c := range fleetFiles() {
		gittest.WriteFile(t, filepath.Join(dir, p), c)
	}
}

// gitServer is a smart-HTTP git server: git http-backend behind net/http/cgi,
// serving the repositories under root, on a loopback port that survives a
// stop and start.
type gitServer struct {
	t       testing.TB
	handler http.Handler
	addr    string

	mu  sync.Mutex
	srv *http.Server
}

func newGitServer(t testing.TB, root string, wrap func(http.Handler) http.Handler) *gitServer {
	t.Helper()
	var h http.Handler = &cgi.Handler{
		Path: gittest.NeedGitTool(t, "git-http-backend"),
		Env: []string{
			"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		},
	}
	if wrap != nil {
		h = wrap(h)
	}
	s := &gitServer{t: t, handler: h, addr: "127.0.0.1:0"}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// url returns the URL of the repository at path under the server's root.
func (s *gitServer) url(p string) string { return "http://" + s.addr + "/" + p }

func (s *gitServer) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var (
		ln  net.Listener
		err error
	)
	// The port of a server just closed can take a moment to be free.
	for range 50 {
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.srv = &http.Server{Handler: s.handler}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.t.Errorf("git server: %v", err)
		}
	}()
}

func (s *gitServer) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.srv.Close()
		s.srv = nil
	}
}

// syncOK syncs and fails the test on error.
func syncOK(t testing.TB, src Source, prev *Tree) *Tree {
	t.Helper()
	tree, err := src.Sync(context.Background(), prev)
	if err != nil {
		t.Fatalf("sync %s: %v", src, err)
	}
	return tree
}

// wantDiff checks a tree's Changed and Removed.
func wantDiff(t testing.TB, tree *Tree, changed, removed []string) {
	t.Helper()
	if diff := cmp.Diff(changed, tree.Changed); diff != "" {
		t.Errorf("Changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(removed, tree.Removed); diff != "" {
		t.Errorf("Removed (-want +got):\n%s", diff)
	}
}

// join is path.Join for the tests' slash paths.
func join(parts ...string) string { return path.Join(parts...) }

package source

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/fsnotify/fsnotify"
	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// GitConfig configures a Git source. Zero values take the documented
// defaults.
type GitConfig struct {
	// URL is the repository: https://, http://, ssh:// (or user@host:path),
	// file://, or the path of a local repository, which is read in place
	// (never cloned or written) and followed as its refs move.
	URL string
	// Ref is a branch, a tag, or a full 40-digit commit hash, which pins
	// the source. Default: the remote's HEAD (its default branch), else
	// "main"; for a local repository, its HEAD.
	Ref string
	// Path is the fleet root, a directory of the repository (default: its
	// root). For a local repository given by a path inside its working
	// tree, Path is relative to that path.
	Path string
	// Dir is where the clone of a remote repository is kept: a directory in
	// the state directory, reused across restarts so that a restart
	// fetches only what is new. Required unless URL is a local repository.
	// The source owns it: when it holds an unreadable repository (an
	// interrupted first clone) it is wiped and made anew.
	Dir string
	// Keyring is an armored OpenPGP public keyring. When set, the head and
	// every commit between the revision of the Tree given to Sync and the
	// head (git's prev..head) must be signed by a key of the ring, else Sync
	// returns a *VerifyError. With no previous Tree only the head is
	// checked; to resume the check after a restart, give the first Sync a
	// Tree with only Revision set to the last applied commit.
	Keyring string
	// Auth holds credentials for the remote.
	Auth Auth
	// Timeout bounds each fetch (default 1m).
	Timeout time.Duration
}

// Auth holds credentials for a remote repository; all optional.
type Auth struct {
	// Username and Password are HTTP basic credentials (http, https).
	Username, Password string
	// SSHKeyFile is a private key for ssh (the user is the URL's, default
	// "git"), SSHKeyPassphrase its passphrase. Without a key, ssh uses the
	// SSH agent.
	SSHKeyFile, SSHKeyPassphrase string
	// KnownHostsFile lists the ssh host keys to trust (default:
	// $SSH_KNOWN_HOSTS, ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts).
	KnownHostsFile string
}

// Git is a Source following a ref of a git repository.
type Git struct {
	cfg    GitConfig
	local  bool          // URL is a local repository, read in place
	subdir string        // fleet root relative to the repository root
	pin    plumbing.Hash // set when Ref is a commit hash
	auth   transport.AuthMethod
	w      *watcher // local only

	mu     sync.Mutex
	rp     *repo               // nil until the clone is opened
	store  *filesystem.Storage // the clone's storage, to close
	src    string              // the remote ref fetched
	closed bool
}

// localRef is where the clone keeps the fetched ref.
const localRef = plumbing.ReferenceName("refs/gitmetal/head")

// notifyDebounce is how long a local repository's refs must be quiet before
// Notify fires.
const notifyDebounce = 5 * time.Millisecond

// isSHA reports whether ref is a full commit hash.
func isSHA(ref string) bool {
	if len(ref) != 40 {
		return false
	}
	for _, c := range ref {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// NewGit returns a Git source. A local repository is opened at once (and
// its refs watched); a remote one is cloned or fetched by the first Sync.
func NewGit(cfg GitConfig) (*Git, error) {
	if cfg.URL == "" {
		return nil, errors.New("git source: no repository URL")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	subdir, err := cleanSubdir(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("git source: %w", err)
	}
	g := &Git{cfg: cfg, subdir: subdir, src: cfg.Ref}
	if g.src == "" {
		g.src = "HEAD"
	}
	if isSHA(cfg.Ref) {
		g.pin = plumbing.NewHash(cfg.Ref)
	}
	if cfg.Keyring != "" {
		ring, err := openpgp.ReadArmoredKeyRing(strings.NewReader(cfg.Keyring))
		if err != nil {
			return nil, fmt.Errorf("git source: read keyring: %w", err)
		}
		if len(ring) == 0 {
			return nil, errors.New("git source: keyring holds no key")
		}
	}
	ep, err := transport.NewEndpoint(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("git source: %w", err)
	}
	g.local = ep.Protocol == "file" && !strings.HasPrefix(cfg.URL, "file://")
	if !g.local {
		if cfg.Dir == "" {
			return nil, fmt.Errorf("git source %s: no directory for the clone", g)
		}
		if g.auth, err = authMethod(ep, cfg.Auth); err != nil {
			return nil, fmt.Errorf("git source %s: %w", g, err)
		}
		return g, nil
	}
	r, prefix, err := openLocal(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("git source: %w", err)
	}
	g.subdir = path.Join(prefix, subdir)
	g.rp = &repo{r: r, shared: true}
	if g.pin.IsZero() {
		if g.w, err = watchRefs(r); err != nil {
			return nil, fmt.Errorf("git source %s: watch refs: %w", g, err)
		}
	}
	return g, nil
}

// IsRepository reports whether dir is in a git repository (a working tree
// or a bare repository, or a directory inside one), which NewGit reads in
// place.
func IsRepository(dir string) bool {
	_, _, err := openLocal(dir)
	return err == nil
}

// openLocal opens the repository at or above dir, and returns the path of
// dir relative to its working tree ("" for the root or a bare repository).
func openLocal(dir string) (*git.Repository, string, error) {
	r, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	if err != nil {
		return nil, "", fmt.Errorf("open repository %s: %w", dir, err)
	}
	wt, err := r.Worktree()
	if err != nil {
		return r, "", nil // bare
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", err
	}
	root := wt.Filesystem.Root()
	if p, err := filepath.EvalSymlinks(abs); err == nil {
		abs = p
	}
	if p, err := filepath.EvalSymlinks(root); err == nil {
		root = p
	}
	rel, err := filepath.Rel(root, abs)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return r, "", nil
	}
	return r, filepath.ToSlash(rel), nil
}

// watchRefs watches a local repository's HEAD, packed-refs and refs
// directories.
func watchRefs(r *git.Repository) (*watcher, error) {
	st, ok := r.Storer.(*filesystem.Storage)
	if !ok {
		return nil, errors.New("not a filesystem repository")
	}
	gitdir := filepath.Clean(st.Filesystem().Root())
	var addTree func(fw *fsnotify.Watcher, dir string) error
	addTree = func(fw *fsnotify.Watcher, dir string) error {
		return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() {
				return fw.Add(p)
			}
			return nil
		})
	}
	accept := func(fw *fsnotify.Watcher, ev fsnotify.Event) bool {
		base := filepath.Base(ev.Name)
		if strings.HasSuffix(base, ".lock") || ev.Op == fsnotify.Chmod {
			return false
		}
		if filepath.Dir(ev.Name) == gitdir {
			return base == "HEAD" || base == "packed-refs"
		}
		if ev.Has(fsnotify.Create) {
			if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
				_ = addTree(fw, ev.Name) // best effort: polling still finds the ref
			}
		}
		return true
	}
	w, err := newWatcher(notifyDebounce, accept, func() {})
	if err != nil {
		return nil, err
	}
	if err := w.fs.Add(gitdir); err != nil {
		w.close()
		return nil, err
	}
	if err := addTree(w.fs, filepath.Join(gitdir, "refs")); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func authMethod(ep *transport.Endpoint, a Auth) (transport.AuthMethod, error) {
	switch ep.Protocol {
	case "http", "https":
		if a.Username != "" || a.Password != "" {
			return &githttp.BasicAuth{Username: a.Username, Password: a.Password}, nil
		}
	case "ssh":
		if a.SSHKeyFile == "" {
			return nil, nil
		}
		user := ep.User
		if user == "" {
			user = "git"
		}
		k, err := gitssh.NewPublicKeysFromFile(user, a.SSHKeyFile, a.SSHKeyPassphrase)
		if err != nil {
			return nil, fmt.Errorf("ssh key: %w", err)
		}
		if a.KnownHostsFile != "" {
			cb, err := gitssh.NewKnownHostsCallback(a.KnownHostsFile)
			if err != nil {
				return nil, fmt.Errorf("ssh known hosts: %w", err)
			}
			k.HostKeyCallback = cb
		}
		return k, nil
	}
	return nil, nil
}

// String returns the URL (without password), ref and path.
func (g *Git) String() string {
	s := g.cfg.URL
	if u, err := url.Parse(s); err == nil && u.User != nil {
		s = u.Redacted()
	}
	var opts []string
	if g.cfg.Ref != "" {
		opts = append(opts, "ref "+g.cfg.Ref)
	}
	if g.cfg.Path != "" {
		opts = append(opts, "path "+g.cfg.Path)
	}
	if len(opts) > 0 {
		s += " (" + strings.Join(opts, ", ") + ")"
	}
	return s
}

// Notify fires when a local repository's refs change; nil for a remote or
// a pinned commit, which must be polled.
func (g *Git) Notify() <-chan struct{} {
	if g.w == nil {
		return nil
	}
	return g.w.notify
}

// Close stops watching and closes the clone's files.
func (g *Git) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	var errs []error
	if g.w != nil {
		errs = append(errs, g.w.close())
	}
	if g.store != nil {
		g.rp.mu.Lock()
		errs = append(errs, g.store.Close())
		g.rp.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Sync fetches the ref (for a remote), checks signatures when a keyring is
// set, and returns the fleet at the head, diffed top-down from prev.
func (g *Git) Sync(ctx context.Context, prev *Tree) (*Tree, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, fmt.Errorf("git source %s: closed", g)
	}
	if err := g.openLocked(); err != nil {
		return nil, err
	}
	rp := g.rp
	rp.mu.Lock()
	defer rp.mu.Unlock()
	head, err := g.headLocked(ctx)
	if err != nil {
		return nil, err
	}
	if prev != nil && prev.owner == g && prev.Revision == head.String() {
		return prev, nil
	}
	c, err := rp.commitLocked(head)
	if err != nil {
		return nil, err
	}
	if g.cfg.Keyring != "" {
		var from plumbing.Hash
		if prev != nil && isSHA(prev.Revision) {
			from = plumbing.NewHash(prev.Revision)
		}
		if err := rp.verifyLocked(g.cfg.Keyring, from, c); err != nil {
			return nil, err
		}
	}
	root, err := rp.rootLocked(c, g.subdir)
	if err != nil {
		return nil, err
	}
	return rp.buildLocked(g, prev, c, root)
}

// openLocked opens the clone of a remote, making it when it does not
// exist.
func (g *Git) openLocked() error {
	if g.rp != nil {
		return nil
	}
	st, r, err := openClone(g.cfg.Dir)
	if err != nil {
		return fmt.Errorf("git source %s: clone in %s: %w", g, g.cfg.Dir, err)
	}
	rc, err := r.Remote(git.DefaultRemoteName)
	if err == nil && (len(rc.Config().URLs) == 0 || rc.Config().URLs[0] != g.cfg.URL) {
		err = r.DeleteRemote(git.DefaultRemoteName)
		if err == nil {
			err = git.ErrRemoteNotFound
		}
	}
	if errors.Is(err, git.ErrRemoteNotFound) {
		_, err = r.CreateRemote(&config.RemoteConfig{Name: git.DefaultRemoteName, URLs: []string{g.cfg.URL}})
	}
	if err != nil {
		st.Close()
		return fmt.Errorf("git source %s: set remote: %w", g, err)
	}
	g.rp, g.store = &repo{r: r}, st
	return nil
}

// isGitDirEntry reports whether name is one a git directory holds: a
// directory with only these may be wiped and made anew.
func isGitDirEntry(name string) bool {
	switch name {
	case "HEAD", "config", "objects", "refs", "packed-refs", "description",
		"hooks", "info", "branches", "shallow", "FETCH_HEAD", "logs", "index":
		return true
	}
	return false
}

// openClone opens the bare repository in dir, or makes one when dir is
// empty, missing, or holds a broken git directory.
func openClone(dir string) (*filesystem.Storage, *git.Repository, error) {
	newStorage := func() *filesystem.Storage {
		return filesystem.NewStorageWithOptions(osfs.New(dir), cache.NewObjectLRUDefault(),
			filesystem.Options{ExclusiveAccess: true, KeepDescriptors: true})
	}
	st := newStorage()
	r, err := git.Open(st, nil)
	if err == nil {
		return st, r, nil
	}
	st.Close()
	entries, rerr := os.ReadDir(dir)
	if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		return nil, nil, rerr
	}
	for _, e := range entries {
		if !isGitDirEntry(e.Name()) {
			return nil, nil, fmt.Errorf("not a git repository and not empty (%s): %w", e.Name(), err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	st = newStorage()
	r, err = git.Init(st, nil)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, r, nil
}

// headLocked returns the commit the ref names now, fetching it first from a
// remote.
func (g *Git) headLocked(ctx context.Context) (plumbing.Hash, error) {
	rp := g.rp
	if !g.pin.IsZero() {
		if _, err := rp.commitLocked(g.pin); err == nil {
			return g.pin, nil
		}
		if g.local {
			return plumbing.ZeroHash, fmt.Errorf("git source %s: commit %s not found", g, g.pin)
		}
		// Servers refuse to send an unadvertised commit by default: fetch
		// the branches and tags and look for it among them.
		err := g.fetchLocked(ctx, "+refs/heads/*:refs/gitmetal/heads/*", "+refs/tags/*:refs/gitmetal/tags/*")
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if _, err := rp.commitLocked(g.pin); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("git source %s: commit %s is on no branch or tag: %w", g, g.pin, err)
		}
		return g.pin, nil
	}
	if g.local {
		h, err := rp.r.ResolveRevision(plumbing.Revision(g.src))
		if err != nil && rp.reindexLocked() {
			// The commit may be in a pack written since go-git listed
			// them, which it reports as a missing reference.
			h, err = rp.r.ResolveRevision(plumbing.Revision(g.src))
		}
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("git source %s: resolve %s: %w", g, g.src, err)
		}
		return *h, nil
	}
	err := g.fetchLocked(ctx, "+"+g.src+":"+string(localRef))
	if errors.Is(err, git.NoMatchingRefSpecError{}) && g.cfg.Ref == "" && g.src == "HEAD" {
		// A server that does not advertise HEAD: fall back to main.
		if err = g.fetchLocked(ctx, "+main:"+string(localRef)); err == nil {
			g.src = "main"
		}
	}
	if errors.Is(err, git.NoMatchingRefSpecError{}) {
		return plumbing.ZeroHash, fmt.Errorf("git source %s: ref %q not found", g, g.src)
	}
	if err != nil {
		return plumbing.ZeroHash, err
	}
	ref, err := rp.r.Storer.Reference(localRef)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("git source %s: %w", g, err)
	}
	h, err := rp.peelLocked(ref.Hash())
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("git source %s: ref %s: %w", g, g.src, err)
	}
	return h, nil
}

// fetchLocked fetches refspecs from the remote, within the timeout.
func (g *Git) fetchLocked(ctx context.Context, specs ...string) error {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	refSpecs := make([]config.RefSpec, len(specs))
	for i, s := range specs {
		refSpecs[i] = config.RefSpec(s)
	}
	err := g.rp.r.FetchContext(ctx, &git.FetchOptions{
		RefSpecs: refSpecs,
		Auth:     g.auth,
		Tags:     git.NoTags,
		Force:    true,
	})
	if err == nil || errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	if errors.Is(err, git.NoMatchingRefSpecError{}) {
		return err
	}
	return fmt.Errorf("git source %s: fetch: %w", g, err)
}

// ReadRevision returns the fleet at a revision (a branch, tag, commit hash,
// HEAD~1, ... as git rev-parse reads them; default HEAD) of the local
// repository at or above repoDir. subdir is the fleet root relative to
// repoDir. Every file is Changed.
func ReadRevision(repoDir, rev, subdir string) (*Tree, error) {
	sub, err := cleanSubdir(subdir)
	if err != nil {
		return nil, err
	}
	r, prefix, err := openLocal(repoDir)
	if err != nil {
		return nil, err
	}
	if rev == "" {
		rev = "HEAD"
	}
	h, err := r.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		return nil, fmt.Errorf("resolve %s in %s: %w", rev, repoDir, err)
	}
	rp := &repo{r: r}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	c, err := rp.commitLocked(*h)
	if err != nil {
		return nil, err
	}
	root, err := rp.rootLocked(c, path.Join(prefix, sub))
	if err != nil {
		return nil, err
	}
	return rp.buildLocked(rp, nil, c, root)
}

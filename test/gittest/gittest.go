// Package gittest makes real git repositories, and real GnuPG keys to sign
// their commits, for tests. Everything runs the git and gpg command-line
// tools in the test's temporary directories, isolated from the user's
// configuration.
//
// A tool that is missing skips the test, unless CI=true: then it fails it,
// so CI never reports a skipped test as passing.
package gittest

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// NeedTool returns the path of a program the test needs. A missing program
// skips the test, or fails it when CI=true.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, name, err)
	}
	return p
}

// NeedGitTool returns the path of a program of git's own, in its exec path
// (git-http-backend, say), that the test needs. A missing program skips
// the test, or fails it when CI=true.
func NeedGitTool(t testing.TB, name string) string {
	t.Helper()
	NeedTool(t, "git")
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), name)
	if _, err := os.Stat(p); err != nil {
		missing(t, name, err)
	}
	return p
}

// missing skips the test for want of the program name, or fails it when
// CI=true.
func missing(t testing.TB, name string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required: %v", name, err)
	}
	t.Skipf("%s not found: %v", name, err)
}

// Env is the environment git runs in: the test's own, without the user's
// git configuration, with fixed identities.
func Env(extra ...string) []string {
	return append(append(os.Environ(),
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Test Author", "GIT_AUTHOR_EMAIL=author@example.com",
		"GIT_COMMITTER_NAME=Test Committer", "GIT_COMMITTER_EMAIL=committer@example.com",
	), extra...)
}

// Repo is a git working tree made with the git CLI.
type Repo struct {
	T   testing.TB
	Dir string
	env []string
}

// New makes an empty repository on branch in a temporary directory.
func New(t testing.TB, branch string) *Repo {
	t.Helper()
	NeedTool(t, "git")
	r := &Repo{T: t, Dir: t.TempDir(), env: Env()}
	r.Git("init", "-q", "-b", branch)
	return r
}

// Git runs git in the repository and returns its trimmed output.
func (r *Repo) Git(args ...string) string {
	r.T.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = r.Dir
	cmd.Env = r.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		r.T.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}

// Write writes a file of the working tree (slash-separated path).
func (r *Repo) Write(p, content string) {
	r.T.Helper()
	WriteFile(r.T, filepath.Join(r.Dir, filepath.FromSlash(p)), content)
}

// Read reads a file of the working tree.
func (r *Repo) Read(p string) string {
	r.T.Helper()
	b, err := os.ReadFile(filepath.Join(r.Dir, filepath.FromSlash(p)))
	if err != nil {
		r.T.Fatal(err)
	}
	return string(b)
}

// Replace replaces old with new in a file of the working tree, failing the
// test when old is not there.
func (r *Repo) Replace(p, old, new string) {
	r.T.Helper()
	s := r.Read(p)
	if !strings.Contains(s, old) {
		r.T.Fatalf("%s does not contain %q", p, old)
	}
	r.Write(p, strings.Replace(s, old, new, 1))
}

// Remove removes a file or directory of the working tree.
func (r *Repo) Remove(p string) {
	r.T.Helper()
	if err := os.RemoveAll(filepath.Join(r.Dir, filepath.FromSlash(p))); err != nil {
		r.T.Fatal(err)
	}
}

// CopyDir copies the directory src into the working tree at dst ("" for
// the top).
func (r *Repo) CopyDir(src, dst string) {
	r.T.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		r.Write(filepath.ToSlash(filepath.Join(dst, rel)), string(b))
		return nil
	})
	if err != nil {
		r.T.Fatal(err)
	}
}

// Commit commits everything and returns the commit hash.
func (r *Repo) Commit(msg string, args ...string) string {
	r.T.Helper()
	r.Git("add", "-A")
	r.Git(append([]string{"commit", "-q", "--allow-empty", "-m", msg}, args...)...)
	return r.Git("rev-parse", "HEAD")
}

// CommitSigned commits everything signed by key of k ("" for unsigned).
func (r *Repo) CommitSigned(k *GPG, key, msg string) string {
	r.T.Helper()
	if key == "" {
		return r.Commit(msg)
	}
	defer r.signWith(k, key)()
	return r.Commit(msg, "-S")
}

// GitSigned runs git like Git, with key of k as the signing key: what the
// arguments sign (git merge -S, git tag -s) is signed by it.
func (r *Repo) GitSigned(k *GPG, key string, args ...string) string {
	r.T.Helper()
	defer r.signWith(k, key)()
	return r.Git(args...)
}

// signWith makes git sign with key of k, until the function it returns
// puts the environment back.
func (r *Repo) signWith(k *GPG, key string) (restore func()) {
	env := r.env
	r.env = append(Env("GNUPGHOME="+k.Home), "GIT_CONFIG_COUNT=2",
		"GIT_CONFIG_KEY_0=gpg.program", "GIT_CONFIG_VALUE_0=gpg",
		"GIT_CONFIG_KEY_1=user.signingkey", "GIT_CONFIG_VALUE_1="+key)
	return func() { r.env = env }
}

// WriteFile writes a file, making its directories.
func WriteFile(t testing.TB, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// GPG is a throwaway GnuPG home with signing keys.
type GPG struct {
	T    testing.TB
	Home string
}

// NewGPG makes a GnuPG home; its agent is stopped when the test ends.
func NewGPG(t testing.TB) *GPG {
	t.Helper()
	NeedTool(t, "gpg")
	NeedTool(t, "gpgconf")
	// A short home: the agent's socket path must fit in 108 bytes.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	k := &GPG{T: t, Home: home}
	t.Cleanup(func() {
		// Stop the agent gpg started for this home, and only it.
		cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
		_ = cmd.Run()
		os.RemoveAll(home)
	})
	return k
}

// Run runs gpg in the home and returns its output.
func (k *GPG) Run(args ...string) string {
	k.T.Helper()
	cmd := exec.Command("gpg", append([]string{"--batch", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+k.Home)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		k.T.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// NewKey makes an ed25519 signing key and returns its fingerprint.
func (k *GPG) NewKey(uid string) string {
	k.T.Helper()
	k.Run("--quick-gen-key", uid, "ed25519", "sign", "never")
	for line := range strings.Lines(k.Run("--list-keys", "--with-colons", uid)) {
		if f := strings.Split(line, ":"); f[0] == "fpr" {
			return f[9]
		}
	}
	k.T.Fatalf("no fingerprint for %s", uid)
	return ""
}

// Armored returns the armored public keys of fingerprints: a keyring.
func (k *GPG) Armored(fingerprints ...string) string {
	k.T.Helper()
	return k.Run(append([]string{"--armor", "--export"}, fingerprints...)...)
}

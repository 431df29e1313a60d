package source

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// gpgKeys is a throwaway GnuPG home with signing keys.
type gpgKeys struct {
	t    testing.TB
	home string
}

func newGPG(t testing.TB) *gpgKeys {
	t.Helper()
	needTool(t, "gpg")
	needTool(t, "gpgconf")
	// A short home: the agent's socket path must fit in 108 bytes.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	k := &gpgKeys{t: t, home: home}
	t.Cleanup(func() {
		// Stop the agent gpg started for this home, and only it.
		cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
		_ = cmd.Run()
		os.RemoveAll(home)
	})
	return k
}

func (k *gpgKeys) gpg(args ...string) string {
	k.t.Helper()
	cmd := exec.Command("gpg", append([]string{"--batch", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+k.home)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		k.t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// newKey makes an ed25519 signing key and returns its fingerprint.
func (k *gpgKeys) newKey(uid string) string {
	k.t.Helper()
	k.gpg("--quick-gen-key", uid, "ed25519", "sign", "never")
	for line := range strings.Lines(k.gpg("--list-keys", "--with-colons", uid)) {
		if f := strings.Split(line, ":"); f[0] == "fpr" {
			return f[9]
		}
	}
	k.t.Fatalf("no fingerprint for %s", uid)
	return ""
}

// commitSigned commits everything, signed by key ("" for unsigned).
func commitSigned(r *gitRepo, k *gpgKeys, key, msg string) string {
	r.t.Helper()
	if key == "" {
		return r.commit(msg)
	}
	env := r.env
	r.env = append(gitEnv("GNUPGHOME="+k.home), "GIT_CONFIG_COUNT=2",
		"GIT_CONFIG_KEY_0=gpg.program", "GIT_CONFIG_VALUE_0=gpg",
		"GIT_CONFIG_KEY_1=user.signingkey", "GIT_CONFIG_VALUE_1="+key)
	defer func() { r.env = env }()
	return r.commit(msg, "-S")
}

func wantVerifyError(t *testing.T, err error, revision, commit, reason string) {
	t.Helper()
	var verr *VerifyError
	if !errors.As(err, &verr) {
		t.Fatalf("got error %v, want a *VerifyError", err)
	}
	if verr.Revision != revision || verr.Commit != commit || !strings.Contains(verr.Reason, reason) {
		t.Errorf("got %+v, want revision %s, commit %s, reason with %q", verr, revision, commit, reason)
	}
	if msg := err.Error(); !strings.Contains(msg, commit) || !strings.Contains(msg, revision) {
		t.Errorf("error %q does not name commit %s and revision %s", msg, commit, revision)
	}
}

func TestSignedCommits(t *testing.T) {
	t.Parallel()
	k := newGPG(t)
	trusted := k.newKey("Trusted <trusted@example.com>")
	other := k.newKey("Other <other@example.com>")
	keyring := k.gpg("--armor", "--export", trusted)

	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t, "main")
			cfg := tr.config(t, r)
			cfg.Keyring = keyring
			g := newGitOK(t, cfg)
			ctx := context.Background()

			writeFleet(t, r.dir)
			c0 := commitSigned(r, k, "", "unsigned start")
			_, err := g.Sync(ctx, nil)
			wantVerifyError(t, err, c0, c0, "not signed")

			// History before the first synced head is its starting point.
			r.write("gitmetal.cue", "settings: site: \"a\"\n")
			c1 := commitSigned(r, k, trusted, "signed head")
			t1 := syncOK(t, g, nil)
			checkTree(t, r, t1, c1, "")

			// A signed range passes.
			r.write("gitmetal.cue", "settings: site: \"b\"\n")
			commitSigned(r, k, trusted, "two")
			r.write("gitmetal.cue", "settings: site: \"c\"\n")
			c3 := commitSigned(r, k, trusted, "three")
			t3 := syncOK(t, g, t1)
			checkTree(t, r, t3, c3, "")

			// An unsigned commit in the middle refuses the update.
			r.write("hardware/rack-a/node-1.cue", "unsigned change\n")
			bad := commitSigned(r, k, "", "unsigned")
			r.write("gitmetal.cue", "settings: site: \"d\"\n")
			c5 := commitSigned(r, k, trusted, "signed on top")
			got, err := g.Sync(ctx, t3)
			wantVerifyError(t, err, c5, bad, "not signed")
			if got != nil {
				t.Errorf("refused sync: got tree %s, want nil", got.Revision)
			}
			_, err = g.Sync(ctx, t3)
			wantVerifyError(t, err, c5, bad, "not signed")
			// After a restart, the applied revision alone resumes the check.
			restarted := newGitOK(t, cfg)
			_, err = restarted.Sync(ctx, &Tree{Revision: c3})
			wantVerifyError(t, err, c5, bad, "not signed")

			// A commit signed by a key outside the ring is refused too.
			r.git("reset", "-q", "--hard", c3)
			r.write("gitmetal.cue", "settings: site: \"e\"\n")
			stranger := commitSigned(r, k, other, "signed by another key")
			_, err = g.Sync(ctx, t3)
			wantVerifyError(t, err, stranger, stranger, "signature")

			// Rewritten history applies normally.
			r.git("reset", "-q", "--hard", c3)
			r.write("gitmetal.cue", "settings: site: \"f\"\n")
			c6 := commitSigned(r, k, trusted, "fixed")
			t6 := syncOK(t, g, t3)
			checkTree(t, r, t6, c6, "")
			wantDiff(t, t6, []string{"gitmetal.cue"}, nil)

			// A merge brings in an unsigned commit from a side branch.
			r.git("checkout", "-q", "-b", "side", c1)
			r.write("hardware/rack-b/side.cue", "side\n")
			side := commitSigned(r, k, "", "unsigned on a side branch")
			r.git("checkout", "-q", "main")
			r.env = append(gitEnv("GNUPGHOME="+k.home), "GIT_CONFIG_COUNT=2",
				"GIT_CONFIG_KEY_0=gpg.program", "GIT_CONFIG_VALUE_0=gpg",
				"GIT_CONFIG_KEY_1=user.signingkey", "GIT_CONFIG_VALUE_1="+trusted)
			r.git("merge", "-q", "-S", "--no-ff", "-m", "merge side", "side")
			r.env = gitEnv()
			merge := r.git("rev-parse", "HEAD")
			_, err = g.Sync(ctx, t6)
			wantVerifyError(t, err, merge, side, "not signed")

			// Going back to a signed ancestor is allowed.
			r.git("reset", "-q", "--hard", c3)
			t7 := syncOK(t, g, t6)
			checkTree(t, r, t7, c3, "")
		})
	}
}

package source

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gitmetal/gitmetal/test/gittest"
)

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
	k := gittest.NewGPG(t)
	trusted := k.NewKey("Trusted <trusted@example.com>")
	other := k.NewKey("Other <other@example.com>")
	keyring := k.Armored(trusted)

	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			r := gittest.New(t, "main")
			cfg := tr.config(t, r)
			cfg.Keyring = keyring
			g := newGitOK(t, cfg)
			ctx := context.Background()

			writeFleet(t, r.Dir)
			c0 := r.CommitSigned(k, "", "unsigned start")
			_, err := g.Sync(ctx, nil)
			wantVerifyError(t, err, c0, c0, "not signed")

			// History before the first synced head is its starting point.
			r.Write("gitmetal.cue", "settings: site: \"a\"\n")
			c1 := r.CommitSigned(k, trusted, "signed head")
			t1 := syncOK(t, g, nil)
			checkTree(t, r, t1, c1, "")

			// A signed range passes.
			r.Write("gitmetal.cue", "settings: site: \"b\"\n")
			r.CommitSigned(k, trusted, "two")
			r.Write("gitmetal.cue", "settings: site: \"c\"\n")
			c3 := r.CommitSigned(k, trusted, "three")
			t3 := syncOK(t, g, t1)
			checkTree(t, r, t3, c3, "")

			// An unsigned commit in the middle refuses the update.
			r.Write("hardware/rack-a/node-1.cue", "unsigned change\n")
			bad := r.CommitSigned(k, "", "unsigned")
			r.Write("gitmetal.cue", "settings: site: \"d\"\n")
			c5 := r.CommitSigned(k, trusted, "signed on top")
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
			r.Git("reset", "-q", "--hard", c3)
			r.Write("gitmetal.cue", "settings: site: \"e\"\n")
			stranger := r.CommitSigned(k, other, "signed by another key")
			_, err = g.Sync(ctx, t3)
			wantVerifyError(t, err, stranger, stranger, "signature")

			// Rewritten history applies normally.
			r.Git("reset", "-q", "--hard", c3)
			r.Write("gitmetal.cue", "settings: site: \"f\"\n")
			c6 := r.CommitSigned(k, trusted, "fixed")
			t6 := syncOK(t, g, t3)
			checkTree(t, r, t6, c6, "")
			wantDiff(t, t6, []string{"gitmetal.cue"}, nil)

			// A merge brings in an unsigned commit from a side branch.
			r.Git("checkout", "-q", "-b", "side", c1)
			r.Write("hardware/rack-b/side.cue", "side\n")
			side := r.CommitSigned(k, "", "unsigned on a side branch")
			r.Git("checkout", "-q", "main")
			r.GitSigned(k, trusted, "merge", "-q", "-S", "--no-ff", "-m", "merge side", "side")
			merge := r.Git("rev-parse", "HEAD")
			_, err = g.Sync(ctx, t6)
			wantVerifyError(t, err, merge, side, "not signed")

			// Going back to a signed ancestor is allowed.
			r.Git("reset", "-q", "--hard", c3)
			t7 := syncOK(t, g, t6)
			checkTree(t, r, t7, c3, "")
		})
	}
}

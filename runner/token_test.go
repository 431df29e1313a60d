package runner

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/reconciler/store"
)

func newTestRunner(t *testing.T, dir string, now func() time.Time) *Runner {
	t.Helper()
	r, err := New(Config{Store: store.TestStore(t, nil), StateDir: dir, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// The key is made once, 0600, and kept across restarts: tokens issued
// before a restart stay valid.
func TestSecretKeptAcrossRestarts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r1 := newTestRunner(t, dir, nil)
	tok := r1.issueToken("node-1", "r7", time.Now().Add(time.Hour))
	r1.Close()
	fi, err := os.Stat(filepath.Join(dir, SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != secretSize {
		t.Errorf("key file: mode %04o, %d bytes; want 0600, %d", fi.Mode().Perm(), fi.Size(), secretSize)
	}
	r2 := newTestRunner(t, dir, nil)
	c, err := r2.VerifyToken(tok)
	if err != nil || c.Machine != "node-1" || c.Run != "r7" {
		t.Errorf("token after a restart: %+v, %v; want node-1, r7", c, err)
	}
	if !bytes.Equal(r1.secret, r2.secret) {
		t.Error("the key changed across a restart")
	}
}

func TestSecretReadableByOthersRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, SecretFile), bytes.Repeat([]byte{1}, secretSize), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{Store: store.TestStore(t, nil), StateDir: dir})
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("New with a 0644 key: %v, want a refusal", err)
	}
}

func TestTokenVerify(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	r := newTestRunner(t, t.TempDir(), func() time.Time { return now })
	other := newTestRunner(t, t.TempDir(), func() time.Time { return now })
	tok := r.issueToken("node-1", "r1", now.Add(time.Hour))
	// The token rides on a kernel command line and in an iPXE script.
	if !regexp.MustCompile(`^[A-Za-z0-9._~-]+$`).MatchString(tok) {
		t.Errorf("token %q has characters outside [A-Za-z0-9._~-]", tok)
	}
	for _, tc := range []struct {
		name string
		tok  string
		r    *Runner
		want error
	}{
		{"valid", tok, r, nil},
		{"another daemon's key", tok, other, errTokenInvalid},
		{"expired", r.issueToken("node-1", "r1", now), r, errTokenExpired},
		{"machine swapped", strings.Replace(tok, b64.EncodeToString([]byte("node-1")), b64.EncodeToString([]byte("node-2")), 1), r, errTokenInvalid},
		{"expiry pushed", strings.Replace(tok, ".1800003600.", ".1900003600.", 1), r, errTokenInvalid},
		{"truncated", tok[:len(tok)-4], r, errTokenInvalid},
		{"empty", "", r, errTokenInvalid},
		{"too many parts", tok + ".x", r, errTokenInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.r.VerifyToken(tc.tok)
			if err != tc.want {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

package runner

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A token is "gm1.<machine>.<run>.<expiry>.<mac>": machine and run in
// unpadded base64url, expiry in Unix seconds, mac the HMAC-SHA256 of
// "gm1\x00machine\x00run\x00expiry" under the state directory's key. It has
// no spaces or quotes, so it rides on a kernel command line as is.
const tokenPrefix = "gm1"

const secretSize = 32

var b64 = base64.RawURLEncoding

// Claims are what a valid token says.
type Claims struct {
	Machine string
	Run     string
	Expiry  time.Time
}

// Token errors; both mean 403 to an agent.
var (
	errTokenInvalid = errors.New("invalid token")
	errTokenExpired = errors.New("token expired")
)

// loadSecret reads the token key at path, creating it (0600, 32 random
// bytes) the first time. A key readable by others is refused: whoever can
// read it can impersonate any machine.
func loadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createSecret(path)
	}
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("token key %s has mode %04o: it must be readable by its owner only (chmod 600)", path, fi.Mode().Perm())
	}
	if len(b) != secretSize {
		return nil, fmt.Errorf("token key %s: %d bytes, want %d", path, len(b), secretSize)
	}
	return b, nil
}

func createSecret(path string) ([]byte, error) {
	b := make([]byte, secretSize)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	// Written to a temporary file and renamed, so that a crash never
	// leaves a short key behind.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".agent-token-*")
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("token key: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("token key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("token key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	// Link, not rename: if another process created the key meanwhile,
	// keep theirs.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return loadSecret(path)
		}
		return nil, fmt.Errorf("token key: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return b, nil
}

func (r *Runner) mac(machine, run, expiry string) []byte {
	m := hmac.New(sha256.New, r.secret)
	m.Write([]byte(tokenPrefix + "\x00" + machine + "\x00" + run + "\x00" + expiry))
	return m.Sum(nil)
}

// issueToken returns a token for machine and run that expires at exp.
func (r *Runner) issueToken(machine, run string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return strings.Join([]string{
		tokenPrefix,
		b64.EncodeToString([]byte(machine)),
		b64.EncodeToString([]byte(run)),
		e,
		b64.EncodeToString(r.mac(machine, run, e)),
	}, ".")
}

// VerifyToken checks tok's signature and expiry and returns its claims.
func (r *Runner) VerifyToken(tok string) (Claims, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 5 || parts[0] != tokenPrefix {
		return Claims{}, errTokenInvalid
	}
	machine, err1 := b64.DecodeString(parts[1])
	run, err2 := b64.DecodeString(parts[2])
	sum, err3 := b64.DecodeString(parts[4])
	exp, err4 := strconv.ParseInt(parts[3], 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Claims{}, errTokenInvalid
	}
	if !hmac.Equal(sum, r.mac(string(machine), string(run), parts[3])) {
		return Claims{}, errTokenInvalid
	}
	c := Claims{Machine: string(machine), Run: string(run), Expiry: time.Unix(exp, 0)}
	if !r.now().Before(c.Expiry) {
		return c, errTokenExpired
	}
	return c, nil
}

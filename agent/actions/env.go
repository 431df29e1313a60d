package actions

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"math"
	"strconv"
	"strings"
	"time"
)

// params reads an action's environment. Errors are collected so that one
// failure names every bad variable.
type params struct {
	env  map[string]string
	errs []error
}

func newParams(env map[string]string) *params { return &params{env: env} }

func (p *params) fail(name, value, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("env %s=%q: %s", name, value, fmt.Sprintf(format, args...)))
}

func (p *params) err() error { return errors.Join(p.errs...) }

func (p *params) has(name string) bool {
	_, ok := p.env[name]
	return ok
}

func (p *params) str(name string) string { return p.env[name] }

func (p *params) required(name string) string {
	v := p.env[name]
	if strings.TrimSpace(v) == "" {
		p.errs = append(p.errs, fmt.Errorf("env %s: required", name))
	}
	return v
}

// boolean accepts what Tinkerbell's actions accept (strconv.ParseBool,
// plus yes/no/y/n).
func (p *params) boolean(name string, def bool) bool {
	v, ok := p.env[name]
	if !ok || v == "" {
		return def
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "t", "true", "yes", "y", "on":
		return true
	case "0", "f", "false", "no", "n", "off":
		return false
	}
	p.fail(name, v, "want true or false")
	return def
}

// seconds reads a whole number of seconds (Tinkerbell's form) or a Go
// duration.
func (p *params) seconds(name string, def time.Duration) time.Duration {
	v, ok := p.env[name]
	if !ok || v == "" {
		return def
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil && n > 0 && n < math.MaxInt32 {
		return time.Duration(n * float64(time.Second))
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return d
	}
	p.fail(name, v, "want a positive number of seconds or a duration such as 1m30s")
	return def
}

// minutes reads a positive number of minutes, at most a day (Tinkerbell's
// *_MINUTES variables); 0 when unset.
func (p *params) minutes(name string) time.Duration {
	v, ok := p.env[name]
	if !ok || v == "" {
		return 0
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || n <= 0 || n > 24*60 {
		p.fail(name, v, "want a number of minutes from 0 to 1440")
		return 0
	}
	return time.Duration(n * float64(time.Minute))
}

// id reads a uid or gid; -1 means "leave as is".
func (p *params) id(name string) int {
	v, ok := p.env[name]
	if !ok || v == "" {
		return -1
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == math.MaxUint32 {
		p.fail(name, v, "want a numeric id from 0 to 4294967294")
		return -1
	}
	return int(n)
}

// mode reads an octal permission ("0644", "644", "1777", "0o755").
func (p *params) mode(name string, def fs.FileMode) fs.FileMode {
	v, ok := p.env[name]
	if !ok || v == "" {
		return def
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(v, "0o"), "0O"), 8, 32)
	if err != nil || n > 0o7777 {
		p.fail(name, v, "want an octal mode from 0000 to 7777, such as 0644")
		return def
	}
	m := fs.FileMode(n & 0o777)
	if n&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// checksum is an expected digest.
type checksum struct {
	algo string // "" when none was given
	want []byte
}

func (c checksum) newHash() hash.Hash {
	switch c.algo {
	case "sha256":
		return sha256.New()
	case "sha512":
		return sha512.New()
	}
	return nil
}

// verify compares a digest with the expected one.
func (c checksum) verify(got []byte) error {
	if c.algo == "" {
		return nil
	}
	if string(got) != string(c.want) {
		return &ChecksumError{Algorithm: c.algo, Got: hex.EncodeToString(got), Want: hex.EncodeToString(c.want)}
	}
	return nil
}

// checksum reads "sha256:<hex>", "sha512:<hex>" or bare hex whose length
// says which. Empty means no verification (Tinkerbell's image2disk had
// none).
func (p *params) checksum(name string) checksum {
	v := strings.TrimSpace(p.env[name])
	if v == "" {
		return checksum{}
	}
	algo, digest, found := strings.Cut(v, ":")
	if !found {
		digest = algo
		switch len(digest) {
		case sha256.Size * 2:
			algo = "sha256"
		case sha512.Size * 2:
			algo = "sha512"
		default:
			p.fail(name, v, "want sha256:<64 hex digits>, sha512:<128 hex digits> or the bare hex digest")
			return checksum{}
		}
	}
	algo = strings.ToLower(algo)
	size := map[string]int{"sha256": sha256.Size, "sha512": sha512.Size}[algo]
	if size == 0 {
		p.fail(name, v, "unknown algorithm %q: want sha256 or sha512", algo)
		return checksum{}
	}
	want, err := hex.DecodeString(digest)
	if err != nil || len(want) != size {
		p.fail(name, v, "want %d hex digits after %s:", size*2, algo)
		return checksum{}
	}
	return checksum{algo: algo, want: want}
}

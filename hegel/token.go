package hegel

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"net/netip"
	"time"
)

// tokenKey is the Server's random HMAC key for IMDSv2 tokens.
type tokenKey [32]byte

// A token is base64url (unpadded) of the expiry in Unix seconds (8 bytes,
// big-endian) followed by the first macLen bytes of
// HMAC-SHA256(key, tokenDomain || address as 16 bytes || expiry). The
// address is not in the token: it is the caller's, supplied when checking,
// so a token used from another address fails the MAC.
const (
	macLen      = 24
	rawTokenLen = 8 + macLen
	tokenDomain = "gitmetal-hegel-imdsv2-token-v1\x00"
)

// tokenLen is the length of a token as sent.
var tokenLen = base64.RawURLEncoding.EncodedLen(rawTokenLen)

// mint returns a token for addr that expires ttl seconds after now.
func (k *tokenKey) mint(addr netip.Addr, now time.Time, ttl int) string {
	var raw [rawTokenLen]byte
	binary.BigEndian.PutUint64(raw[:8], uint64(now.Unix()+int64(ttl)))
	copy(raw[8:], k.mac(addr, raw[:8]))
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// valid reports whether tok was minted by k for addr and has not expired
// at now.
func (k *tokenKey) valid(tok string, addr netip.Addr, now time.Time) bool {
	if len(tok) != tokenLen {
		return false
	}
	var raw [rawTokenLen]byte
	// Strict: a token has one spelling, not four that differ in the
	// unused bits of the last character.
	n, err := base64.RawURLEncoding.Strict().Decode(raw[:], []byte(tok))
	if err != nil || n != rawTokenLen {
		return false
	}
	if !hmac.Equal(raw[8:], k.mac(addr, raw[:8])) {
		return false
	}
	exp := int64(binary.BigEndian.Uint64(raw[:8]))
	return now.Unix() < exp
}

func (k *tokenKey) mac(addr netip.Addr, expiry []byte) []byte {
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte(tokenDomain))
	a := addr.As16()
	m.Write(a[:])
	m.Write(expiry)
	return m.Sum(nil)[:macLen]
}

// Package hegel is gitmetal's metadata service: after provisioning, the
// installed OS asks it who it is — hostname, addresses, SSH keys,
// user-data — and every machine, booted from the same image, gets its own
// identity from the store. It answers in three dialects:
//
//   - the EC2 instance metadata service (IMDSv1 and IMDSv2), under
//     /2009-04-04/ and /latest/: meta-data/ (instance-id, hostname,
//     local-hostname, local-ipv4, public-ipv4, mac,
//     network/interfaces/macs/<mac>/..., public-keys/, placement/,
//     tags/instance/, and the machine's free-form metadata as nested paths),
//     user-data and vendor-data, with session tokens from
//     PUT /latest/api/token;
//   - cloud-init's NoCloud seed, for ds=nocloud;s=http://HOST:PORT/nocloud/:
//     meta-data, user-data, vendor-data and network-config;
//   - JSON: /metadata (the machine's record, Tinkerbell's endpoint) and the
//     long-poll GET /v1/metadata?index=N&wait=D for agents and tooling.
//
// Every answer carries the applied revision in X-Gitmetal-Revision.
//
// # Identity and isolation
//
// The caller is the machine with an interface whose address is the
// connection's source address; X-Forwarded-For counts only when the
// connection comes from Config.TrustedProxies, and then the client is the
// rightmost address of the header that is not itself a trusted proxy. Every
// answer is computed from that one machine's record: no path, query, header
// or token names a machine, so no request can reach another machine's data.
// A caller that is no machine gets the same 404, headers and body, as a
// machine asking for a path that does not exist, so nothing tells a
// stranger whether any machine exists.
//
// IMDSv2 tokens are HMAC-SHA256 over the caller's address and the expiry,
// keyed with a random key made per Server: they die with the process, as
// EC2's die with the instance's metadata service. A token is checked
// whenever a request carries one; a token minted for another address, a
// forged or an expired one is refused with 401. Without a token, requests
// work (IMDSv1) unless Config.RequireToken. RequireToken covers the EC2
// tree and the JSON endpoints, not NoCloud: cloud-init's NoCloud reader
// cannot send a token. As on EC2, a token PUT that carries
// X-Forwarded-For is refused, so a proxy on the machine cannot be used to
// mint tokens for it.
//
// # What hegel must not do
//
// It must not write to the store, hold runtime state (runs, leases), read
// flags or the environment, or listen by itself: the caller mounts
// Handler on its own listener and sets the http.Server's timeouts and
// header limit. It must not list anything outside the metadata tree (no
// index of machines, no listing of /nocloud/ or /v1/). It serves the
// machine's record minus its BMC (power control is the control plane's,
// not the OS's). Request paths and queries are bounded, bodies are never
// read, and a panic in a request is recovered and answered with 500.
package hegel

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

// Store is what hegel reads from the desired-state store. *store.Store
// implements it.
type Store interface {
	// HardwareByIP returns the machine with an interface whose address is
	// ip (no prefix length), or nil when there is none; adds to ws a
	// channel that closes when that answer changes. The machine is shared
	// and read-only.
	HardwareByIP(ws memdb.WatchSet, ip string) (*schema.Hardware, error)
	// Revision returns the applied revision; its Index grows with every
	// Apply that writes, so two equal Indexes bracket reads of one
	// revision.
	Revision(ws memdb.WatchSet) (store.Revision, error)
}

// Defaults of the Config fields.
const (
	// DefaultMaxWait is Config.MaxWait's default.
	DefaultMaxWait = 5 * time.Minute
	// DefaultWait is how long a long poll waits when it gives no wait=.
	DefaultWait = time.Minute
)

// Bounds of what a request may ask.
const (
	// MaxPathLen is the longest request path (after decoding) served;
	// longer ones get 414.
	MaxPathLen = 1024
	// maxQueryLen bounds the raw query of /v1/metadata.
	maxQueryLen = 256
	// maxForwarded bounds the X-Forwarded-For entries hegel looks at.
	maxForwarded = 32
	// maxBody is what a request body may hold; hegel never reads one, and
	// MaxBytesReader stops a handler wrapper that does from reading more.
	maxBody = 4 << 10
	// maxTokenTTL is EC2's upper bound of a token's life, in seconds.
	maxTokenTTL = 21600
)

// Config configures a Server.
type Config struct {
	// Store is where machines are looked up. Required.
	Store Store
	// TrustedProxies are the networks whose X-Forwarded-For is believed.
	// Empty (the default) believes no one: the caller is always the
	// connection's source address.
	TrustedProxies []netip.Prefix
	// RequireToken refuses requests without an IMDSv2 session token (the
	// EC2 tree and the JSON endpoints; NoCloud cannot send one).
	RequireToken bool
	// MaxWait bounds a long poll's wait=; default DefaultMaxWait. The
	// long poll extends its own write deadline, so the http.Server's
	// WriteTimeout may be shorter.
	MaxWait time.Duration
	// Log is the logger; hegel adds component=hegel. The zero Logger logs
	// nothing.
	Log zerolog.Logger
	// Now is the clock of token expiry; default time.Now.
	Now func() time.Time
}

// Server answers metadata requests. It is safe for concurrent use.
type Server struct {
	store        Store
	trusted      []netip.Prefix
	requireToken bool
	maxWait      time.Duration
	log          zerolog.Logger
	now          func() time.Time
	tokens       tokenKey
	seen         *seenIndex
	metrics      *metrics

	// closing is cancelled by Close; long polls end when it is.
	closing context.Context
	close   context.CancelFunc

	// pollWaiting, when set (tests), is called each time a long poll
	// starts waiting for a change.
	pollWaiting func()
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("hegel: store is required")
	}
	trusted := make([]netip.Prefix, 0, len(cfg.TrustedProxies))
	for _, p := range cfg.TrustedProxies {
		if !p.IsValid() {
			return nil, fmt.Errorf("hegel: trusted proxy %q: not a valid prefix", p)
		}
		// 10.0.0.0/8 and 10.1.2.3/8 mean the same network; IPv4-mapped
		// IPv6 prefixes would never match the unmapped addresses hegel
		// compares, so they are refused rather than silently ignored.
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("hegel: trusted proxy %s: use the IPv4 form", p)
		}
		trusted = append(trusted, p.Masked())
	}
	if cfg.MaxWait < 0 {
		return nil, fmt.Errorf("hegel: max wait %s: want a positive duration, or 0 for the default %s", cfg.MaxWait, DefaultMaxWait)
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		store:        cfg.Store,
		trusted:      trusted,
		requireToken: cfg.RequireToken,
		maxWait:      cfg.MaxWait,
		log:          cfg.Log.With().Str("component", "hegel").Logger(),
		now:          cfg.Now,
		seen:         newSeenIndex(),
		metrics:      &metrics{},
	}
	if _, err := rand.Read(s.tokens[:]); err != nil {
		return nil, fmt.Errorf("hegel: make token key: %w", err)
	}
	s.closing, s.close = context.WithCancel(context.Background())
	return s, nil
}

// Handler returns the metadata service's handler. It serves from the root
// path ("/latest/...", "/nocloud/...", "/metadata"), as EC2 clients expect,
// so it belongs on a listener of its own.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Close ends the long polls in progress (they answer with the current
// data) and makes new ones answer at once. Call it before shutting the
// http.Server down, so Shutdown does not wait for them. Other requests
// keep being served.
func (s *Server) Close() { s.close() }

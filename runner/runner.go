// Package runner is gitmetal's workflow engine (Tinkerbell's tink-server
// without Kubernetes): it derives runs from the desired state in the store,
// hands their actions to the agents on the machines over HTTP, enforces
// timeouts, retries and the rollout limit, and journals every state change
// and log line to the state directory before acknowledging it.
//
// How a run comes to be (derive.go): for each workflow in the store, the
// template is rendered for its machine (schema.Render); a new pending run is
// created, with the rendered actions frozen in it, when the policy says so:
//
//   - onChange: the rendered digest differs from the last successful run's
//     (so a git revert re-provisions the previous OS), or the generation
//     was bumped above the last run's. A failed or timed-out run is not
//     retried with the same digest and generation: a change or a generation
//     bump starts the next one.
//   - once: like onChange until a run succeeds, then never again.
//   - manual: only when the generation is bumped above the last run's (a
//     new manual workflow runs when its generation is above 0).
//   - suspend: no new run; a pending run is not started and a running one
//     is held between actions until the workflow is resumed.
//
// While a workflow has a pending or running run, nothing new is created for
// it: the run executes what was decided, and the next commit is judged when
// it ends. A workflow removed from git (or moved to another machine) cancels
// its pending run; a running one stops after its current action, never in
// the middle of one.
//
// How a run executes (machine.go): a pending run starts when an agent of its
// machine asks for work and fewer than rollout.maxInFlight runs are running.
// Actions run in order; a failed action is retried (attempt+1, after a
// doubling backoff) up to its retries; when it finally fails its onFailure
// steps run, then the run fails (or times out, when the action timed out).
// A background action (kexec, reboot) succeeds once the agent says it
// started. The runner enforces the template's global timeout and each
// action's timeout itself, and tells the agent to stop in the answer to its
// next report.
//
// Netboot gating (Install): a machine with a pending or running run gets
// the installer and a per-boot token; otherwise it boots its local disk.
// The token is an HMAC-SHA256, under a key kept in the state directory, of
// the machine, the run it was issued for and its expiry; it authorizes the
// agent protocol for that machine's runs (so an agent that finished or lost
// one run can carry on with the machine's next without a reboot), never for
// another machine's, and not after it expires.
//
// The journal (runner/journal, bbolt) holds runs, log lines and
// inventories; every answer to an agent comes after the transaction that
// recorded its report committed with fsync, so a daemon killed at any point
// loses nothing it acknowledged, and a running run resumes after a restart:
// the agent re-asks and is handed the action in progress again. When a run
// ends, its workflow's older ended runs beyond Config.KeepRuns are deleted
// with their logs, in the same transaction; the latest success is kept
// whatever its age, since the policies decide from it.
//
// What this package must not do: read flags or the environment (cmd does),
// change the store (desired state comes from git only), or answer an agent
// before what it reported is on disk.
package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/runner/journal"
)

// Store is the desired state the runner reads: the reconciler's store.
// Every read goes through a Snapshot so that a workflow, its machine, its
// template and the settings agree.
type Store interface {
	Snapshot() *store.Snapshot
}

// Files in the state directory.
const (
	// JournalFile is the bbolt journal.
	JournalFile = "runner.db"
	// SecretFile holds the key agent tokens are signed with (mode 0600).
	SecretFile = "agent-token.key"
)

// Defaults of Config.
const (
	DefaultTokenTTL     = 24 * time.Hour
	DefaultRetryBackoff = 5 * time.Second
	// MaxRetryBackoff caps the doubling retry backoff.
	MaxRetryBackoff = 5 * time.Minute
	// DefaultLockWait is how long New waits for another process to release
	// the journal.
	DefaultLockWait = 10 * time.Second
	// DefaultKeepRuns is how many ended runs of each workflow the journal
	// keeps, with their logs.
	DefaultKeepRuns = 100
)

// Config configures a Runner.
type Config struct {
	// Store is the desired state. Required.
	Store Store
	// StateDir holds the journal and the token key; created when missing.
	// Required.
	StateDir string
	// TokenTTL is how long a per-boot agent token stays valid (default
	// 24h): long enough for the slowest install, short enough that a
	// leaked kernel command line stops mattering.
	TokenTTL time.Duration
	// RetryBackoff is the wait before an action's first retry (default
	// 5s); it doubles for each further attempt, up to MaxRetryBackoff.
	RetryBackoff time.Duration
	// LockWait bounds the wait for another process holding the journal
	// (default 10s).
	LockWait time.Duration
	// KeepRuns is how many ended runs of each workflow stay in the journal,
	// with their logs (default DefaultKeepRuns; negative keeps every run).
	// When a run ends, older ended runs of its workflow are deleted, except
	// the workflow's latest success, which decides whether a commit needs a
	// new run.
	KeepRuns int
	// Log is the runner's logger.
	Log zerolog.Logger
	// Now returns the time; default time.Now.
	Now func() time.Time
}

// Runner derives runs from the desired state and serves the agents.
type Runner struct {
	cfg    Config
	log    zerolog.Logger
	j      *journal.Journal
	secret []byte

	// changed wakes long polls when a run or action changes state; logs
	// wakes log followers when lines arrive; ended wakes the derivation
	// when a run ends (a commit that came meanwhile may start the next).
	changed, logs, ended *notifier

	// cache holds rendered workflows by name; used only by the derivation
	// goroutine.
	cache map[string]rendered

	metrics *metrics

	// quit closes when Run returns or the runner closes: long polls and
	// followed logs end then, so that the HTTP server can shut down.
	quit     chan struct{}
	quitOnce sync.Once

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg, opens the journal in cfg.StateDir and loads (or
// creates) the token key.
func New(cfg Config) (*Runner, error) {
	if cfg.Store == nil {
		return nil, errors.New("runner: Store is required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("runner: StateDir is required")
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"TokenTTL", &cfg.TokenTTL, DefaultTokenTTL},
		{"RetryBackoff", &cfg.RetryBackoff, DefaultRetryBackoff},
		{"LockWait", &cfg.LockWait, DefaultLockWait},
	} {
		switch {
		case *d.v < 0:
			return nil, fmt.Errorf("runner: %s %s: want a positive duration", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if cfg.KeepRuns == 0 {
		cfg.KeepRuns = DefaultKeepRuns
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("runner: state dir: %w", err)
	}
	secret, err := loadSecret(filepath.Join(cfg.StateDir, SecretFile))
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	j, err := journal.Open(filepath.Join(cfg.StateDir, JournalFile), cfg.LockWait)
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	return &Runner{
		cfg:     cfg,
		log:     cfg.Log.With().Str("component", "runner").Logger(),
		j:       j,
		secret:  secret,
		changed: newNotifier(),
		logs:    newNotifier(),
		ended:   newNotifier(),
		cache:   map[string]rendered{},
		metrics: newMetrics(),
		quit:    make(chan struct{}),
	}, nil
}

// Close closes the journal. Call it after Run has returned and the HTTP
// server has shut down.
func (r *Runner) Close() error {
	r.stop()
	r.closeOnce.Do(func() { r.closeErr = r.j.Close() })
	return r.closeErr
}

// Run derives runs from the store and enforces timeouts until ctx ends.
// It returns nil when ctx ends, or the error that stopped it.
func (r *Runner) Run(ctx context.Context) error {
	defer r.stop()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.deriveLoop(ctx) })
	g.Go(func() error { return r.sweepLoop(ctx) })
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (r *Runner) stop() { r.quitOnce.Do(func() { close(r.quit) }) }

func (r *Runner) now() time.Time { return r.cfg.Now() }

// notifier is a broadcast: wait returns a channel that closes at the next
// bump.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func newNotifier() *notifier { return &notifier{ch: make(chan struct{})} }

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

func (n *notifier) bump() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}

// Package reconciler follows a fleet repository and applies each revision to
// the store: fetch, validate the files that changed, apply the whole new
// desired state in one store transaction.
//
// A reconcile is an ordered list of steps (sync the source, load and
// validate, apply, remember); each step's contract is in its comment. The
// rules that matter to operators:
//
//   - An invalid revision is never applied. The applied revision keeps
//     serving; status names the attempted revision and every problem with
//     file, line and column. The next valid revision applies normally.
//   - A source that is down or slow is retried with backoff; the applied
//     revision keeps serving meanwhile, and status says what failed.
//   - Only the changed files are evaluated (the loader caches by blob hash),
//     and the store sees unchanged objects as the same pointers, so a
//     one-file commit wakes only the watchers of what it changed.
//   - Status is written in a deferred function, so every exit path of a
//     reconcile records what happened.
//
// The reconciler never reads clocks inside the store or mutates shared
// objects; runtime state (runs) belongs to the runner.
package reconciler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/reconciler/source"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

// Config configures a Reconciler.
type Config struct {
	// Source is where revisions come from. Required.
	Source source.Source
	// Store receives every valid revision. Required.
	Store *store.Store
	// Loader validates files. Required.
	Loader *schema.Loader
	// Interval is how often the source is polled (default 30s); each wait
	// is jittered by up to a tenth so that many daemons do not fetch at
	// once. Sources that notify (directories, local repositories) are also
	// reconciled as soon as they say so.
	Interval time.Duration
	// StateDir keeps the validation cache across restarts; empty keeps
	// nothing.
	StateDir string
	// History is how many reconcile results status keeps (default 20).
	History int
	// Site, when set, is the site this daemon serves: the store holds only
	// its machines and their workflows (schema.Fleet.Site). Every revision
	// is still validated whole, so a MAC or address used at two sites is
	// refused. Empty serves every machine.
	Site string
	// Log is the reconciler's logger.
	Log zerolog.Logger
	// Now returns the time; default time.Now. Tests set it.
	Now func() time.Time
}

// Reconciler follows a source and applies its revisions to the store.
type Reconciler struct {
	cfg     Config
	trigger chan struct{}
	log     zerolog.Logger
	metrics *metrics

	// tree is the last tree the source returned; touched only by Run's
	// goroutine.
	tree *source.Tree
	// cacheSaved is the loader's Evaluated count when the cache was last
	// saved; touched only by Run's goroutine.
	cacheSaved int

	mu     sync.Mutex
	status Status
}

// Status is what the reconciler reports about itself.
type Status struct {
	// Source says where revisions come from.
	Source string `json:"source"`
	// Site is the site served; empty for every machine.
	Site string `json:"site,omitempty"`
	// AppliedRevision is the revision the store holds; empty before the
	// first valid one.
	AppliedRevision string `json:"appliedRevision"`
	// AttemptedRevision is the newest revision tried; it differs from the
	// applied one when that revision was refused.
	AttemptedRevision string `json:"attemptedRevision"`
	// Errors are the problems of the attempted revision: every invalid
	// file with line and column, or a refused signature.
	Errors []Error `json:"errors"`
	// SourceError is the last failure to reach the source; empty once the
	// source answered again.
	SourceError string    `json:"sourceError,omitempty"`
	LastSync    time.Time `json:"lastSync,omitzero"`
	// History lists recent reconciles, newest first.
	History []HistoryEntry `json:"history"`
	Counts  Counts         `json:"counts"`
}

// Error is one problem with an attempted revision.
type Error struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// HistoryEntry is the result of one reconcile that saw a new revision.
type HistoryEntry struct {
	Revision   string    `json:"revision"`
	Result     string    `json:"result"` // applied, invalid, refused
	AppliedAt  time.Time `json:"appliedAt"`
	DurationMs float64   `json:"durationMs"`
	Changed    int       `json:"changedFiles"`
	Message    string    `json:"message,omitempty"`
}

// Counts are the sizes of the applied revision.
type Counts struct {
	Hardware  int `json:"hardware"`
	Templates int `json:"templates"`
	Workflows int `json:"workflows"`
}

// The results a reconcile records in history.
const (
	ResultApplied = "applied"
	ResultInvalid = "invalid"
	ResultRefused = "refused"
)

// New returns a Reconciler. It does nothing until Run.
func New(cfg Config) (*Reconciler, error) {
	switch {
	case cfg.Source == nil:
		return nil, errors.New("reconciler: no source")
	case cfg.Store == nil:
		return nil, errors.New("reconciler: no store")
	case cfg.Loader == nil:
		return nil, errors.New("reconciler: no loader")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.History <= 0 {
		cfg.History = 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Reconciler{
		cfg:     cfg,
		trigger: make(chan struct{}, 1),
		log:     cfg.Log.With().Str("component", "reconciler").Logger(),
		metrics: newMetrics(),
	}
	r.status.Source = cfg.Source.String()
	r.status.Site = cfg.Site
	r.status.Errors = []Error{}
	r.status.History = []HistoryEntry{}
	return r, nil
}

// Trigger asks for a reconcile now (a webhook said the repository moved).
// It never blocks; triggers while one is pending merge.
func (r *Reconciler) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Status returns a copy of the reconciler's status.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status
	// Copies that stay non-nil when empty: status JSON says [] not null.
	s.Errors = append(s.Errors[:0:0], s.Errors...)
	s.History = append(s.History[:0:0], s.History...)
	return s
}

// Ready reports whether a revision has been applied.
func (r *Reconciler) Ready() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status.AppliedRevision != ""
}

func (r *Reconciler) cachePath() string {
	if r.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(r.cfg.StateDir, "validation.cache")
}

// Run reconciles at once, then whenever the interval passes, the source
// notifies, or Trigger is called, until ctx ends. Failures are recorded in
// status and retried with backoff (never more than the interval); Run
// returns only when ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	if p := r.cachePath(); p != "" {
		n, err := r.cfg.Loader.LoadCache(p)
		if err != nil {
			r.log.Warn().Err(err).Str("path", p).Msg("validation cache unreadable; evaluating every file")
		} else {
			r.log.Info().Int("entries", n).Msg("validation cache loaded")
		}
		r.cacheSaved = r.cfg.Loader.Stats().Evaluated
	}
	defer r.saveCache(true)
	r.resume()

	backoff := time.Duration(0)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-r.trigger:
		case <-r.cfg.Source.Notify():
		}
		err := r.Reconcile(ctx)
		wait := r.cfg.Interval
		if err != nil && ctx.Err() == nil {
			// The source failed: retry sooner than the interval, backing
			// off from one second.
			backoff = min(max(2*backoff, time.Second), r.cfg.Interval)
			wait = backoff
		} else {
			backoff = 0
		}
		wait += time.Duration(rand.Int64N(int64(wait)/10 + 1))
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// Reconcile runs one reconcile. It returns an error only when the source
// could not be read; an invalid or refused revision is a recorded result,
// not an error of the reconciler.
func (r *Reconciler) Reconcile(ctx context.Context) error {
	start := r.cfg.Now()
	log := r.log

	// Step 1: sync the source. Contract: on error nothing else happens and
	// the applied revision keeps serving; a refused signature is recorded
	// against the revision that carried it.
	tree, err := r.cfg.Source.Sync(ctx, r.tree)
	if err != nil {
		var ve *source.VerifyError
		if errors.As(err, &ve) {
			r.record(ve.Revision, ResultRefused, start, 0, []Error{{Message: ve.Error()}}, nil)
			log.Error().Err(err).Str("revision", ve.Revision).Msg("revision refused")
			return nil
		}
		r.mu.Lock()
		r.status.SourceError = err.Error()
		r.mu.Unlock()
		r.metrics.sourceErrors.Add(1)
		if ctx.Err() == nil {
			log.Warn().Err(err).Msg("source unavailable; serving the applied revision")
		}
		return err
	}
	r.mu.Lock()
	r.status.SourceError = ""
	r.status.LastSync = start
	attempted := r.status.AttemptedRevision
	r.mu.Unlock()
	prev := r.tree
	r.tree = tree
	if tree == prev && tree.Revision == attempted {
		return nil // nothing new
	}
	log = log.With().Str("revision", tree.Revision).Logger()

	// Step 2: load and validate. Contract: the loader evaluates only files
	// whose blob it has not seen, and for a tree that follows the last one
	// it loaded it looks only at the files that changed; an invalid
	// revision is recorded with every problem and not applied.
	fleet, err := r.load(ctx, prev, tree)
	if err != nil {
		var issues schema.Errors
		if !errors.As(err, &issues) {
			// Not the repository's fault (cancelled, out of memory): try
			// again later without recording a verdict on the revision.
			r.tree = prev
			return err
		}
		errs := make([]Error, len(issues))
		for i, is := range issues {
			errs[i] = Error{File: is.File, Line: is.Line, Column: is.Column, Field: is.Field, Message: is.Message}
		}
		r.record(tree.Revision, ResultInvalid, start, len(tree.Changed), errs, nil)
		log.Error().Int("errors", len(errs)).Str("first", issues[0].String()).
			Dur("duration", r.cfg.Now().Sub(start)).Msg("revision invalid; serving the applied revision")
		r.metrics.invalid.Add(1)
		return nil
	}

	// Step 3: apply the whole desired state in one store transaction.
	// Contract: readers see the old revision or the new, never a mix.
	if r.cfg.Site != "" {
		fleet = fleet.Site(r.cfg.Site)
	}
	res, err := r.cfg.Store.Apply(tree.Revision, fleet)
	if err != nil {
		r.record(tree.Revision, ResultInvalid, start, len(tree.Changed), []Error{{Message: err.Error()}}, nil)
		log.Error().Err(err).Msg("store refused the revision")
		return nil
	}
	h, t, w := fleet.Counts()
	r.record(tree.Revision, ResultApplied, start, len(tree.Changed), nil, &Counts{h, t, w})
	d := r.cfg.Now().Sub(start)
	r.metrics.observe(d)
	log.Info().Int("changedFiles", len(tree.Changed)+len(tree.Removed)).Dur("duration", d).
		Int("hardware", h).Int("templates", t).Int("workflows", w).
		Int("hardwareChanged", res.Hardware.Added+res.Hardware.Changed+res.Hardware.Removed).
		Msg("revision applied")

	// Step 4: remember the applied revision and, at most once a minute
	// while running, the validation cache for the next start (the cache is
	// also saved when Run ends).
	r.saveApplied(tree.Revision)
	r.saveCache(false)
	return nil
}

func (r *Reconciler) appliedPath() string {
	if r.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(r.cfg.StateDir, "applied-revision")
}

// saveApplied writes the applied revision to the state dir (atomically),
// so that after a restart the signature check covers every commit since,
// not only the head.
func (r *Reconciler) saveApplied(rev string) {
	p := r.appliedPath()
	if p == "" {
		return
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(rev+"\n"), 0o644); err != nil {
		r.log.Warn().Err(err).Msg("applied revision not saved")
		return
	}
	if err := os.Rename(tmp, p); err != nil {
		r.log.Warn().Err(err).Msg("applied revision not saved")
	}
}

// resume starts a git source from the revision applied before a restart:
// the first sync then checks the signatures of every commit since it, and
// still loads the whole tree (the desired state is rebuilt from git).
func (r *Reconciler) resume() {
	if _, ok := r.cfg.Source.(*source.Git); !ok {
		return
	}
	p := r.appliedPath()
	if p == "" {
		return
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return
	}
	if rev := strings.TrimSpace(string(b)); rev != "" {
		r.tree = &source.Tree{Revision: rev}
		r.log.Info().Str("revision", rev).Msg("resuming after the revision applied before the restart")
	}
}

// load validates tree. When the loader's last fleet came from prev, only
// the files that changed since are handed over; otherwise every file.
func (r *Reconciler) load(ctx context.Context, prev, tree *source.Tree) (*schema.Fleet, error) {
	if prev != nil {
		changed := make([]schema.File, 0, len(tree.Changed))
		for _, p := range tree.Changed {
			if f, ok := tree.Files[p]; ok {
				changed = append(changed, f)
			}
		}
		fleet, err := r.cfg.Loader.Update(ctx, changed, tree.Removed)
		if !errors.Is(err, schema.ErrNeedLoad) {
			return fleet, err
		}
	}
	files := make([]schema.File, 0, len(tree.Files))
	for _, f := range tree.Files {
		files = append(files, f)
	}
	return r.cfg.Loader.Load(ctx, files)
}

// record writes the result of a reconcile of rev into status.
func (r *Reconciler) record(rev, result string, start time.Time, changed int, errs []Error, counts *Counts) {
	now := r.cfg.Now()
	e := HistoryEntry{
		Revision:   rev,
		Result:     result,
		AppliedAt:  now,
		DurationMs: float64(now.Sub(start).Microseconds()) / 1000,
		Changed:    changed,
	}
	if len(errs) > 0 {
		e.Message = fmt.Sprintf("%d errors", len(errs))
		if errs[0].File != "" {
			e.Message += fmt.Sprintf(", first %s:%d", errs[0].File, errs[0].Line)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.AttemptedRevision = rev
	if errs == nil {
		errs = []Error{}
	}
	r.status.Errors = errs
	if result == ResultApplied {
		r.status.AppliedRevision = rev
		r.status.Counts = *counts
		r.metrics.setApplied(rev, *counts)
	}
	r.status.History = append([]HistoryEntry{e}, r.status.History...)
	if len(r.status.History) > r.cfg.History {
		r.status.History = r.status.History[:r.cfg.History]
	}
}

// saveCache writes the validation cache when files were evaluated since
// the last save. Unless forced it waits a minute between saves: a save of
// 10k entries costs more than a one-file reconcile.
func (r *Reconciler) saveCache(force bool) {
	p := r.cachePath()
	if p == "" {
		return
	}
	evaluated := r.cfg.Loader.Stats().Evaluated
	if evaluated == r.cacheSaved {
		return
	}
	if !force && r.metrics.sinceCacheSave(r.cfg.Now()) < time.Minute {
		return
	}
	if err := r.cfg.Loader.SaveCache(p); err != nil {
		r.log.Warn().Err(err).Msg("validation cache not saved")
		return
	}
	r.cacheSaved = evaluated
	r.metrics.cacheSaved(r.cfg.Now())
}

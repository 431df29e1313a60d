package runner

import (
	"context"
	"fmt"
	"sort"
	"time"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
)

// rendered caches a workflow's rendering by the identity of what it was
// rendered from: the store hands out the same pointers for unchanged
// objects, so an Apply that changed one machine re-renders only its
// workflows.
type rendered struct {
	w   *schema.Workflow
	h   *schema.Hardware
	t   *schema.Template
	out *schema.Rendered
	err error
}

// desired is what the derivation read from one store snapshot.
type desired struct {
	revision  string
	workflows []*schema.Workflow
	hardware  map[string]*schema.Hardware
	templates map[string]*schema.Template
}

// deriveLoop derives runs whenever the store changes or a run ends.
func (r *Runner) deriveLoop(ctx context.Context) error {
	for {
		ended := r.ended.wait()
		ws := memdb.NewWatchSet()
		d, err := readDesired(ws, r.cfg.Store.Snapshot())
		if err != nil {
			return fmt.Errorf("runner: read desired state: %w", err)
		}
		// Before the reconciler applied a revision the store is empty:
		// deriving from it would cancel every run after a restart.
		if d.revision != "" {
			if err := r.derive(d); err != nil {
				r.log.Error().Err(err).Str("revision", d.revision).Msg("derive runs")
			}
		}
		// Long polls held by the desired state (not loaded yet, a
		// suspension, the rollout limit) look again.
		r.changed.bump()
		ws.Add(ended)
		if err := ws.WatchCtx(ctx); err != nil {
			return nil
		}
	}
}

func readDesired(ws memdb.WatchSet, snap *store.Snapshot) (*desired, error) {
	rev, err := snap.Revision(ws)
	if err != nil {
		return nil, err
	}
	wfs, err := snap.Workflows(ws)
	if err != nil {
		return nil, err
	}
	hws, err := snap.Hardware(ws)
	if err != nil {
		return nil, err
	}
	tpls, err := snap.Templates(ws)
	if err != nil {
		return nil, err
	}
	d := &desired{
		revision:  rev.ID,
		workflows: wfs,
		hardware:  make(map[string]*schema.Hardware, len(hws)),
		templates: make(map[string]*schema.Template, len(tpls)),
	}
	for _, h := range hws {
		d.hardware[h.Name] = h
	}
	for _, t := range tpls {
		d.templates[t.Name] = t
	}
	return d, nil
}

// render returns w rendered for its machine, from the cache when nothing
// it depends on changed.
func (r *Runner) render(w *schema.Workflow, d *desired) (*schema.Rendered, error) {
	h, t := d.hardware[w.Hardware], d.templates[w.Template]
	if c, ok := r.cache[w.Name]; ok && c.w == w && c.h == h && c.t == t {
		return c.out, c.err
	}
	var out *schema.Rendered
	var err error
	switch {
	case h == nil:
		err = fmt.Errorf("workflow %q: no hardware %q", w.Name, w.Hardware)
	case t == nil:
		err = fmt.Errorf("workflow %q: no template %q", w.Name, w.Template)
	default:
		out, err = schema.Render(t, w, h)
	}
	r.cache[w.Name] = rendered{w: w, h: h, t: t, out: out, err: err}
	if err != nil {
		// Logged once per change of what it was rendered from.
		r.log.Error().Err(err).Str("workflow", w.Name).Msg("render workflow")
	}
	return out, err
}

// derive creates the runs the policies call for and cancels the runs of
// workflows that left git, in one journal transaction.
func (r *Runner) derive(d *desired) error {
	type candidate struct {
		w   *schema.Workflow
		out *schema.Rendered
	}
	var cands []candidate
	names := make(map[string]*schema.Workflow, len(d.workflows))
	for _, w := range d.workflows {
		names[w.Name] = w
		if w.Suspend {
			continue
		}
		out, err := r.render(w, d)
		if err != nil {
			continue
		}
		cands = append(cands, candidate{w, out})
	}
	for name := range r.cache {
		if names[name] == nil {
			delete(r.cache, name)
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].w.Name < cands[j].w.Name })
	var created []*protocol.Run
	err := r.do(func(o *op) error {
		created = created[:0]
		active, err := o.tx.Active()
		if err != nil {
			return err
		}
		for _, sum := range active {
			w := names[sum.Workflow]
			if w != nil && w.Hardware == sum.Hardware {
				continue
			}
			run, err := o.tx.Run(sum.ID)
			if err != nil {
				return err
			}
			why := fmt.Sprintf("workflow %q removed at revision %s", run.Workflow, d.revision)
			if w != nil {
				why = fmt.Sprintf("workflow %q moved to machine %q at revision %s", run.Workflow, w.Hardware, d.revision)
			}
			if err := o.cancel(run, why); err != nil {
				return err
			}
		}
		for _, c := range cands {
			reason, err := o.decide(c.w, c.out)
			if err != nil {
				return err
			}
			if reason == "" {
				continue
			}
			run := newRun(c.w, c.out, d.revision, reason, o.now)
			if !o.write {
				return errNeedWrite
			}
			if err := o.tx.CreateRun(run); err != nil {
				return err
			}
			if err := o.note(run, -1, 0, "run created at revision %s: %s", d.revision, reason); err != nil {
				return err
			}
			o.changed = true
			created = append(created, run)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, run := range created {
		r.log.Info().Str("run", run.ID).Str("workflow", run.Workflow).Str("hardware", run.Hardware).
			Str("revision", d.revision).Str("reason", run.Reason).Msg("run created")
	}
	return nil
}

// cancel ends a pending run now, or makes a running one stop after its
// current action.
func (o *op) cancel(run *protocol.Run, why string) error {
	switch {
	case run.State == protocol.RunPending:
		if err := o.finish(run, protocol.RunCancelled, why); err != nil {
			return err
		}
	case run.Stopping == "":
		run.Stopping = why
		if err := o.note(run, -1, 0, "stopping after the current action: %s", why); err != nil {
			return err
		}
		if _, err := o.settle(run); err != nil {
			return err
		}
	default:
		return nil
	}
	o.r.log.Info().Str("run", run.ID).Str("workflow", run.Workflow).Str("why", why).Msg("run cancelled")
	return o.save(run)
}

// decide returns why w needs a new run with rendering out, or "" when it
// needs none. See the package comment for the policies.
func (o *op) decide(w *schema.Workflow, out *schema.Rendered) (string, error) {
	idx, err := o.tx.Workflow(w.Name)
	if err != nil {
		return "", err
	}
	last, success := idx.Last, idx.LastSuccess
	if last.ID != "" && last.State.Active() {
		return "", nil
	}
	switch w.Policy {
	case schema.PolicyManual:
		if w.Generation > last.Generation {
			return fmt.Sprintf("generation bumped to %d", w.Generation), nil
		}
		return "", nil
	case schema.PolicyOnce:
		if success.ID != "" {
			return "", nil
		}
	case schema.PolicyOnChange, "":
	default:
		return "", fmt.Errorf("workflow %q: unknown policy %q", w.Name, w.Policy)
	}
	switch {
	case last.ID == "":
		return "first run", nil
	case w.Generation > last.Generation:
		return fmt.Sprintf("generation bumped to %d", w.Generation), nil
	case success.ID != "" && success.Digest == out.Digest:
		return "", nil
	case last.Digest != out.Digest && success.ID != "":
		return fmt.Sprintf("rendered workflow differs from successful run %s", success.ID), nil
	case last.Digest != out.Digest:
		return fmt.Sprintf("rendered workflow differs from run %s", last.ID), nil
	case last.State == protocol.RunCancelled:
		return fmt.Sprintf("run %s was cancelled", last.ID), nil
	}
	// The last run failed with this very rendering: wait for a change or a
	// generation bump rather than loop.
	return "", nil
}

// newRun freezes out into a pending run: the main actions in order, each
// followed by its onFailure steps.
func newRun(w *schema.Workflow, out *schema.Rendered, revision, reason string, now time.Time) *protocol.Run {
	run := &protocol.Run{
		Workflow:     w.Name,
		Hardware:     out.Hardware,
		Template:     out.Template,
		Revision:     revision,
		Digest:       out.Digest,
		Generation:   w.Generation,
		Policy:       w.Policy,
		Reason:       reason,
		State:        protocol.RunPending,
		Timeout:      out.Timeout,
		Created:      now,
		FailedAction: -1,
	}
	for _, a := range out.Actions {
		main := len(run.Actions)
		run.Actions = append(run.Actions, protocol.Action{
			Index: main, OnFailureOf: -1, Step: a.Step, State: protocol.ActionPending,
		})
		for _, f := range a.OnFailure {
			run.Actions = append(run.Actions, protocol.Action{
				Index: len(run.Actions), OnFailureOf: main, Step: f, State: protocol.ActionPending,
			})
		}
	}
	return run
}

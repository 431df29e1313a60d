package runner

import (
	"errors"
	"fmt"
	"time"

	"github.com/gitmetal/gitmetal/runner/journal"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
)

// This file is the run state machine. Every function here works on a run
// decoded inside one journal transaction (an op) and changes only that
// copy; the caller saves it. Nothing here blocks or talks to the network.

// errNeedWrite stops a read-only op that found something to change; do
// runs it again in a write transaction.
var errNeedWrite = errors.New("runner: needs a write transaction")

// op is one journal transaction and what it did.
type op struct {
	r     *Runner
	tx    *journal.Tx
	write bool
	now   time.Time
	// What to wake after the commit.
	changed, logs, ended bool
	// finished are the runs this op ended, counted after the commit.
	finished []endedRun
}

// do runs fn in a read transaction and, if fn needs to change something,
// again from the start in a write transaction (fn must not have effects
// outside the op). Most long-poll wake-ups change nothing, and a read
// costs no fsync.
func (r *Runner) do(fn func(o *op) error) error {
	err := r.j.View(func(tx *journal.Tx) error {
		return fn(&op{r: r, tx: tx, now: r.now()})
	})
	if !errors.Is(err, errNeedWrite) {
		return err
	}
	return r.write(fn)
}

// write runs fn in a write transaction, committed with fsync before it
// returns, then wakes whoever waits for what fn changed.
func (r *Runner) write(fn func(o *op) error) error {
	var done *op
	err := r.j.Update(func(tx *journal.Tx) error {
		o := &op{r: r, tx: tx, write: true, now: r.now()}
		if err := fn(o); err != nil {
			return err
		}
		done = o
		return nil
	})
	if err != nil {
		return err
	}
	if done.changed {
		r.changed.bump()
	}
	if done.logs {
		r.logs.bump()
	}
	if done.ended {
		r.ended.bump()
	}
	r.metrics.add(done.finished)
	return nil
}

// save stores run.
func (o *op) save(run *protocol.Run) error {
	if !o.write {
		return errNeedWrite
	}
	o.changed = true
	if err := o.tx.PutRun(elapsed(run)); err != nil {
		return err
	}
	if keep := o.r.cfg.KeepRuns; keep >= 0 && !run.State.Active() {
		if _, err := o.tx.Prune(run.Workflow, keep); err != nil {
			return err
		}
	}
	return nil
}

// elapsed fills in the durations of what has ended.
func elapsed(run *protocol.Run) *protocol.Run {
	run.Elapsed = 0
	if !run.Started.IsZero() && !run.Finished.IsZero() {
		run.Elapsed = schema.Duration(run.Finished.Sub(run.Started))
	}
	for i := range run.Actions {
		a := &run.Actions[i]
		a.Elapsed = 0
		if !a.Started.IsZero() && !a.Finished.IsZero() {
			a.Elapsed = schema.Duration(a.Finished.Sub(a.Started))
		}
	}
	return run
}

// note adds a line of the runner's own to run's log.
func (o *op) note(run *protocol.Run, action, attempt int, format string, args ...any) error {
	if !o.write {
		return errNeedWrite
	}
	o.logs = true
	return o.tx.AppendNote(run.ID, protocol.LogLine{
		Time:    o.now,
		Action:  action,
		Attempt: attempt,
		Stream:  protocol.StreamRunner,
		Text:    fmt.Sprintf(format, args...),
	})
}

// running returns the index of run's running action, or -1.
func running(run *protocol.Run) int {
	for i := range run.Actions {
		if run.Actions[i].State == protocol.ActionRunning {
			return i
		}
	}
	return -1
}

// nextIndex returns the action to execute next. When none is left it
// returns done and the state the run ends in: success after the last main
// action, or, once a main action has failed and its onFailure steps have
// run, failed (timeout when that action timed out).
func nextIndex(run *protocol.Run) (idx int, final protocol.RunState, done bool) {
	if f := run.FailedAction; f >= 0 && f < len(run.Actions) {
		for i := range run.Actions {
			if run.Actions[i].OnFailureOf == f && run.Actions[i].State == protocol.ActionPending {
				return i, "", false
			}
		}
		if run.Actions[f].State == protocol.ActionTimeout {
			return -1, protocol.RunTimeout, true
		}
		return -1, protocol.RunFailed, true
	}
	for i := range run.Actions {
		if run.Actions[i].OnFailureOf < 0 && run.Actions[i].State == protocol.ActionPending {
			return i, "", false
		}
	}
	return -1, protocol.RunSuccess, true
}

// start makes a pending run running.
func (o *op) start(run *protocol.Run, inFlight int) error {
	run.State = protocol.RunRunning
	run.Started = o.now
	if run.Timeout > 0 {
		run.Deadline = o.now.Add(run.Timeout.D())
	}
	return o.note(run, -1, 0, "run started (%d running)", inFlight+1)
}

// finish ends run: a running action (only a global timeout interrupts
// one) gets the run's end, pending actions are skipped.
func (o *op) finish(run *protocol.Run, state protocol.RunState, msg string) error {
	for i := range run.Actions {
		a := &run.Actions[i]
		switch a.State {
		case protocol.ActionRunning:
			a.State = protocol.ActionFailed
			if state == protocol.RunTimeout {
				a.State = protocol.ActionTimeout
			}
			a.Finished = o.now
			a.Deadline = time.Time{}
			a.Message = msg
		case protocol.ActionPending:
			a.State = protocol.ActionSkipped
			a.NotBefore = time.Time{}
		}
	}
	run.State = state
	run.Finished = o.now
	run.Deadline = time.Time{}
	if state != protocol.RunSuccess {
		run.Message = msg
	}
	o.ended = true
	var took time.Duration
	if !run.Started.IsZero() {
		took = run.Finished.Sub(run.Started)
	}
	o.finished = append(o.finished, endedRun{state, took})
	if msg == "" {
		return o.note(run, -1, 0, "run %s", state)
	}
	return o.note(run, -1, 0, "run %s: %s", state, msg)
}

// settle ends a running run that has nothing left to do: its last action
// succeeded, its failure handlers ran, or it must stop and no action is in
// progress. It reports whether it changed run.
func (o *op) settle(run *protocol.Run) (bool, error) {
	if run.State != protocol.RunRunning || running(run) >= 0 {
		return false, nil
	}
	if run.Stopping != "" {
		return true, o.finish(run, protocol.RunCancelled, run.Stopping)
	}
	_, final, done := nextIndex(run)
	if !done {
		return false, nil
	}
	msg := ""
	if f := run.FailedAction; final != protocol.RunSuccess && f >= 0 {
		a := &run.Actions[f]
		msg = fmt.Sprintf("action %q %s after %d attempt(s)", a.Step.Name, a.State, a.Attempt)
		if a.Message != "" {
			msg += ": " + a.Message
		}
	}
	return true, o.finish(run, final, msg)
}

// enforce applies run's deadlines: the global timeout ends the run, an
// action past its timeout ends that attempt (and may be retried). It
// reports whether it changed run.
func (o *op) enforce(run *protocol.Run) (bool, error) {
	if run.State != protocol.RunRunning {
		return false, nil
	}
	if !run.Deadline.IsZero() && !o.now.Before(run.Deadline) {
		return true, o.finish(run, protocol.RunTimeout, fmt.Sprintf("global timeout %s exceeded", run.Timeout.D()))
	}
	changed := false
	for i := range run.Actions {
		a := &run.Actions[i]
		if a.State != protocol.ActionRunning || a.Deadline.IsZero() || o.now.Before(a.Deadline) {
			continue
		}
		if err := o.endAttempt(run, i, protocol.ActionTimeout, fmt.Sprintf("timed out after %s", a.Step.Timeout.D()), nil); err != nil {
			return false, err
		}
		changed = true
	}
	settled, err := o.settle(run)
	return changed || settled, err
}

// endAttempt records the end of action i's current attempt. A failed or
// timed-out attempt with retries left makes the action pending again after
// a backoff; the last one fails the action and, for a main action, starts
// the failure handling.
func (o *op) endAttempt(run *protocol.Run, i int, state protocol.ActionState, msg string, exit *int) error {
	a := &run.Actions[i]
	a.Finished = o.now
	a.Deadline = time.Time{}
	a.Message = msg
	a.ExitCode = exit
	if state == protocol.ActionSuccess {
		a.State = protocol.ActionSuccess
		return nil
	}
	if a.Attempt < 1+a.Step.Retries {
		wait := o.r.backoff(a.Attempt)
		a.State = protocol.ActionPending
		a.NotBefore = o.now.Add(wait)
		a.Finished = time.Time{}
		a.Message = fmt.Sprintf("attempt %d %s: %s", a.Attempt, state, msg)
		return o.note(run, i, a.Attempt, "action %q attempt %d %s: %s; retrying in %s (%d of %d retries left)",
			a.Step.Name, a.Attempt, state, msg, wait, 1+a.Step.Retries-a.Attempt, a.Step.Retries)
	}
	a.State = state
	if a.OnFailureOf < 0 && run.FailedAction < 0 {
		run.FailedAction = i
	}
	return o.note(run, i, a.Attempt, "action %q %s: %s", a.Step.Name, state, msg)
}

// backoff is the wait before the retry that follows attempt.
func (r *Runner) backoff(attempt int) time.Duration {
	d := r.cfg.RetryBackoff
	for n := 1; n < attempt && d < MaxRetryBackoff; n++ {
		d *= 2
	}
	return min(d, MaxRetryBackoff)
}

// handOut returns the action run's agent must execute now: the running one
// again (the agent lost track of it, or the runner restarted), or the next
// one, which it marks running. With nothing to hand out yet it returns
// when to look again (a retry's backoff), or zero.
func (o *op) handOut(run *protocol.Run) (*protocol.Assignment, time.Time, bool) {
	if i := running(run); i >= 0 {
		return assignment(&run.Actions[i]), time.Time{}, false
	}
	i, _, done := nextIndex(run)
	if done {
		return nil, time.Time{}, false
	}
	a := &run.Actions[i]
	if a.NotBefore.After(o.now) {
		return nil, a.NotBefore, false
	}
	a.Attempt++
	a.State = protocol.ActionRunning
	if a.Started.IsZero() {
		a.Started = o.now
		a.Message = ""
	}
	a.Finished = time.Time{}
	a.NotBefore = time.Time{}
	a.Progress = nil
	a.ExitCode = nil
	a.Deadline = time.Time{}
	if a.Step.Timeout > 0 {
		a.Deadline = o.now.Add(a.Step.Timeout.D())
	}
	return assignment(a), time.Time{}, true
}

func assignment(a *protocol.Action) *protocol.Assignment {
	return &protocol.Assignment{
		Index:     a.Index,
		Attempt:   a.Attempt,
		Step:      a.Step,
		OnFailure: a.OnFailureOf >= 0,
		Deadline:  a.Deadline,
	}
}

// stopReason says why the agent must stop attempt of action n, or "" when
// it may go on.
func stopReason(run *protocol.Run, n, attempt int) string {
	a := &run.Actions[n]
	switch {
	case a.Step.Background && a.State == protocol.ActionSuccess && a.Attempt == attempt:
		// A background action goes on by design (it reboots the machine).
		return ""
	case a.State == protocol.ActionRunning && a.Attempt == attempt:
		return ""
	case run.State.Final():
		return fmt.Sprintf("run %s", run.State)
	case a.Attempt != attempt:
		return fmt.Sprintf("attempt %d is not the current attempt (%d)", attempt, a.Attempt)
	case a.State == protocol.ActionPending:
		return fmt.Sprintf("attempt %d ended: %s", attempt, a.Message)
	}
	return fmt.Sprintf("action %s", a.State)
}

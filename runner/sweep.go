package runner

import (
	"context"
	"time"

	"github.com/gitmetal/gitmetal/runner/protocol"
)

// sweepLoop enforces global and action timeouts at their deadlines, so that
// a run whose agent went silent still ends. Agent requests enforce them
// too, so an agent never works past a deadline because of timer slack.
func (r *Runner) sweepLoop(ctx context.Context) error {
	for {
		changed := r.changed.wait()
		var next time.Time
		err := r.do(func(o *op) error {
			next = time.Time{}
			// Only running runs have deadlines.
			running, err := o.tx.Running()
			if err != nil {
				return err
			}
			for _, sum := range running {
				run, err := o.tx.Run(sum.ID)
				if err != nil {
					return err
				}
				ch, err := o.enforce(run)
				if err != nil {
					return err
				}
				if ch {
					if err := o.save(run); err != nil {
						return err
					}
				}
				next = earliest(next, deadline(run))
			}
			return nil
		})
		wait := time.Duration(-1)
		switch {
		case err != nil:
			r.log.Error().Err(err).Msg("enforce timeouts")
			wait = time.Second
		case !next.IsZero():
			// A little past the deadline, so that the check finds it
			// passed.
			wait = max(next.Sub(r.now()), 0) + 10*time.Millisecond
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if wait >= 0 {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// deadline returns the earliest deadline of a running run, or zero.
func deadline(run *protocol.Run) time.Time {
	if run.State != protocol.RunRunning {
		return time.Time{}
	}
	t := run.Deadline
	for i := range run.Actions {
		if run.Actions[i].State == protocol.ActionRunning {
			t = earliest(t, run.Actions[i].Deadline)
		}
	}
	return t
}

// earliest returns the earlier of two times, zero meaning never.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

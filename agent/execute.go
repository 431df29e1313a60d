package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/runner/protocol"
)

// stopped is the cause of an action cancelled because the runner said
// stop.
type stopped struct{ reason string }

func (s *stopped) Error() string { return "stopped by the runner: " + s.reason }

// errLocalTimeout is the cause of an action stopped by its own timeout on
// the agent's clock (the runner enforces it too, on its own).
var errLocalTimeout = errors.New("action timeout")

// execute runs one attempt: it reports it started, runs it while sending
// logs and heartbeats, and reports how it ended. It returns an error only
// when ctx ended.
func (a *Agent) execute(ctx context.Context, run string, asg *protocol.Assignment) error {
	log := a.log.With().Str("run", run).Int("action", asg.Index).Int("attempt", asg.Attempt).
		Str("name", asg.Step.Name).Str("uses", asg.Step.Uses).Logger()
	ack, err := a.report(ctx, run, asg, protocol.StatusReport{Attempt: asg.Attempt, State: protocol.ActionRunning})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Error().Err(err).Msg("runner refused the start of the action")
		return nil
	}
	if ack.Stop {
		log.Warn().Str("reason", ack.Reason).Msg("runner says stop before the action started")
		return nil
	}
	log.Info().Bool("background", asg.Step.Background).Msg("action started")
	rep := &reporter{a: a, run: run, asg: asg, log: log, kick: make(chan struct{}, 1)}
	actx, cancel := context.WithCancelCause(ctx)
	if asg.Step.Timeout > 0 {
		var c context.CancelFunc
		actx, c = context.WithTimeoutCause(actx, asg.Step.Timeout.D(), errLocalTimeout)
		inner := cancel
		cancel = func(err error) { c(); inner(err) }
	}
	lctx, stopLoop := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		rep.loop(lctx, func(reason string) { cancel(&stopped{reason}) })
	}()
	finish := func(err error) error {
		stopLoop()
		<-loopDone
		cause := context.Cause(actx)
		cancel(nil)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		st := outcome(err, cause, asg)
		ev := log.Info()
		if st.State != protocol.ActionSuccess {
			ev = log.Warn()
		}
		ev.Str("state", string(st.State)).Str("message", st.Message).Msg("action ended")
		if err := rep.flushAll(ctx); err != nil {
			return err
		}
		if _, err := a.report(ctx, run, asg, st); err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		return nil
	}
	if asg.Step.Background {
		// The runner counts it done; it usually ends the machine's life.
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			finish(a.cfg.Executor.Run(actx, asg.Step, rep))
		}()
		return nil
	}
	return finish(a.cfg.Executor.Run(actx, asg.Step, rep))
}

// exitCoder is an error that carries a process exit status.
type exitCoder interface{ ExitCode() int }

// outcome turns an executor's result into the final status report.
func outcome(err, cause error, asg *protocol.Assignment) protocol.StatusReport {
	st := protocol.StatusReport{Attempt: asg.Attempt, State: protocol.ActionSuccess, Time: time.Now()}
	if err == nil {
		return st
	}
	st.State = protocol.ActionFailed
	st.Message = err.Error()
	var s *stopped
	switch {
	case errors.As(cause, &s):
		st.Message = s.Error()
	case errors.Is(cause, errLocalTimeout) || isActionTimeout(err):
		st.State = protocol.ActionTimeout
		st.Message = fmt.Sprintf("timed out after %s: %v", asg.Step.Timeout.D(), err)
	}
	if code, ok := exitCode(err); ok {
		st.ExitCode = &code
	}
	return st
}

// report sends a status report until the runner acknowledges it. A
// refusal (4xx) is logged and dropped: asking again cannot help.
func (a *Agent) report(ctx context.Context, run string, asg *protocol.Assignment, st protocol.StatusReport) (protocol.Ack, error) {
	if st.Time.IsZero() {
		st.Time = time.Now()
	}
	var ack protocol.Ack
	err := a.retry(ctx, "status", false, func(ctx context.Context) error {
		return a.call(ctx, http.MethodPost, protocol.StatusPath(run, asg.Index), nil, st, &ack, a.cfg.RequestTimeout)
	})
	if err != nil && ctx.Err() == nil {
		a.log.Error().Err(err).Str("run", run).Int("action", asg.Index).Str("state", string(st.State)).Msg("status report refused")
	}
	return ack, err
}

// reporter buffers one attempt's log lines and progress and ships them.
type reporter struct {
	a    *Agent
	run  string
	asg  *protocol.Assignment
	log  zerolog.Logger
	kick chan struct{}

	mu       sync.Mutex
	pending  []protocol.LineText
	first    uint64 // sequence number of pending[0]
	dropped  int
	progress *protocol.Progress
}

// Line implements Reporter.
func (r *reporter) Line(stream, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) >= MaxBufferedLines {
		r.dropped++
		return
	}
	r.pending = append(r.pending, protocol.LineText{Time: time.Now(), Stream: stream, Text: text})
	if len(r.pending) >= batchLines {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// Progress implements Reporter.
func (r *reporter) Progress(p protocol.Progress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress = &p
}

// loop sends logs every FlushInterval (or as soon as a batch is full) and
// a heartbeat every Heartbeat, until ctx ends. An answer that says stop
// calls stop once.
func (r *reporter) loop(ctx context.Context, stop func(reason string)) {
	flush := time.NewTicker(r.a.cfg.FlushInterval)
	defer flush.Stop()
	beat := time.NewTicker(r.a.cfg.Heartbeat)
	defer beat.Stop()
	stopped := false
	handle := func(ack protocol.Ack) {
		if ack.Stop && !stopped {
			stopped = true
			r.log.Warn().Str("reason", ack.Reason).Msg("runner says stop")
			stop(ack.Reason)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-flush.C:
		case <-r.kick:
		case <-beat.C:
			r.mu.Lock()
			st := protocol.StatusReport{Attempt: r.asg.Attempt, State: protocol.ActionRunning, Progress: r.progress, Time: time.Now()}
			r.mu.Unlock()
			var ack protocol.Ack
			err := r.a.call(ctx, http.MethodPost, protocol.StatusPath(r.run, r.asg.Index), nil, st, &ack, r.a.cfg.RequestTimeout)
			if err != nil {
				r.log.Debug().Err(err).Msg("heartbeat failed")
				continue
			}
			handle(ack)
			continue
		}
		for {
			ack, sent, err := r.flushOnce(ctx)
			if err != nil {
				r.log.Debug().Err(err).Msg("log batch not sent, keeping it")
				break
			}
			handle(ack)
			if sent < batchLines {
				break
			}
		}
	}
}

// flushOnce sends the oldest batch of waiting lines. It returns how many
// lines it sent (0 when none wait). A refused batch (4xx) is dropped.
func (r *reporter) flushOnce(ctx context.Context) (protocol.Ack, int, error) {
	r.mu.Lock()
	n := min(len(r.pending), batchLines)
	if n < batchLines && r.dropped > 0 {
		r.pending = append(r.pending, protocol.LineText{Time: time.Now(), Stream: protocol.StreamAgent,
			Text: fmt.Sprintf("%d log lines dropped: the runner was unreachable and %d lines were waiting", r.dropped, MaxBufferedLines)})
		r.dropped = 0
		n++
	}
	b := protocol.LogBatch{Agent: r.a.id, Attempt: r.asg.Attempt, First: r.first, Lines: append([]protocol.LineText(nil), r.pending[:n]...)}
	r.mu.Unlock()
	if n == 0 {
		return protocol.Ack{}, 0, nil
	}
	var ack protocol.Ack
	err := r.a.call(ctx, http.MethodPost, protocol.LogsPath(r.run, r.asg.Index), nil, b, &ack, r.a.cfg.RequestTimeout)
	if err != nil && !permanent(err) {
		return ack, 0, err
	}
	if err != nil {
		r.log.Error().Err(err).Int("lines", n).Msg("runner refused a log batch, dropping it")
	}
	r.mu.Lock()
	r.pending = r.pending[n:]
	r.first += uint64(n)
	r.mu.Unlock()
	return ack, n, nil
}

// flushAll sends every waiting line, retrying until the runner has them
// or ctx ends.
func (r *reporter) flushAll(ctx context.Context) error {
	for {
		var sent int
		err := r.a.retry(ctx, "logs", true, func(ctx context.Context) error {
			var err error
			_, sent, err = r.flushOnce(ctx)
			return err
		})
		if err != nil {
			return err
		}
		if sent == 0 {
			return nil
		}
	}
}

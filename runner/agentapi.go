package runner

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/runner/protocol"
)

// DefaultWait is the long poll of GET /v1/agent/next without ?wait=.
const DefaultWait = 30 * time.Second

// maxLogLinesPerRun bounds one run's log; later lines are dropped with one
// note, so that a runaway action cannot fill the state directory.
const maxLogLinesPerRun = 1_000_000

type agentHandler func(w http.ResponseWriter, req *http.Request, c Claims, log zerolog.Logger) error

// agent authenticates an agent request by its bearer token: a missing
// token is 401, an invalid or expired one 403.
func (r *Runner) agent(h agentHandler) http.HandlerFunc {
	return r.recovered(func(w http.ResponseWriter, req *http.Request) error {
		tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gitmetal-agent"`)
			return errorf(http.StatusUnauthorized, "missing bearer token")
		}
		c, err := r.VerifyToken(strings.TrimSpace(tok))
		if err != nil {
			r.log.Warn().Err(err).Str("remote", req.RemoteAddr).Str("machine", c.Machine).Msg("agent token refused")
			return errorf(http.StatusForbidden, "%v", err)
		}
		log := r.log.With().Str("machine", c.Machine).Str("path", req.URL.Path).Logger()
		return h(w, req, c, log)
	})
}

// hello records the inventory and answers with the machine's current run.
func (r *Runner) hello(w http.ResponseWriter, req *http.Request, c Claims, log zerolog.Logger) error {
	var h protocol.Hello
	if err := decode(req, &h); err != nil {
		return err
	}
	snap := r.cfg.Store.Snapshot()
	rev, err := snap.Revision(nil)
	if err != nil {
		return err
	}
	if rev.ID == "" {
		return errorf(http.StatusServiceUnavailable, "desired state not loaded yet")
	}
	hw, err := snap.HardwareByName(nil, c.Machine)
	if err != nil {
		return err
	}
	if hw == nil {
		return errorf(http.StatusForbidden, "machine %q is not in the desired state", c.Machine)
	}
	own := map[string]bool{}
	for _, i := range hw.Interfaces {
		own[i.MAC] = true
	}
	var macs []string
	match := false
	for _, m := range h.MACs {
		hwa, err := net.ParseMAC(m)
		if err != nil {
			return errorf(http.StatusBadRequest, "mac %q: %v", m, err)
		}
		macs = append(macs, hwa.String())
		match = match || own[hwa.String()]
	}
	if !match {
		log.Warn().Strs("macs", macs).Msg("agent hello with a token for another machine")
		return errorf(http.StatusForbidden, "the token is for machine %q, which has none of the MACs %v", c.Machine, macs)
	}
	if h.Agent == "" || len(h.Agent) > 64 {
		return errorf(http.StatusBadRequest, "agent: want an identifier of 1 to 64 bytes")
	}
	var reply protocol.HelloReply
	err = r.write(func(o *op) error {
		if err := o.tx.PutInventory(&protocol.MachineInventory{
			Machine: c.Machine, MACs: macs, Agent: h.Agent, Version: h.Version,
			Reported: o.now, Inventory: h.Inventory,
		}); err != nil {
			return err
		}
		active, err := o.tx.MachineActive(c.Machine)
		if err != nil {
			return err
		}
		reply = protocol.HelloReply{Machine: c.Machine}
		if cur := current(active); cur != nil {
			run, err := o.tx.Run(cur.ID)
			if err != nil {
				return err
			}
			reply.Run = &protocol.RunInfo{ID: run.ID, Workflow: run.Workflow, State: run.State, Actions: len(run.Actions)}
		}
		return nil
	})
	if err != nil {
		return err
	}
	ev := log.Info().Str("agent", h.Agent).Strs("macs", macs).Str("tokenRun", c.Run)
	if reply.Run != nil {
		ev = ev.Str("run", reply.Run.ID)
	}
	ev.Msg("agent hello")
	writeJSON(w, http.StatusOK, reply)
	return nil
}

// next long-polls for the action the agent must execute.
func (r *Runner) next(w http.ResponseWriter, req *http.Request, c Claims, log zerolog.Logger) error {
	q := req.URL.Query()
	wait := DefaultWait
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return errorf(http.StatusBadRequest, "wait %q: want a duration such as 30s", s)
		}
		wait = min(d, protocol.MaxWait)
	}
	runID := q.Get("run")
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	first := true
	for {
		changed := r.changed.wait()
		snap := r.cfg.Store.Snapshot()
		settings, err := snap.Settings(nil)
		if err != nil {
			return err
		}
		rev, err := snap.Revision(nil)
		if err != nil {
			return err
		}
		suspended := func(name string) bool {
			wf, err := snap.WorkflowByName(nil, name)
			return err == nil && wf != nil && wf.Suspend
		}
		var n protocol.Next
		var wake time.Time
		var started bool
		err = r.do(func(o *op) error {
			var err error
			n, wake, started, err = o.next(c.Machine, runID, rev.ID != "", settings.Rollout.MaxInFlight, suspended)
			return err
		})
		if err != nil {
			return err
		}
		if started {
			log.Info().Str("run", n.Run).Msg("run started")
		}
		if n.Done || n.Action != nil {
			if n.Action != nil {
				log.Debug().Str("run", n.Run).Int("action", n.Action.Index).Int("attempt", n.Action.Attempt).Msg("action handed out")
			}
			writeJSON(w, http.StatusOK, n)
			return nil
		}
		if first && n.Message != "" {
			log.Debug().Str("run", n.Run).Str("reason", n.Message).Msg("agent waits")
		}
		first = false
		var retry <-chan time.Time
		var t *time.Timer
		if !wake.IsZero() {
			t = time.NewTimer(max(wake.Sub(r.now()), 0))
			retry = t.C
		}
		answer := true
		select {
		case <-changed:
			answer = false
		case <-retry:
			answer = false
		case <-timeout.C:
		case <-r.quit:
		case <-req.Context().Done():
			return nil
		}
		if t != nil {
			t.Stop()
		}
		if answer {
			writeJSON(w, http.StatusOK, n)
			return nil
		}
	}
}

// next decides what machine's agent does now; see Runner.next. A pending
// run starts only once the desired state is loaded (after a restart the
// store is empty until the reconciler applies a revision, and the rollout
// limit and suspensions are unknown). It returns when to look again without
// a state change (a retry's backoff), and whether it started a run.
func (o *op) next(machine, runID string, loaded bool, maxInFlight int, suspended func(string) bool) (protocol.Next, time.Time, bool, error) {
	if runID == "" {
		active, err := o.tx.MachineActive(machine)
		if err != nil {
			return protocol.Next{}, time.Time{}, false, err
		}
		cur := current(active)
		if cur == nil {
			return protocol.Next{}, time.Time{}, false, nil
		}
		runID = cur.ID
	}
	run, err := o.tx.Run(runID)
	if err != nil {
		return protocol.Next{}, time.Time{}, false, err
	}
	if run.Hardware != machine {
		return protocol.Next{}, time.Time{}, false, errorf(http.StatusForbidden, "run %s is not machine %q's", runID, machine)
	}
	changed, err := o.enforce(run)
	if err != nil {
		return protocol.Next{}, time.Time{}, false, err
	}
	n := protocol.Next{Run: run.ID, RunState: run.State}
	save := func() error {
		if changed {
			return o.save(run)
		}
		return nil
	}
	if run.State.Final() {
		n.Done, n.RunState, n.Message = true, run.State, run.Message
		return n, time.Time{}, false, save()
	}
	started := false
	if run.State == protocol.RunPending {
		running, err := o.tx.Running()
		if err != nil {
			return n, time.Time{}, false, err
		}
		inFlight := 0
		for _, a := range running {
			if a.Hardware == machine {
				n.Message = fmt.Sprintf("waiting for run %s of this machine to end", a.ID)
				return n, time.Time{}, false, save()
			}
			inFlight++
		}
		switch {
		case !loaded:
			n.Message = "desired state not loaded yet"
			return n, time.Time{}, false, save()
		case suspended(run.Workflow):
			n.Message = fmt.Sprintf("workflow %q is suspended", run.Workflow)
			return n, time.Time{}, false, save()
		case maxInFlight > 0 && inFlight >= maxInFlight:
			n.Message = fmt.Sprintf("rollout: %d of %d machines in flight", inFlight, maxInFlight)
			return n, time.Time{}, false, save()
		}
		if err := o.start(run, inFlight); err != nil {
			return n, time.Time{}, false, err
		}
		changed, started = true, true
		n.RunState = run.State
	}
	if running(run) < 0 && suspended(run.Workflow) {
		n.Message = fmt.Sprintf("held between actions: workflow %q is suspended", run.Workflow)
		return n, time.Time{}, started, save()
	}
	asg, wake, handed := o.handOut(run)
	changed = changed || handed
	n.Action = asg
	return n, wake, started, save()
}

// actionParams reads {run} and {n} and loads the run, which must be the
// token's machine's.
func (o *op) actionParams(req *http.Request, machine string) (*protocol.Run, int, error) {
	run, err := o.tx.Run(req.PathValue("run"))
	if err != nil {
		return nil, 0, err
	}
	if run.Hardware != machine {
		return nil, 0, errorf(http.StatusForbidden, "run %s is not machine %q's", run.ID, machine)
	}
	n, err := strconv.Atoi(req.PathValue("n"))
	if err != nil || n < 0 || n >= len(run.Actions) {
		return nil, 0, errorf(http.StatusNotFound, "run %s has no action %q", run.ID, req.PathValue("n"))
	}
	return run, n, nil
}

// status records a status report of one attempt.
func (r *Runner) status(w http.ResponseWriter, req *http.Request, c Claims, log zerolog.Logger) error {
	var rep protocol.StatusReport
	if err := decode(req, &rep); err != nil {
		return err
	}
	switch rep.State {
	case protocol.ActionRunning, protocol.ActionSuccess, protocol.ActionFailed, protocol.ActionTimeout:
	default:
		return errorf(http.StatusBadRequest, "state %q: allowed: running, success, failed, timeout", rep.State)
	}
	if rep.Attempt < 1 {
		return errorf(http.StatusBadRequest, "attempt %d: want 1 or more", rep.Attempt)
	}
	rep.Message = truncate(rep.Message, protocol.MaxLineBytes)
	var ack protocol.Ack
	var run *protocol.Run
	err := r.do(func(o *op) error {
		var err error
		run, ack, err = o.report(req, c.Machine, rep)
		return err
	})
	if err != nil {
		return err
	}
	if rep.State != protocol.ActionRunning {
		log.Info().Str("run", run.ID).Str("action", req.PathValue("n")).Int("attempt", rep.Attempt).
			Str("state", string(rep.State)).Bool("stop", ack.Stop).Msg("action reported")
	}
	writeJSON(w, http.StatusOK, ack)
	return nil
}

func (o *op) report(req *http.Request, machine string, rep protocol.StatusReport) (*protocol.Run, protocol.Ack, error) {
	run, n, err := o.actionParams(req, machine)
	if err != nil {
		return nil, protocol.Ack{}, err
	}
	changed, err := o.enforce(run)
	if err != nil {
		return nil, protocol.Ack{}, err
	}
	a := &run.Actions[n]
	quiet := false // only progress changed: no need to wake anyone
	switch {
	case rep.Attempt != a.Attempt:
	case a.State == protocol.ActionRunning && rep.State == protocol.ActionRunning:
		switch {
		case a.Step.Background:
			a.State = protocol.ActionSuccess
			a.Finished = o.now
			a.Deadline = time.Time{}
			a.Message = "started in the background"
			changed = true
		case rep.Progress != nil && (a.Progress == nil || *a.Progress != *rep.Progress):
			a.Progress = rep.Progress
			quiet = !changed
			changed = true
		}
	case a.State == protocol.ActionRunning:
		if rep.Progress != nil {
			a.Progress = rep.Progress
		}
		if err := o.endAttempt(run, n, rep.State, rep.Message, rep.ExitCode); err != nil {
			return nil, protocol.Ack{}, err
		}
		changed = true
	case a.Step.Background && a.State == protocol.ActionSuccess && rep.State != protocol.ActionRunning && rep.State != protocol.ActionSuccess:
		// The run already counted the action as done; keep what it said.
		if !strings.Contains(a.Message, "ended "+string(rep.State)) {
			a.Message = fmt.Sprintf("started in the background, then ended %s: %s", rep.State, rep.Message)
			if err := o.note(run, n, a.Attempt, "background action %q ended %s after it started: %s", a.Step.Name, rep.State, rep.Message); err != nil {
				return nil, protocol.Ack{}, err
			}
			changed = true
		}
	}
	if changed {
		if _, err := o.settle(run); err != nil {
			return nil, protocol.Ack{}, err
		}
		if quiet {
			if !o.write {
				return nil, protocol.Ack{}, errNeedWrite
			}
			err = o.tx.PutRun(elapsed(run))
		} else {
			err = o.save(run)
		}
		if err != nil {
			return nil, protocol.Ack{}, err
		}
	}
	// Stop matters only to an agent still executing the attempt; a final
	// report ends it anyway.
	ack := protocol.Ack{}
	if rep.State == protocol.ActionRunning {
		if reason := stopReason(run, n, rep.Attempt); reason != "" {
			ack.Stop, ack.Reason = true, reason
		}
	}
	return run, ack, nil
}

// postLogs stores a batch of log lines.
func (r *Runner) postLogs(w http.ResponseWriter, req *http.Request, c Claims, log zerolog.Logger) error {
	var b protocol.LogBatch
	if err := decode(req, &b); err != nil {
		return err
	}
	switch {
	case b.Agent == "" || len(b.Agent) > 64:
		return errorf(http.StatusBadRequest, "agent: want an identifier of 1 to 64 bytes")
	case b.Attempt < 1:
		return errorf(http.StatusBadRequest, "attempt %d: want 1 or more", b.Attempt)
	case len(b.Lines) > protocol.MaxLinesPerBatch:
		return errorf(http.StatusBadRequest, "%d lines: at most %d per batch", len(b.Lines), protocol.MaxLinesPerBatch)
	}
	var ack protocol.Ack
	err := r.write(func(o *op) error {
		run, n, err := o.actionParams(req, c.Machine)
		if err != nil {
			return err
		}
		changed, err := o.enforce(run)
		if err != nil {
			return err
		}
		if changed {
			if err := o.save(run); err != nil {
				return err
			}
		}
		lines := make([]protocol.LogLine, len(b.Lines))
		for i, l := range b.Lines {
			stream := l.Stream
			if stream == "" || len(stream) > 16 {
				stream = protocol.StreamStdout
			}
			lines[i] = protocol.LogLine{
				Time: l.Time, Action: n, Attempt: b.Attempt, Stream: stream,
				Text: truncate(l.Text, protocol.MaxLineBytes),
			}
		}
		stored, err := o.tx.AppendLogs(run.ID, fmt.Sprintf("%s/%d/%d", b.Agent, n, b.Attempt), b.First, lines, maxLogLinesPerRun)
		if err != nil {
			return err
		}
		if stored > 0 {
			o.logs = true
		}
		ack.Stored = stored
		if reason := stopReason(run, n, b.Attempt); reason != "" {
			ack.Stop, ack.Reason = true, reason
		}
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ack)
	return nil
}

// Package protocol holds the types the runner and the agent exchange over
// HTTP (under /v1/agent/) and the run records the runner shows people (under
// /v1/runs). Both sides import it; it has no behaviour beyond small helpers
// on the types, so that the agent does not pull the runner's journal into
// its binary and the wire format has exactly one definition.
//
// The agent protocol, all JSON, authenticated with "Authorization: Bearer
// <token>" (the per-boot token from the kernel command line):
//
//	POST /v1/agent/hello                          Hello → HelloReply
//	GET  /v1/agent/next?run=ID&wait=30s           → Next (long poll)
//	POST /v1/agent/runs/{run}/actions/{n}/status  StatusReport → Ack
//	POST /v1/agent/runs/{run}/actions/{n}/logs    LogBatch → Ack
//
// Every request is idempotent: the agent retries until it gets a 2xx, and a
// repeated status report (same action and attempt) or log batch (same agent
// instance and sequence numbers) changes nothing the second time. A 2xx
// means the report is on disk.
//
// This package must not grow logic: state machines live in the runner, the
// client loop in the agent.
package protocol

import (
	"fmt"
	"time"

	"github.com/gitmetal/gitmetal/schema"
)

// RunState is the state of a run.
type RunState string

// The run states. A run is pending until an agent of its machine asks for
// work and the rollout allows it, then running until it ends in one of the
// final states.
const (
	RunPending   RunState = "pending"
	RunRunning   RunState = "running"
	RunSuccess   RunState = "success"
	RunFailed    RunState = "failed"
	RunTimeout   RunState = "timeout"
	RunCancelled RunState = "cancelled"
)

// Final reports whether s is an end state.
func (s RunState) Final() bool {
	switch s {
	case RunSuccess, RunFailed, RunTimeout, RunCancelled:
		return true
	}
	return false
}

// Active reports whether a run in state s still needs its machine: it is
// pending or running. The iPXE script loads the installer exactly then.
func (s RunState) Active() bool { return s == RunPending || s == RunRunning }

// ActionState is the state of one action of a run.
type ActionState string

// The action states.
const (
	ActionPending ActionState = "pending"
	ActionRunning ActionState = "running"
	ActionSuccess ActionState = "success"
	ActionFailed  ActionState = "failed"
	ActionTimeout ActionState = "timeout"
	ActionSkipped ActionState = "skipped"
)

// Final reports whether s is an end state.
func (s ActionState) Final() bool {
	switch s {
	case ActionSuccess, ActionFailed, ActionTimeout, ActionSkipped:
		return true
	}
	return false
}

// Run is one execution of a workflow on its machine, as the runner journals
// it and shows it at GET /v1/runs/{id}. The actions were rendered when the
// run was created and never change afterwards: a run executes what was
// decided, even when git moves on.
type Run struct {
	ID       string `json:"id"`
	Workflow string `json:"workflow"`
	Hardware string `json:"hardware"`
	Template string `json:"template"`
	// Revision is the git revision the run was derived from.
	Revision string `json:"revision"`
	// Digest is schema.Rendered.Digest of the frozen actions.
	Digest string `json:"digest"`
	// Generation and Policy are the workflow's when the run was created.
	Generation int           `json:"generation"`
	Policy     schema.Policy `json:"policy"`
	// Reason says why the run was created ("first run", "rendered workflow
	// changed", "generation bumped to 3", ...).
	Reason string   `json:"reason"`
	State  RunState `json:"state"`
	// Message says why the run ended, when it did not succeed.
	Message string `json:"message,omitempty"`
	// Timeout is the template's global timeout; zero is none.
	Timeout  schema.Duration `json:"timeout,omitzero"`
	Created  time.Time       `json:"created"`
	Started  time.Time       `json:"started,omitzero"`
	Finished time.Time       `json:"finished,omitzero"`
	// Elapsed is Finished - Started once the run ended.
	Elapsed schema.Duration `json:"duration,omitzero"`
	// Deadline is Started + Timeout while the run runs with a timeout.
	Deadline time.Time `json:"deadline,omitzero"`
	// Stopping is set when the run must end after its current action (its
	// workflow was removed from git); it says why.
	Stopping string `json:"stopping,omitempty"`
	// FailedAction is the index of the main action whose failure ended the
	// normal sequence, or -1; its onFailure steps run next.
	FailedAction int `json:"failedAction"`
	// Actions are the template's actions, each followed by its onFailure
	// steps, in that order; an action's index here is its {n} in the agent
	// protocol.
	Actions []Action `json:"actions"`
}

// Duration is how long the run took, or has taken by now.
func (r *Run) Duration(now time.Time) time.Duration {
	switch {
	case r.Started.IsZero():
		return 0
	case r.Finished.IsZero():
		return now.Sub(r.Started)
	}
	return r.Finished.Sub(r.Started)
}

// Current returns the index of the action that is running, else of the
// first pending main action, else -1.
func (r *Run) Current() int {
	for i := range r.Actions {
		if r.Actions[i].State == ActionRunning {
			return i
		}
	}
	for i := range r.Actions {
		if r.Actions[i].State == ActionPending && r.Actions[i].OnFailureOf < 0 {
			return i
		}
	}
	return -1
}

// Action is one action of a run (a main action of the template or an
// onFailure step of one) and what became of it.
type Action struct {
	Index int `json:"index"`
	// OnFailureOf is the index of the main action this step handles the
	// failure of, or -1 for a main action.
	OnFailureOf int         `json:"onFailureOf"`
	Step        schema.Step `json:"step"`
	State       ActionState `json:"state"`
	// Attempt is the number of attempts handed out so far (0 before the
	// first); at most 1 + Step.Retries.
	Attempt int `json:"attempt"`
	// Started is when the first attempt started; Finished when the last
	// ended.
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// Elapsed is Finished - Started once the action ended.
	Elapsed schema.Duration `json:"duration,omitzero"`
	// Deadline is when the current attempt times out (Step.Timeout after it
	// started); zero when the step has no timeout.
	Deadline time.Time `json:"deadline,omitzero"`
	// NotBefore holds back a retry until its backoff has passed.
	NotBefore time.Time `json:"notBefore,omitzero"`
	Message   string    `json:"message,omitempty"`
	ExitCode  *int      `json:"exitCode,omitempty"`
	Progress  *Progress `json:"progress,omitempty"`
}

// Duration is how long the action took, or has taken by now.
func (a *Action) Duration(now time.Time) time.Duration {
	switch {
	case a.Started.IsZero():
		return 0
	case a.Finished.IsZero():
		return now.Sub(a.Started)
	}
	return a.Finished.Sub(a.Started)
}

// Progress says how far a long action (an image write) is.
type Progress struct {
	// Bytes done so far and the Total expected (0 when unknown).
	Bytes int64 `json:"bytes"`
	Total int64 `json:"total,omitempty"`
	// Rate is the recent rate in bytes per second.
	Rate float64 `json:"rate,omitempty"`
	// Text is a free-form note ("verifying checksum").
	Text string `json:"text,omitempty"`
}

func (p Progress) String() string {
	s := humanBytes(p.Bytes)
	if p.Total > 0 {
		s = fmt.Sprintf("%s/%s %.0f%%", s, humanBytes(p.Total), 100*float64(p.Bytes)/float64(p.Total))
	}
	if p.Rate > 0 {
		s += " " + humanBytes(int64(p.Rate)) + "/s"
	}
	if p.Text != "" {
		s += " " + p.Text
	}
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// LogLine is one line of an action's output, or a note from the runner.
type LogLine struct {
	// Seq is the line's place in the run's log, assigned by the runner.
	Seq uint64 `json:"seq"`
	// Time is when the agent saw the line (the runner's time for its own).
	Time time.Time `json:"time"`
	// Action is the action's index, or -1 for a note about the whole run.
	Action  int    `json:"action"`
	Attempt int    `json:"attempt,omitempty"`
	Stream  string `json:"stream"`
	Text    string `json:"text"`
}

// String formats the line for a terminal: time, action and attempt,
// stream, text.
func (l LogLine) String() string {
	where := "run"
	if l.Action >= 0 {
		where = fmt.Sprintf("%d.%d", l.Action, l.Attempt)
	}
	return fmt.Sprintf("%s %-5s %-6s %s", l.Time.Local().Format("15:04:05.000"), where, l.Stream, l.Text)
}

// Streams of log lines.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
	// StreamAgent holds the agent's own notes about an action.
	StreamAgent = "agent"
	// StreamRunner holds the runner's notes (timeouts, retries, cancel).
	StreamRunner = "runner"
)

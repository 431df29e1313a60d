package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/gitmetal/gitmetal/agent/actions"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
)

// ActionsExecutor runs steps with the built-in actions (agent/actions).
type ActionsExecutor struct {
	Actions *actions.Actions
}

// NewActionsExecutor returns an Executor of the built-in actions made with
// cfg; the installer's agent sets cfg.AllowReboot.
func NewActionsExecutor(cfg actions.Config) (*ActionsExecutor, error) {
	a, err := actions.New(cfg)
	if err != nil {
		return nil, err
	}
	return &ActionsExecutor{Actions: a}, nil
}

// Run implements Executor.
func (e *ActionsExecutor) Run(ctx context.Context, step schema.Step, out Reporter) error {
	return e.Actions.Run(ctx, step, actionsReporter{out})
}

// actionsReporter adapts a Reporter to the actions' one.
type actionsReporter struct{ out Reporter }

func (r actionsReporter) Logf(format string, args ...any) {
	r.out.Line(protocol.StreamStdout, fmt.Sprintf(format, args...))
}

func (r actionsReporter) Stderr(line string) { r.out.Line(protocol.StreamStderr, line) }

func (r actionsReporter) Progress(p actions.Progress) {
	text := ""
	if p.Written > 0 {
		text = "wrote " + protocol.Progress{Bytes: p.Written}.String()
	}
	r.out.Progress(protocol.Progress{Bytes: p.Done, Total: p.Total, Rate: p.Rate, Text: text})
}

// exitCode finds a process exit status in err.
func exitCode(err error) (int, bool) {
	var ae *actions.ExitError
	if errors.As(err, &ae) {
		return ae.Code, true
	}
	var ec exitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode(), true
	}
	return 0, false
}

// isActionTimeout reports whether err says the action's own timeout
// stopped it.
func isActionTimeout(err error) bool {
	var te *actions.TimeoutError
	return errors.As(err, &te)
}

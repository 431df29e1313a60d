// Package agent is the program on the machine being provisioned: the
// client side of the runner's agent protocol (runner/protocol). It says
// hello with the machine's inventory, long-polls the runner for the next
// action, executes it through an Executor (the built-in actions in
// agent/actions by default), streams the action's log lines and progress,
// and reports how each attempt ended.
//
// Rules it keeps:
//
//   - It stays up whatever happens: a runner that is down, restarting or
//     answering errors is retried with capped exponential backoff, forever,
//     until the context ends. It never exits because of a failed action.
//   - It does one action at a time, in the order the runner hands them out,
//     and asks for the next only when the previous attempt is reported. A
//     runner that hands the same attempt again (it restarted, or an answer
//     was lost) gets it executed again: actions are written to be
//     re-runnable.
//   - Log lines are batched and sent at least every FlushInterval and at
//     the end of each action, before its final status; each batch carries
//     sequence numbers, so a batch retried after a lost answer is stored
//     once. While an action runs, a heartbeat status carries its progress;
//     an answer that says stop cancels the action (it timed out on the
//     runner's clock, or the run ended).
//   - A background action (kexec, reboot) is reported started before it
//     runs, and the agent goes on without waiting for it.
//
// What it must not do: decide anything about runs (retries, timeouts,
// rollout are the runner's), or read flags, the kernel command line or the
// environment (cmd does, for `gitmetal agent` and the installer's PID 1).
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/agent/actions"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
)

// Executor runs one action. It returns nil when the action succeeded; an
// error that has an ExitCode() int method (or is an *actions.ExitError)
// gives the exit code. It must return soon after ctx ends.
type Executor interface {
	Run(ctx context.Context, step schema.Step, out Reporter) error
}

// ExecutorFunc is a function that is an Executor.
type ExecutorFunc func(ctx context.Context, step schema.Step, out Reporter) error

// Run implements Executor.
func (f ExecutorFunc) Run(ctx context.Context, step schema.Step, out Reporter) error {
	return f(ctx, step, out)
}

// Reporter receives what a running action has to say. It is safe for
// concurrent use.
type Reporter interface {
	// Line records one line of output (without the newline) on a stream:
	// protocol.StreamStdout, StreamStderr or StreamAgent.
	Line(stream, text string)
	// Progress records how far the action is; the latest goes to the
	// runner with the next heartbeat.
	Progress(p protocol.Progress)
}

// Defaults of Config.
const (
	DefaultWait           = 30 * time.Second
	DefaultHeartbeat      = 5 * time.Second
	DefaultFlushInterval  = time.Second
	DefaultMinBackoff     = 250 * time.Millisecond
	DefaultMaxBackoff     = 15 * time.Second
	DefaultRequestTimeout = 30 * time.Second
	// MaxBufferedLines is how many log lines an action may have waiting
	// for an unreachable runner; later ones are counted and dropped.
	MaxBufferedLines = 100_000
	// batchLines is the most lines sent in one request.
	batchLines = 1000
)

// Config configures an Agent.
type Config struct {
	// Server is the runner's base URL (http://10.0.0.1:8080). Required.
	Server string
	// Token is the per-boot token (gitmetal.token= on the kernel command
	// line). Required.
	Token string
	// MACs are the machine's NIC addresses; the runner checks that one
	// belongs to the token's machine. Required.
	MACs []string
	// Executor runs the actions. Default: the built-in actions
	// (agent/actions) with their default configuration, which refuses to
	// kexec or reboot; the installer passes NewActionsExecutor with
	// AllowReboot set.
	Executor Executor
	// Log is the agent's logger.
	Log zerolog.Logger
	// HTTPClient talks to the runner. Default: a client with 10s dial and
	// TLS handshake timeouts; each request has its own deadline.
	HTTPClient *http.Client
	// Wait is the long poll asked of GET next (default 30s).
	Wait time.Duration
	// Heartbeat is how often a running action's status (and progress) is
	// sent (default 5s).
	Heartbeat time.Duration
	// FlushInterval is the longest a log line waits to be sent (default
	// 1s).
	FlushInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries of a
	// request that failed (defaults 250ms and 15s).
	MinBackoff, MaxBackoff time.Duration
	// RequestTimeout bounds each request other than the long poll, which
	// gets Wait more (default 30s).
	RequestTimeout time.Duration
	// Root is where /proc, /sys and /dev are read for the inventory
	// (default "/").
	Root string
	// Version is reported in hello.
	Version string
}

// Result is how the agent's run ended.
type Result struct {
	Run     string            `json:"run"`
	State   protocol.RunState `json:"state"`
	Message string            `json:"message,omitempty"`
}

// Agent is the client loop.
type Agent struct {
	cfg  Config
	log  zerolog.Logger
	base *url.URL
	// id names this agent process to the runner; log batches are
	// deduplicated per id.
	id string
	// bg tracks background actions.
	bg sync.WaitGroup
}

// New validates cfg and fills in its defaults.
func New(cfg Config) (*Agent, error) {
	if cfg.Server == "" || cfg.Token == "" {
		return nil, errors.New("agent: Server and Token are required")
	}
	base, err := url.Parse(strings.TrimRight(cfg.Server, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("agent: Server %q: want an http:// or https:// URL", cfg.Server)
	}
	if strings.ContainsAny(cfg.Token, " \t\r\n") {
		return nil, errors.New("agent: Token contains white space")
	}
	if len(cfg.MACs) == 0 {
		return nil, errors.New("agent: at least one MAC is required")
	}
	for i, m := range cfg.MACs {
		hw, err := net.ParseMAC(m)
		if err != nil {
			return nil, fmt.Errorf("agent: MAC %q: %w", m, err)
		}
		cfg.MACs[i] = hw.String()
	}
	if cfg.Executor == nil {
		ex, err := NewActionsExecutor(actions.Config{Log: cfg.Log})
		if err != nil {
			return nil, fmt.Errorf("agent: built-in actions: %w", err)
		}
		cfg.Executor = ex
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"Wait", &cfg.Wait, DefaultWait},
		{"Heartbeat", &cfg.Heartbeat, DefaultHeartbeat},
		{"FlushInterval", &cfg.FlushInterval, DefaultFlushInterval},
		{"MinBackoff", &cfg.MinBackoff, DefaultMinBackoff},
		{"MaxBackoff", &cfg.MaxBackoff, DefaultMaxBackoff},
		{"RequestTimeout", &cfg.RequestTimeout, DefaultRequestTimeout},
	} {
		switch {
		case *d.v < 0:
			return nil, fmt.Errorf("agent: %s %s: want a positive duration", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("agent: MaxBackoff %s is less than MinBackoff %s", cfg.MaxBackoff, cfg.MinBackoff)
	}
	if cfg.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil // the runner is on the provisioning network
		t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		t.TLSHandshakeTimeout = 10 * time.Second
		cfg.HTTPClient = &http.Client{Transport: t}
	}
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	b := make([]byte, 8)
	rand.Read(b)
	return &Agent{
		cfg:  cfg,
		log:  cfg.Log.With().Str("component", "agent").Logger(),
		base: base,
		id:   hex.EncodeToString(b),
	}, nil
}

// Run says hello, then executes the actions the runner hands out until the
// run ends (it returns the run's end) or ctx ends (it returns ctx's
// error). Background actions still going when the run ends are waited for:
// they usually end the machine's life first. A machine with no run waits
// for one. Calling Run again serves the machine's next run, if any (a
// machine with two workflows, or a run created after a failure).
func (a *Agent) Run(ctx context.Context) (Result, error) {
	defer a.bg.Wait()
	inv := ReadInventory(a.cfg.Root)
	reply, err := a.hello(ctx, inv)
	if err != nil {
		return Result{}, err
	}
	runID := ""
	if reply.Run != nil {
		runID = reply.Run.ID
		a.log.Info().Str("machine", reply.Machine).Str("run", runID).Str("workflow", reply.Run.Workflow).
			Str("state", string(reply.Run.State)).Msg("runner has a run for this machine")
	} else {
		a.log.Info().Str("machine", reply.Machine).Msg("no run for this machine yet, waiting")
	}
	for {
		n, err := a.next(ctx, runID)
		if err != nil {
			return Result{}, err
		}
		switch {
		case n.Done:
			a.log.Info().Str("run", n.Run).Str("state", string(n.RunState)).Str("message", n.Message).Msg("run ended")
			return Result{Run: n.Run, State: n.RunState, Message: n.Message}, nil
		case n.Action != nil:
			runID = n.Run
			if err := a.execute(ctx, n.Run, n.Action); err != nil {
				return Result{}, err
			}
		case n.Run != "" && runID == "":
			runID = n.Run
		}
	}
}

// hello says hello until the runner answers.
func (a *Agent) hello(ctx context.Context, inv protocol.Inventory) (protocol.HelloReply, error) {
	var reply protocol.HelloReply
	h := protocol.Hello{MACs: a.cfg.MACs, Agent: a.id, Version: a.cfg.Version, Inventory: inv}
	err := a.retry(ctx, "hello", true, func(ctx context.Context) error {
		return a.call(ctx, http.MethodPost, protocol.PathHello, nil, h, &reply, a.cfg.RequestTimeout)
	})
	return reply, err
}

// next long-polls for what to do. A run the runner does not know (its
// state was reset) is forgotten and the machine's current run asked for.
func (a *Agent) next(ctx context.Context, runID string) (protocol.Next, error) {
	var n protocol.Next
	err := a.retry(ctx, "next", true, func(ctx context.Context) error {
		q := url.Values{"wait": {a.cfg.Wait.String()}}
		if runID != "" {
			q.Set("run", runID)
		}
		n = protocol.Next{}
		err := a.call(ctx, http.MethodGet, protocol.PathNext, q, nil, &n, a.cfg.Wait+a.cfg.RequestTimeout)
		var se *statusError
		if errors.As(err, &se) && se.code == http.StatusNotFound && runID != "" {
			a.log.Warn().Str("run", runID).Msg("runner does not know the run, asking for the machine's current run")
			runID = ""
		}
		return err
	})
	return n, err
}

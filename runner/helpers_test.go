package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/agent"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/runner"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/fleetgen"
	"github.com/gitmetal/gitmetal/test/logbuf"
)

// waitFor is the bound of every wait for a milestone: generous, for a
// loaded 2-core machine under -race.
const waitFor = 90 * time.Second

// shell is the tests' executor: "exec" runs Step.Args as a real process
// and reports each line of its output. It stands in for agent/actions,
// whose exec the agent package's tests run.
type shell struct{}

func (shell) Run(ctx context.Context, step schema.Step, out agent.Reporter) error {
	if step.Uses != "exec" || len(step.Args) == 0 {
		return fmt.Errorf("test executor: cannot run %q with args %q", step.Uses, step.Args)
	}
	cmd := exec.CommandContext(ctx, step.Args[0], step.Args[1:]...)
	cmd.Env = os.Environ()
	for k, v := range step.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.WaitDelay = 5 * time.Second
	stdout := &lineWriter{out: out, stream: protocol.StreamStdout}
	stderr := &lineWriter{out: out, stream: protocol.StreamStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	stdout.flush()
	stderr.flush()
	return err
}

type lineWriter struct {
	out    agent.Reporter
	stream string
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.out.Line(w.stream, string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.out.Line(w.stream, string(w.buf))
		w.buf = nil
	}
}

// Fleet building.

func machine(n int) *schema.Hardware {
	return &schema.Hardware{
		Name: fleetgen.Name(n),
		Interfaces: []schema.Interface{{
			MAC: fleetgen.MAC(n), IP: fleetgen.IP(n) + "/24", Gateway: fleetgen.Gateway(n),
			Arch: "x86_64", LeaseTime: schema.DefaultLeaseTime,
			Netboot: schema.Netboot{AllowPXE: true},
		}},
	}
}

func sh(name, script string) schema.Action {
	return schema.Action{Step: schema.Step{Name: name, Uses: "exec", Args: []string{"/bin/sh", "-c", script}}}
}

func template(name string, actions ...schema.Action) *schema.Template {
	return &schema.Template{Name: name, Actions: actions}
}

func workflow(name string, hw *schema.Hardware, t *schema.Template, mods ...func(*schema.Workflow)) *schema.Workflow {
	w := &schema.Workflow{Name: name, Hardware: hw.Name, Template: t.Name, Policy: schema.PolicyOnChange}
	for _, m := range mods {
		m(w)
	}
	return w
}

// fleet makes a fleet of the objects given (machines, templates,
// workflows, settings).
func fleet(objs ...any) *schema.Fleet {
	f := &schema.Fleet{
		Hardware:  map[string]*schema.Hardware{},
		Templates: map[string]*schema.Template{},
		Workflows: map[string]*schema.Workflow{},
	}
	for _, o := range objs {
		switch o := o.(type) {
		case *schema.Hardware:
			f.Hardware[o.Name] = o
		case *schema.Template:
			f.Templates[o.Name] = o
		case *schema.Workflow:
			f.Workflows[o.Name] = o
		case *schema.Settings:
			f.Settings = o
		default:
			panic(fmt.Sprintf("fleet: %T", o))
		}
	}
	return f
}

// harness is a runner on a real state directory, served over real HTTP,
// deriving from a real store.
type harness struct {
	t   *testing.T
	st  *store.Store
	r   *runner.Runner
	srv *httptest.Server
	dir string
	rev int
	now *clock
	// sentinel numbers the sentinel workflows of sync.
	// logs holds the runner's log lines.
	logs         *logbuf.Buffer
	sentinel     int
	sentinelObjs []any
	// stop shuts the runner and its server down (also at cleanup).
	stop func()
	// keepRuns is the runner's Config.KeepRuns.
	keepRuns int
}

// clock is time.Now shifted by an offset the test sets.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

func testLogger(t *testing.T) zerolog.Logger {
	if testing.Verbose() {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	}
	return zerolog.Nop()
}

func newHarness(t *testing.T, f *schema.Fleet) *harness {
	t.Helper()
	return newHarnessKeeping(t, f, 0)
}

// newHarnessKeeping is newHarness with a runner that keeps keepRuns ended
// runs per workflow.
func newHarnessKeeping(t *testing.T, f *schema.Fleet, keepRuns int) *harness {
	t.Helper()
	st, err := store.New()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, st: st, dir: t.TempDir(), now: &clock{}, keepRuns: keepRuns}
	if f != nil {
		h.apply(f)
	}
	h.start()
	return h
}

// start opens the runner on h.dir and serves it.
func (h *harness) start() {
	t := h.t
	t.Helper()
	if h.logs == nil {
		h.logs = &logbuf.Buffer{}
	}
	log := zerolog.New(h.logs).Level(zerolog.DebugLevel)
	if testing.Verbose() {
		log = zerolog.New(zerolog.MultiLevelWriter(h.logs, zerolog.NewTestWriter(t))).Level(zerolog.DebugLevel)
	}
	r, err := runner.New(runner.Config{
		Store:        h.st,
		StateDir:     h.dir,
		RetryBackoff: 100 * time.Millisecond,
		KeepRuns:     h.keepRuns,
		Log:          log,
		Now:          h.now.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	r.Register(mux)
	srv := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	h.r, h.srv = r, srv
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runner Run: %v", err)
		}
		srv.Close()
		if err := r.Close(); err != nil {
			t.Errorf("runner Close: %v", err)
		}
	}
	h.stop = stop
	t.Cleanup(stop)
}

func (h *harness) apply(f *schema.Fleet) {
	h.t.Helper()
	h.rev++
	if _, err := h.st.Apply(fmt.Sprintf("rev%d", h.rev), f); err != nil {
		h.t.Fatalf("apply: %v", err)
	}
}

// runs returns the runs, newest first.
func (h *harness) runs() []protocol.Run {
	h.t.Helper()
	runs, err := h.r.Runs(100000, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return runs
}

// waitRuns waits until cond holds for the runs (newest first) and returns
// them.
func (h *harness) waitRuns(what string, cond func([]protocol.Run) bool) []protocol.Run {
	h.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		runs := h.runs()
		if cond(runs) {
			return runs
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("waiting for %s: gave up after %s; runs:\n%s", what, waitFor, dump(runs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRun waits until run id satisfies cond.
func (h *harness) waitRun(id, what string, cond func(*protocol.Run) bool) *protocol.Run {
	h.t.Helper()
	var got *protocol.Run
	h.waitRuns(what, func(runs []protocol.Run) bool {
		for i := range runs {
			if runs[i].ID == id {
				got = &runs[i]
				return cond(got)
			}
		}
		return false
	})
	return got
}

func dump(runs []protocol.Run) string {
	var b strings.Builder
	runner.WriteRuns(&b, runs, time.Now())
	return b.String()
}

// token returns an installer token for hw, which must have an active run.
func (h *harness) token(hw *schema.Hardware) string {
	h.t.Helper()
	tok, ok, err := h.r.Install(context.Background(), hw, hw.Interfaces[0].MAC)
	if err != nil || !ok {
		h.t.Fatalf("Install(%s) = %v, %v; want a token", hw.Name, ok, err)
	}
	return tok
}

// agent returns an agent for hw with the test's short intervals.
func (h *harness) agent(hw *schema.Hardware, ex agent.Executor) *agent.Agent {
	h.t.Helper()
	return newAgent(h.t, h.srv.URL, h.token(hw), hw, ex)
}

func newAgent(t *testing.T, server, token string, hw *schema.Hardware, ex agent.Executor) *agent.Agent {
	t.Helper()
	a, err := agent.New(agent.Config{
		Server:        server,
		Token:         token,
		MACs:          []string{hw.Interfaces[0].MAC},
		Executor:      ex,
		Log:           testLogger(t).With().Str("machine", hw.Name).Logger(),
		Wait:          5 * time.Second,
		Heartbeat:     200 * time.Millisecond,
		FlushInterval: 100 * time.Millisecond,
		MinBackoff:    20 * time.Millisecond,
		MaxBackoff:    300 * time.Millisecond,
		Root:          "/",
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type agentResult struct {
	res agent.Result
	err error
}

// runAgent runs a in the background until it returns or the test ends.
func runAgent(t *testing.T, a *agent.Agent) <-chan agentResult {
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan agentResult, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, err := a.Run(ctx)
		out <- agentResult{res, err}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return out
}

func wait(t *testing.T, ch <-chan agentResult) agentResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitFor):
		t.Fatalf("agent did not end within %s", waitFor)
	}
	return agentResult{}
}

// getJSON GETs path from the runner's API into v and returns the status.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK && v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode
}

// logLines returns the text of run id's log lines of one stream.
func (h *harness) logLines(id, stream string) []string {
	h.t.Helper()
	resp, err := http.Get(h.srv.URL + "/v1/runs/" + id + "/logs")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []string
	dec := json.NewDecoder(resp.Body)
	for {
		var l protocol.LogLine
		if err := dec.Decode(&l); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			h.t.Fatal(err)
		}
		if stream == "" || l.Stream == stream {
			out = append(out, l.Text)
		}
	}
}

// states returns each action's state.
func states(run *protocol.Run) []protocol.ActionState {
	out := make([]protocol.ActionState, len(run.Actions))
	for i := range run.Actions {
		out[i] = run.Actions[i].State
	}
	return out
}

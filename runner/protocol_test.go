package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
)

// raw speaks the agent protocol by hand, to test what the agent package
// never does on purpose: repeats, stale attempts, silence.
type raw struct {
	t     *testing.T
	url   string
	token string
}

func (c raw) do(method, path string, in, out any) int {
	c.t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			c.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.url+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

func (c raw) hello(hw *schema.Hardware) (protocol.HelloReply, int) {
	var reply protocol.HelloReply
	code := c.do(http.MethodPost, protocol.PathHello, protocol.Hello{MACs: []string{hw.Interfaces[0].MAC}, Agent: "raw"}, &reply)
	return reply, code
}

func (c raw) next(run string) protocol.Next {
	c.t.Helper()
	var n protocol.Next
	if code := c.do(http.MethodGet, protocol.PathNext+"?wait=0s&run="+run, nil, &n); code != http.StatusOK {
		c.t.Fatalf("next: %d", code)
	}
	return n
}

func (c raw) status(run string, n int, st protocol.StatusReport) protocol.Ack {
	c.t.Helper()
	var ack protocol.Ack
	if code := c.do(http.MethodPost, protocol.StatusPath(run, n), st, &ack); code != http.StatusOK {
		c.t.Fatalf("status %+v: %d", st, code)
	}
	return ack
}

func (c raw) logs(run string, n int, b protocol.LogBatch) protocol.Ack {
	c.t.Helper()
	var ack protocol.Ack
	if code := c.do(http.MethodPost, protocol.LogsPath(run, n), b, &ack); code != http.StatusOK {
		c.t.Fatalf("logs: %d", code)
	}
	return ack
}

func lines(texts ...string) []protocol.LineText {
	out := make([]protocol.LineText, len(texts))
	for i, s := range texts {
		out[i] = protocol.LineText{Time: time.Now(), Stream: protocol.StreamStdout, Text: s}
	}
	return out
}

// Every agent request may be repeated: a repeated log batch is stored
// once, a repeated final status changes nothing, and the running action is
// handed out again with the same attempt.
func TestIdempotentReports(t *testing.T) {
	t.Parallel()
	m := machine(1)
	tpl := template("t", sh("one", "true"), sh("two", "true"))
	h := newHarness(t, fleet(m, tpl, workflow("w", m, tpl)))
	h.waitRuns("a run", func(r []protocol.Run) bool { return len(r) == 1 })
	c := raw{t: t, url: h.srv.URL, token: h.token(m)}
	reply, code := c.hello(m)
	if code != http.StatusOK || reply.Run == nil {
		t.Fatalf("hello: %d %+v, want 200 with a run", code, reply)
	}
	id := reply.Run.ID
	n := c.next(id)
	if n.Action == nil || n.Action.Index != 0 || n.Action.Attempt != 1 {
		t.Fatalf("next: %+v, want action 0 attempt 1", n)
	}
	// The answer was "lost": asking again hands out the same attempt.
	if again := c.next(id); again.Action == nil || again.Action.Index != 0 || again.Action.Attempt != 1 {
		t.Fatalf("next again: %+v, want action 0 attempt 1 again", again)
	}
	c.status(id, 0, protocol.StatusReport{Attempt: 1, State: protocol.ActionRunning})
	batch := protocol.LogBatch{Agent: "raw", Attempt: 1, First: 0, Lines: lines("a", "b", "c")}
	if ack := c.logs(id, 0, batch); ack.Stored != 3 || ack.Stop {
		t.Errorf("first batch: %+v, want 3 stored", ack)
	}
	if ack := c.logs(id, 0, batch); ack.Stored != 0 {
		t.Errorf("repeated batch: %+v, want 0 stored", ack)
	}
	// Overlapping: the agent resent b, c with two new lines.
	if ack := c.logs(id, 0, protocol.LogBatch{Agent: "raw", Attempt: 1, First: 1, Lines: lines("b", "c", "d", "e")}); ack.Stored != 2 {
		t.Errorf("overlapping batch: %+v, want 2 stored", ack)
	}
	exit := 0
	for range 2 {
		c.status(id, 0, protocol.StatusReport{Attempt: 1, State: protocol.ActionSuccess, ExitCode: &exit})
	}
	if diff := cmp.Diff([]string{"a", "b", "c", "d", "e"}, h.logLines(id, protocol.StreamStdout)); diff != "" {
		t.Errorf("stored lines (-want +got):\n%s", diff)
	}
	run, err := h.r.RunByID(id)
	if err != nil {
		t.Fatal(err)
	}
	if a := run.Actions[0]; a.State != protocol.ActionSuccess || a.Attempt != 1 || run.Actions[1].State != protocol.ActionPending {
		t.Errorf("after repeated success: action 0 %s attempt %d, action 1 %s; want success 1, pending", a.State, a.Attempt, run.Actions[1].State)
	}
	if n := c.next(id); n.Action == nil || n.Action.Index != 1 {
		t.Errorf("next after action 0: %+v, want action 1", n)
	}
	// A report about an action that is not running gets 200 and stop.
	if ack := c.status(id, 0, protocol.StatusReport{Attempt: 1, State: protocol.ActionRunning}); !ack.Stop {
		t.Errorf("heartbeat of an ended attempt: %+v, want stop", ack)
	}
	if code := c.do(http.MethodPost, protocol.StatusPath(id, 7), protocol.StatusReport{Attempt: 1, State: protocol.ActionSuccess}, nil); code != http.StatusNotFound {
		t.Errorf("status of action 7: %d, want 404", code)
	}
	if code := c.do(http.MethodPost, protocol.StatusPath(id, 1), protocol.StatusReport{Attempt: 1, State: "exploded"}, nil); code != http.StatusBadRequest {
		t.Errorf("status with a bad state: %d, want 400", code)
	}
	if code := c.do(http.MethodPost, protocol.StatusPath(id, 1), "not an object", nil); code != http.StatusBadRequest {
		t.Errorf("status with a bad body: %d, want 400", code)
	}
}

// The runner enforces an action's timeout on its own clock: an agent that
// goes silent still has its action timed out (and retried), and its next
// heartbeat is told to stop.
func TestServerSideActionTimeout(t *testing.T) {
	t.Parallel()
	m := machine(1)
	slow := sh("slow", "sleep 300")
	slow.Timeout = schema.Duration(500 * time.Millisecond)
	slow.Retries = 1
	tpl := template("t", slow)
	h := newHarness(t, fleet(m, tpl, workflow("w", m, tpl)))
	h.waitRuns("a run", func(r []protocol.Run) bool { return len(r) == 1 })
	c := raw{t: t, url: h.srv.URL, token: h.token(m)}
	reply, _ := c.hello(m)
	id := reply.Run.ID
	n := c.next(id)
	if n.Action == nil || n.Action.Deadline.IsZero() {
		t.Fatalf("next: %+v, want an action with a deadline", n)
	}
	c.status(id, 0, protocol.StatusReport{Attempt: 1, State: protocol.ActionRunning})
	// Silence: the sweeper times the attempt out and schedules a retry.
	run := h.waitRun(id, "attempt 1 timed out", func(r *protocol.Run) bool {
		return r.Actions[0].State == protocol.ActionPending && r.Actions[0].Attempt == 1
	})
	if !strings.Contains(run.Actions[0].Message, "attempt 1 timeout") {
		t.Errorf("message %q, want the timed-out attempt", run.Actions[0].Message)
	}
	if ack := c.status(id, 0, protocol.StatusReport{Attempt: 1, State: protocol.ActionRunning}); !ack.Stop {
		t.Errorf("heartbeat of the timed-out attempt: %+v, want stop", ack)
	}
	if ack := c.logs(id, 0, protocol.LogBatch{Agent: "raw", Attempt: 1, Lines: lines("late")}); !ack.Stop || ack.Stored != 1 {
		t.Errorf("late log batch: %+v, want stored and stop", ack)
	}
	// The retry: the same action with attempt 2, after the backoff.
	var retry protocol.Next
	h.waitRuns("the retry", func([]protocol.Run) bool {
		retry = c.next(id)
		return retry.Action != nil
	})
	if retry.Action.Index != 0 || retry.Action.Attempt != 2 {
		t.Fatalf("retry: %+v, want action 0 attempt 2", retry.Action)
	}
	h.waitRun(id, "the run timed out", func(r *protocol.Run) bool { return r.State == protocol.RunTimeout })
	if n := c.next(id); !n.Done || n.RunState != protocol.RunTimeout {
		t.Errorf("next after the end: %+v, want done, timeout", n)
	}
}

// Tokens: missing is 401; garbage, tampered, expired, or another machine's
// is 403.
func TestTokens(t *testing.T) {
	t.Parallel()
	m1, m2 := machine(1), machine(2)
	tpl := template("t", sh("one", "true"))
	h := newHarness(t, fleet(m1, m2, tpl, workflow("w1", m1, tpl), workflow("w2", m2, tpl)))
	h.waitRuns("two runs", func(r []protocol.Run) bool { return len(r) == 2 })
	tok1, tok2 := h.token(m1), h.token(m2)
	run1 := h.runs()[1].ID
	if h.runs()[1].Hardware != m1.Name {
		t.Fatalf("run %s is not %s's", run1, m1.Name)
	}
	tampered := []byte(tok1)
	tampered[len(tampered)-3] ^= 1
	fixed := strings.Replace(tok1, ".", ".x", 1)

	for _, tc := range []struct {
		name  string
		token string
		hw    *schema.Hardware
		want  int
	}{
		{"valid", tok1, m1, http.StatusOK},
		{"missing", "", m1, http.StatusUnauthorized},
		{"garbage", "hello", m1, http.StatusForbidden},
		{"tampered", string(tampered), m1, http.StatusForbidden},
		{"mangled", fixed, m1, http.StatusForbidden},
		{"another machine's token with this machine's MACs", tok2, m1, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, code := raw{t: t, url: h.srv.URL, token: tc.token}.hello(tc.hw)
			if code != tc.want {
				t.Errorf("hello: got %d, want %d", code, tc.want)
			}
		})
	}
	// Machine 2's token on machine 1's run.
	c2 := raw{t: t, url: h.srv.URL, token: tok2}
	if code := c2.do(http.MethodPost, protocol.StatusPath(run1, 0), protocol.StatusReport{Attempt: 1, State: protocol.ActionSuccess}, nil); code != http.StatusForbidden {
		t.Errorf("status of another machine's run: %d, want 403", code)
	}
	if code := c2.do(http.MethodPost, protocol.LogsPath(run1, 0), protocol.LogBatch{Agent: "x", Attempt: 1}, nil); code != http.StatusForbidden {
		t.Errorf("logs of another machine's run: %d, want 403", code)
	}
	if code := c2.do(http.MethodGet, protocol.PathNext+"?wait=0s&run="+run1, nil, nil); code != http.StatusForbidden {
		t.Errorf("next of another machine's run: %d, want 403", code)
	}
	// Expiry: the same token a day later.
	h.now.Add(runnerTokenTTL + time.Minute)
	if _, code := (raw{t: t, url: h.srv.URL, token: tok1}).hello(m1); code != http.StatusForbidden {
		t.Errorf("hello with an expired token: %d, want 403", code)
	}
	if tok, ok, err := h.r.Install(context.Background(), m1, m1.Interfaces[0].MAC); !ok || err != nil {
		t.Fatalf("Install: %v, %v", ok, err)
	} else if _, code := (raw{t: t, url: h.srv.URL, token: tok}).hello(m1); code != http.StatusOK {
		t.Errorf("hello with a fresh token: %d, want 200", code)
	}
}

const runnerTokenTTL = 24 * time.Hour

// A background action succeeds once started; the run succeeds without
// waiting for it, and netboot is off at once.
func TestBackgroundAction(t *testing.T) {
	t.Parallel()
	m := machine(1)
	reboot := sh("reboot", "sleep 1; echo rebooted")
	reboot.Background = true
	tpl := template("t", sh("write", "echo writing"), reboot)
	h := newHarness(t, fleet(m, tpl, workflow("w", m, tpl)))
	h.waitRuns("a run", func(r []protocol.Run) bool { return len(r) == 1 })
	ag := runAgent(t, h.agent(m, shell{}))
	run := h.waitRuns("success", func(r []protocol.Run) bool { return r[0].State == protocol.RunSuccess })[0]
	if a := run.Actions[1]; a.State != protocol.ActionSuccess || !strings.Contains(a.Message, "background") {
		t.Errorf("background action: %s %q, want success, started in the background", a.State, a.Message)
	}
	if _, ok, _ := h.r.Install(context.Background(), m, m.Interfaces[0].MAC); ok {
		t.Error("Install after the background action started: ok, want the local disk")
	}
	res := wait(t, ag)
	if res.err != nil || res.res.State != protocol.RunSuccess {
		t.Errorf("agent: %+v, %v; want success", res.res, res.err)
	}
	// The background action's output still reaches the log.
	h.waitRuns("the background action's output", func([]protocol.Run) bool {
		return strings.Contains(strings.Join(h.logLines(run.ID, protocol.StreamStdout), "\n"), "rebooted")
	})
}

// A background action that fails after it started leaves the run a
// success (the machine has moved on) and says what happened.
func TestBackgroundActionFailsAfterStart(t *testing.T) {
	t.Parallel()
	m := machine(1)
	kexec := sh("kexec", "echo no kernel >&2; exit 7")
	kexec.Background = true
	tpl := template("t", kexec)
	h := newHarness(t, fleet(m, tpl, workflow("w", m, tpl)))
	h.waitRuns("a run", func(r []protocol.Run) bool { return len(r) == 1 })
	if res := wait(t, runAgent(t, h.agent(m, shell{}))); res.err != nil || res.res.State != protocol.RunSuccess {
		t.Fatalf("agent: %+v, %v; want success", res.res, res.err)
	}
	run := h.waitRuns("the failure noted", func(r []protocol.Run) bool {
		return strings.Contains(r[0].Actions[0].Message, "then ended failed")
	})[0]
	if run.State != protocol.RunSuccess || run.Actions[0].State != protocol.ActionSuccess {
		t.Errorf("run %s, action %s; want both success", run.State, run.Actions[0].State)
	}
	if got := strings.Join(h.logLines(run.ID, ""), "\n"); !strings.Contains(got, "no kernel") || !strings.Contains(got, `background action "kexec" ended failed`) {
		t.Errorf("log lacks the output or the note:\n%s", got)
	}
}

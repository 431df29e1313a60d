package runner_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitmetal/gitmetal/agent"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
)

// sync applies a fleet of objs plus a fresh sentinel workflow (a manual
// workflow on a machine of its own) and waits until the sentinel's run
// exists: the derivation has then seen objs, so whatever runs they call
// for exist too, and any run they do not call for never will. It returns
// the runs of the other workflows, newest first.
func (h *harness) sync(objs ...any) []protocol.Run {
	h.t.Helper()
	h.sentinel++
	name := fmt.Sprintf("sentinel-%d", h.sentinel)
	sm := machine(9999)
	st := template("sentinel", sh("noop", "true"))
	h.sentinelObjs = []any{sm, st, workflow(name, sm, st, func(w *schema.Workflow) {
		w.Policy = schema.PolicyManual
		w.Generation = 1
	})}
	h.apply(fleet(append(objs, h.sentinelObjs...)...))
	var out []protocol.Run
	h.waitRuns("the derivation of "+name, func(runs []protocol.Run) bool {
		out = out[:0]
		seen := false
		for _, r := range runs {
			switch {
			case r.Workflow == name:
				seen = true
			case !strings.HasPrefix(r.Workflow, "sentinel-"):
				out = append(out, r)
			}
		}
		return seen
	})
	return out
}

// complete runs hw's current run to its end with an agent.
func (h *harness) complete(hw *schema.Hardware) protocol.RunState {
	h.t.Helper()
	res := wait(h.t, runAgent(h.t, h.agent(hw, shell{})))
	if res.err != nil {
		h.t.Fatalf("agent: %v", res.err)
	}
	return res.res.State
}

func gen(n int) func(*schema.Workflow) { return func(w *schema.Workflow) { w.Generation = n } }

func policy(p schema.Policy) func(*schema.Workflow) {
	return func(w *schema.Workflow) { w.Policy = p }
}

func suspend(w *schema.Workflow) { w.Suspend = true }

func TestPolicyOnChange(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	m := machine(1)
	osTemplate := func(version string) *schema.Template {
		return template("os", sh("install", "echo installing "+version))
	}
	runs := h.sync(m, osTemplate("v1"), workflow("w", m, osTemplate("v1")))
	if len(runs) != 1 || runs[0].Reason != "first run" {
		t.Fatalf("got %d runs (%s), want the first run", len(runs), dump(runs))
	}
	if st := h.complete(m); st != protocol.RunSuccess {
		t.Fatalf("run 1: %s", st)
	}
	first := runs[0]

	// The same rendering again (new objects, same content): converged.
	if runs = h.sync(m, osTemplate("v1"), workflow("w", m, osTemplate("v1"))); len(runs) != 1 {
		t.Fatalf("an unchanged rendering made a run:\n%s", dump(runs))
	}
	// A template change: a new run, frozen with the new actions.
	runs = h.sync(m, osTemplate("v2"), workflow("w", m, osTemplate("v2")))
	if len(runs) != 2 || runs[0].Digest == first.Digest || !strings.Contains(runs[0].Reason, "differs from successful run "+first.ID) {
		t.Fatalf("after the change, want a second run with a new digest:\n%s", dump(runs))
	}
	if got := runs[0].Actions[0].Step.Args[2]; got != "echo installing v2" {
		t.Errorf("frozen action runs %q, want v2", got)
	}
	// While it is pending, a further commit changes nothing: the run keeps
	// what was decided.
	if runs = h.sync(m, osTemplate("v3"), workflow("w", m, osTemplate("v3"))); len(runs) != 2 || runs[0].Actions[0].Step.Args[2] != "echo installing v2" {
		t.Fatalf("a commit during a pending run changed the runs:\n%s", dump(runs))
	}
	if st := h.complete(m); st != protocol.RunSuccess {
		t.Fatalf("run 2: %s", st)
	}
	// The commit that came meanwhile is judged when the run ends.
	v3 := h.waitRuns("the run of the commit that came meanwhile", func(runs []protocol.Run) bool {
		return runs[0].Workflow == "w" && runs[0].State == protocol.RunPending
	})[0]
	if got := v3.Actions[0].Step.Args[2]; got != "echo installing v3" {
		t.Errorf("run after the pending one runs %q, want v3", got)
	}
	if st := h.complete(m); st != protocol.RunSuccess {
		t.Fatalf("run 3: %s", st)
	}
	// git revert to v1: the previous OS is provisioned again.
	runs = h.sync(m, osTemplate("v1"), workflow("w", m, osTemplate("v1")))
	if len(runs) != 4 || runs[0].Digest != first.Digest {
		t.Fatalf("after the revert, want a fourth run with the first run's digest %s:\n%s", first.Digest, dump(runs))
	}
	if st := h.complete(m); st != protocol.RunSuccess {
		t.Fatalf("run 4: %s", st)
	}
	// A generation bump forces a run of the same rendering.
	runs = h.sync(m, osTemplate("v1"), workflow("w", m, osTemplate("v1"), gen(1)))
	if len(runs) != 5 || runs[0].Reason != "generation bumped to 1" {
		t.Fatalf("after the bump, want a fifth run:\n%s", dump(runs))
	}
}

// A failed run is not retried with the same rendering and generation; a
// generation bump retries it.
func TestFailedRunWaitsForChange(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	m := machine(1)
	tpl := func() *schema.Template { return template("t", sh("fail", "exit 1")) }
	h.sync(m, tpl(), workflow("w", m, tpl()))
	if st := h.complete(m); st != protocol.RunFailed {
		t.Fatalf("run: %s, want failed", st)
	}
	if runs := h.sync(m, tpl(), workflow("w", m, tpl())); len(runs) != 1 {
		t.Fatalf("a failed run was retried without a change:\n%s", dump(runs))
	}
	if runs := h.sync(m, tpl(), workflow("w", m, tpl(), gen(1))); len(runs) != 2 || runs[0].State != protocol.RunPending {
		t.Fatalf("a generation bump did not retry:\n%s", dump(runs))
	}
}

func TestPolicyOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	m := machine(1)
	once := policy(schema.PolicyOnce)
	h.sync(m, template("t", sh("a", "echo a")), workflow("w", m, template("t"), once))
	if st := h.complete(m); st != protocol.RunSuccess {
		t.Fatalf("run: %s", st)
	}
	if runs := h.sync(m, template("t", sh("b", "echo b")), workflow("w", m, template("t"), once, gen(5))); len(runs) != 1 {
		t.Fatalf("a once workflow ran again after a success:\n%s", dump(runs))
	}
}

func TestPolicyManual(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	m := machine(1)
	manual := policy(schema.PolicyManual)
	tpl := func(s string) *schema.Template { return template("t", sh("a", "echo "+s)) }
	if runs := h.sync(m, tpl("a"), workflow("w", m, tpl("a"), manual)); len(runs) != 0 {
		t.Fatalf("a manual workflow at generation 0 ran:\n%s", dump(runs))
	}
	if runs := h.sync(m, tpl("a"), workflow("w", m, tpl("a"), manual, gen(1))); len(runs) != 1 {
		t.Fatalf("generation 1 did not run:\n%s", dump(runs))
	}
	if st := h.complete(m); st != protocol.RunSuccess {
		t.Fatalf("run: %s", st)
	}
	if runs := h.sync(m, tpl("b"), workflow("w", m, tpl("b"), manual, gen(1))); len(runs) != 1 {
		t.Fatalf("a template change ran a manual workflow:\n%s", dump(runs))
	}
	if runs := h.sync(m, tpl("b"), workflow("w", m, tpl("b"), manual, gen(2))); len(runs) != 2 || runs[0].Generation != 2 {
		t.Fatalf("generation 2 did not run:\n%s", dump(runs))
	}
}

// TestKeepRuns: when a run ends, the journal drops its workflow's older
// ended runs and their logs beyond KeepRuns, but keeps the latest success,
// which the onChange and manual policies decide from.
func TestKeepRuns(t *testing.T) {
	t.Parallel()
	h := newHarnessKeeping(t, nil, 1)
	m := machine(1)
	manual := policy(schema.PolicyManual)
	var ids []string
	for g, script := range []string{"true", "true", "true", "exit 3"} {
		tpl := template("t", sh("a", script))
		runs := h.sync(m, tpl, workflow("w", m, tpl, manual, gen(g+1)))
		if len(runs) == 0 || runs[0].Generation != g+1 {
			t.Fatalf("generation %d did not run:\n%s", g+1, dump(runs))
		}
		ids = append(ids, runs[0].ID)
		h.complete(m)
	}
	var left []string
	for _, r := range h.runs() {
		if r.Workflow == "w" {
			left = append(left, fmt.Sprintf("%s %s", r.ID, r.State))
		}
	}
	want := []string{ids[3] + " failed", ids[2] + " success"}
	if strings.Join(left, ", ") != strings.Join(want, ", ") {
		t.Errorf("runs of w kept: %q, want %q (the newest and the latest success)", left, want)
	}
	for _, id := range ids[:2] {
		resp, err := http.Get(h.srv.URL + "/v1/runs/" + id + "/logs")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("logs of pruned run %s: got %d, want 404", id, resp.StatusCode)
		}
	}
}

// suspend creates nothing and holds a pending run; resuming releases it.
func TestSuspend(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	m := machine(1)
	tpl := template("t", sh("a", "echo a"))
	if runs := h.sync(m, tpl, workflow("w", m, tpl, suspend)); len(runs) != 0 {
		t.Fatalf("a suspended workflow ran:\n%s", dump(runs))
	}
	runs := h.sync(m, tpl, workflow("w", m, tpl))
	if len(runs) != 1 {
		t.Fatalf("resuming did not run:\n%s", dump(runs))
	}
	id := runs[0].ID
	// Suspended again while pending: the agent is held.
	h.sync(m, tpl, workflow("w", m, tpl, suspend))
	c := raw{t: t, url: h.srv.URL, token: h.token(m)}
	if _, code := c.hello(m); code != http.StatusOK {
		t.Fatalf("hello: %d", code)
	}
	if n := c.next(id); n.Action != nil || n.RunState != protocol.RunPending || !strings.Contains(n.Message, "suspended") {
		t.Fatalf("next while suspended: %+v, want no action, pending, suspended", n)
	}
	// A real agent long-polls (longer than the test waits) while the
	// workflow is suspended; resuming wakes it.
	a, err := agent.New(agent.Config{
		Server: h.srv.URL, Token: h.token(m), MACs: []string{m.Interfaces[0].MAC}, Executor: shell{},
		Log: testLogger(t), Wait: protocol.MaxWait,
	})
	if err != nil {
		t.Fatal(err)
	}
	ag := runAgent(t, a)
	h.waitRuns("the agent's long poll", func([]protocol.Run) bool {
		// The raw client's was the first.
		return strings.Count(h.logs.String(), `"reason":"workflow \"w\" is suspended","message":"agent waits"`) >= 2
	})
	// Resumed without any run created or cancelled (the sentinel stays):
	// nothing in the journal changes, the store does.
	h.apply(fleet(append([]any{m, tpl, workflow("w", m, tpl)}, h.sentinelObjs...)...))
	if res := wait(t, ag); res.err != nil || res.res.State != protocol.RunSuccess {
		t.Fatalf("agent after resuming: %+v, %v; want success", res.res, res.err)
	}
}

// A workflow removed from git cancels its pending run at once, and a
// running run after its current action (which is not interrupted).
func TestWorkflowRemoved(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	release := filepath.Join(dir, "release")
	h := newHarness(t, nil)
	m1, m2 := machine(1), machine(2)
	tpl := template("t",
		sh("wait", fmt.Sprintf(`while [ ! -e %s ]; do sleep 0.05; done; echo finished`, release)),
		sh("next", "echo next"))
	runs := h.sync(m1, m2, tpl, workflow("w1", m1, tpl), workflow("w2", m2, tpl))
	if len(runs) != 2 {
		t.Fatalf("want two runs:\n%s", dump(runs))
	}
	running, pending := runs[1], runs[0] // w1's run is older
	ag := runAgent(t, h.agent(m1, shell{}))
	h.waitRun(running.ID, "action 0 running", func(r *protocol.Run) bool { return r.Actions[0].State == protocol.ActionRunning })

	runs = h.sync(m1, m2, tpl)
	got := map[string]protocol.Run{}
	for _, r := range runs {
		got[r.ID] = r
	}
	if r := got[pending.ID]; r.State != protocol.RunCancelled || !strings.Contains(r.Message, `workflow "w2" removed`) {
		t.Errorf("pending run: %s %q, want cancelled, removed", r.State, r.Message)
	}
	if r := got[running.ID]; r.State != protocol.RunRunning || r.Stopping == "" || r.Actions[0].State != protocol.ActionRunning {
		t.Errorf("running run: %s stopping %q action 0 %s; want running, stopping, action 0 still running", r.State, r.Stopping, r.Actions[0].State)
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res := wait(t, ag)
	if res.err != nil || res.res.State != protocol.RunCancelled {
		t.Fatalf("agent: %+v, %v; want cancelled", res.res, res.err)
	}
	r, err := h.r.RunByID(running.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s := states(r); s[0] != protocol.ActionSuccess || s[1] != protocol.ActionSkipped {
		t.Errorf("action states %v, want the current action finished and the next skipped", s)
	}
	if _, ok, _ := h.r.Install(context.Background(), m1, m1.Interfaces[0].MAC); ok {
		t.Error("Install after the cancel: ok, want the local disk")
	}
}

// rollout.maxInFlight bounds the machines provisioning at once; the others
// wait pending, with the reason in next's answer.
func TestMaxInFlight(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHarness(t, nil)
	var objs []any
	var ms []*schema.Hardware
	for i := 1; i <= 3; i++ {
		m := machine(i)
		ms = append(ms, m)
		tpl := template(fmt.Sprintf("t%d", i),
			sh("wait", fmt.Sprintf(`while [ ! -e %s ]; do sleep 0.05; done`, filepath.Join(dir, m.Name))))
		objs = append(objs, m, tpl, workflow(fmt.Sprintf("w%d", i), m, tpl))
	}
	objs = append(objs, &schema.Settings{LeaseTime: schema.DefaultLeaseTime, Rollout: schema.Rollout{MaxInFlight: 1}})
	if runs := h.sync(objs...); len(runs) != 3 {
		t.Fatalf("want three runs:\n%s", dump(runs))
	}
	var agents []<-chan agentResult
	for _, m := range ms {
		agents = append(agents, runAgent(t, h.agent(m, shell{})))
	}
	for done := 0; done < 3; done++ {
		var cur protocol.Run
		h.waitRuns("one run in flight", func(runs []protocol.Run) bool {
			n := 0
			for _, r := range runs {
				if r.State == protocol.RunRunning {
					n++
					cur = r
				}
			}
			if n > 1 {
				t.Fatalf("%d runs in flight with maxInFlight 1:\n%s", n, dump(runs))
			}
			return n == 1
		})
		// The others are held back by the rollout.
		for _, m := range ms {
			if m.Name == cur.Hardware {
				continue
			}
			if active := h.activeRun(m); active != nil {
				c := raw{t: t, url: h.srv.URL, token: h.token(m)}
				if n := c.next(active.ID); n.Action != nil || !strings.Contains(n.Message, "rollout: 1 of 1") {
					t.Errorf("next of %s while %s runs: %+v, want held by the rollout", m.Name, cur.Hardware, n)
				}
			}
		}
		if err := os.WriteFile(filepath.Join(dir, cur.Hardware), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		h.waitRun(cur.ID, "its end", func(r *protocol.Run) bool { return r.State.Final() })
	}
	for i, ag := range agents {
		if res := wait(t, ag); res.err != nil || res.res.State != protocol.RunSuccess {
			t.Errorf("agent %d: %+v, %v; want success", i+1, res.res, res.err)
		}
	}
}

// activeRun returns hw's pending or running run, or nil.
func (h *harness) activeRun(hw *schema.Hardware) *protocol.Run {
	for _, r := range h.runs() {
		if r.Hardware == hw.Name && r.State.Active() {
			return &r
		}
	}
	return nil
}

// After a restart the store is empty until the reconciler applies a
// revision: runs are neither cancelled nor started meanwhile.
func TestRestartBeforeDesiredState(t *testing.T) {
	t.Parallel()
	m := machine(1)
	tpl := template("t", sh("a", "echo a"))
	f := fleet(m, tpl, workflow("w", m, tpl))
	h := newHarness(t, f)
	id := h.waitRuns("a run", func(r []protocol.Run) bool { return len(r) == 1 })[0].ID
	tok := h.token(m)
	h.stop()
	st, err := store.New()
	if err != nil {
		t.Fatal(err)
	}
	h.st = st
	h.start()
	c := raw{t: t, url: h.srv.URL, token: tok}
	if _, code := c.hello(m); code != http.StatusServiceUnavailable {
		t.Errorf("hello before the desired state: %d, want 503", code)
	}
	if n := c.next(id); n.Action != nil || n.RunState != protocol.RunPending || !strings.Contains(n.Message, "not loaded") {
		t.Errorf("next before the desired state: %+v, want the pending run held", n)
	}
	h.apply(f)
	var n protocol.Next
	h.waitRuns("the action once the state is loaded", func([]protocol.Run) bool {
		n = c.next(id)
		return n.Action != nil
	})
	if n.Run != id {
		t.Errorf("got run %s, want %s", n.Run, id)
	}
}

package runner_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
)

// A run from creation to success over real HTTP: netboot gating before and
// after, action states and timings, ordered logs, the followed log stream,
// the inventory.
func TestRunToSuccess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m := machine(1)
	tpl := template("provision",
		sh("count", `for i in 1 2 3; do echo "line $i"; done`),
		sh("warn", `echo "to stderr" >&2`),
		sh("mark", `echo done > `+filepath.Join(dir, "marker")),
	)
	h := newHarness(t, fleet(m, tpl, workflow("web", m, tpl)))
	runs := h.waitRuns("a pending run", func(r []protocol.Run) bool { return len(r) == 1 })
	run := runs[0]
	if run.State != protocol.RunPending || run.Reason != "first run" || run.Revision != "rev1" {
		t.Fatalf("got run %s %s reason %q revision %q, want pending, first run, rev1", run.ID, run.State, run.Reason, run.Revision)
	}

	// The log is followed from before the run starts to its end.
	followed := make(chan []string, 1)
	go func() {
		var lines []string
		resp, err := http.Get(h.srv.URL + "/v1/runs/" + run.ID + "/logs?follow=1&format=text")
		if err == nil {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				lines = append(lines, sc.Text())
			}
			resp.Body.Close()
		}
		followed <- lines
	}()

	res := wait(t, runAgent(t, h.agent(m, shell{})))
	if res.err != nil || res.res.State != protocol.RunSuccess || res.res.Run != run.ID {
		t.Fatalf("agent ended with %+v, %v; want run %s success", res.res, res.err, run.ID)
	}
	if _, ok, err := h.r.Install(context.Background(), m, m.Interfaces[0].MAC); ok || err != nil {
		t.Errorf("Install after success = %v, %v; want false (boot the local disk)", ok, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "marker")); err != nil {
		t.Errorf("the last action did not run: %v", err)
	}

	var got protocol.Run
	if code := getJSON(t, h.srv.URL+"/v1/runs/"+run.ID, &got); code != http.StatusOK {
		t.Fatalf("GET run: %d", code)
	}
	want := []protocol.ActionState{protocol.ActionSuccess, protocol.ActionSuccess, protocol.ActionSuccess}
	if diff := cmp.Diff(want, states(&got)); diff != "" {
		t.Errorf("action states (-want +got):\n%s", diff)
	}
	if got.State != protocol.RunSuccess || got.Started.IsZero() || got.Finished.Before(got.Started) {
		t.Errorf("got run %s started %v finished %v, want success with ordered times", got.State, got.Started, got.Finished)
	}
	if got.Elapsed.D() != got.Finished.Sub(got.Started) {
		t.Errorf("run duration %s, want finished - started", got.Elapsed.D())
	}
	for _, a := range got.Actions {
		if a.Elapsed.D() != a.Finished.Sub(a.Started) {
			t.Errorf("action %d duration %s, want finished - started", a.Index, a.Elapsed.D())
		}
		if a.Attempt != 1 || a.Started.IsZero() || a.Finished.Before(a.Started) {
			t.Errorf("action %d: attempt %d, started %v, finished %v; want 1 attempt with ordered times", a.Index, a.Attempt, a.Started, a.Finished)
		}
	}
	for i := 1; i < len(got.Actions); i++ {
		if got.Actions[i].Started.Before(got.Actions[i-1].Finished) {
			t.Errorf("action %d started before action %d finished", i, i-1)
		}
	}
	if diff := cmp.Diff([]string{"line 1", "line 2", "line 3"}, h.logLines(run.ID, protocol.StreamStdout)); diff != "" {
		t.Errorf("stdout lines (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"to stderr"}, h.logLines(run.ID, protocol.StreamStderr)); diff != "" {
		t.Errorf("stderr lines (-want +got):\n%s", diff)
	}

	var lines []string
	select {
	case lines = <-followed:
	case <-time.After(waitFor):
		t.Fatal("the followed log did not end with the run")
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{"line 1", "line 3", "to stderr", "run success"} {
		if !strings.Contains(text, want) {
			t.Errorf("followed log lacks %q:\n%s", want, text)
		}
	}

	var inv protocol.MachineInventory
	if code := getJSON(t, h.srv.URL+"/v1/machines/"+m.Name+"/inventory", &inv); code != http.StatusOK {
		t.Fatalf("GET inventory: %d", code)
	}
	if inv.Inventory.MemoryBytes == 0 || inv.Inventory.CPU.Threads == 0 || !slices.Contains(inv.MACs, m.Interfaces[0].MAC) {
		t.Errorf("got inventory %+v, want memory, CPUs and the MAC", inv)
	}

	var list []protocol.Run
	if code := getJSON(t, h.srv.URL+"/v1/runs?machine="+m.Name+"&state=success", &list); code != http.StatusOK || len(list) != 1 {
		t.Errorf("GET /v1/runs?machine&state: %d, %d runs; want 200 and 1", code, len(list))
	}
	if code := getJSON(t, h.srv.URL+"/v1/runs/r999", nil); code != http.StatusNotFound {
		t.Errorf("GET unknown run: %d, want 404", code)
	}
}

// Retries hand the same action out again with attempt+1; a final failure
// runs the onFailure steps, skips the rest and fails the run.
func TestRetriesAndOnFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	counter := filepath.Join(dir, "count")
	flaky := sh("flaky", fmt.Sprintf(`n=$(cat %[1]s 2>/dev/null || echo 0); echo $((n+1)) > %[1]s; echo "try $n"; [ "$n" -ge 2 ]`, counter))
	flaky.Retries = 2
	m1 := machine(1)
	t1 := template("flaky", flaky, sh("after", "echo after"))

	broken := sh("broken", "echo failing; exit 3")
	broken.Retries = 1
	broken.OnFailure = []schema.Step{sh("cleanup", "echo cleaning > "+filepath.Join(dir, "cleanup")).Step}
	m2 := machine(2)
	t2 := template("broken", broken, sh("never", "touch "+filepath.Join(dir, "never")))

	h := newHarness(t, fleet(m1, m2, t1, t2, workflow("w1", m1, t1), workflow("w2", m2, t2)))
	h.waitRuns("two runs", func(r []protocol.Run) bool { return len(r) == 2 })
	r1, r2 := runAgent(t, h.agent(m1, shell{})), runAgent(t, h.agent(m2, shell{}))

	res := wait(t, r1)
	if res.err != nil || res.res.State != protocol.RunSuccess {
		t.Fatalf("flaky run ended %+v, %v; want success", res.res, res.err)
	}
	run := h.runs()[1] // w1's run was created first
	if run.Workflow != "w1" {
		t.Fatalf("got workflow %s, want w1", run.Workflow)
	}
	if a := run.Actions[0]; a.State != protocol.ActionSuccess || a.Attempt != 3 {
		t.Errorf("flaky action: %s after %d attempts, want success after 3", a.State, a.Attempt)
	}
	if diff := cmp.Diff([]string{"try 0", "try 1", "try 2", "after"}, h.logLines(run.ID, protocol.StreamStdout)); diff != "" {
		t.Errorf("stdout of the retried run (-want +got):\n%s", diff)
	}
	notes := strings.Join(h.logLines(run.ID, protocol.StreamRunner), "\n")
	if strings.Count(notes, "retrying in") != 2 {
		t.Errorf("runner notes mention %d retries, want 2:\n%s", strings.Count(notes, "retrying in"), notes)
	}

	res = wait(t, r2)
	if res.err != nil || res.res.State != protocol.RunFailed {
		t.Fatalf("broken run ended %+v, %v; want failed", res.res, res.err)
	}
	run = h.runs()[0]
	want := []protocol.ActionState{protocol.ActionFailed, protocol.ActionSuccess, protocol.ActionSkipped}
	if diff := cmp.Diff(want, states(&run)); diff != "" {
		t.Errorf("action states (-want +got):\n%s", diff)
	}
	if a := run.Actions[0]; a.Attempt != 2 || a.ExitCode == nil || *a.ExitCode != 3 {
		t.Errorf("broken action: attempt %d exit %v, want attempt 2 exit 3", a.Attempt, a.ExitCode)
	}
	if run.Actions[1].OnFailureOf != 0 {
		t.Errorf("cleanup handles action %d, want 0", run.Actions[1].OnFailureOf)
	}
	if !strings.Contains(run.Message, `action "broken" failed after 2 attempt(s)`) {
		t.Errorf("run message %q does not name the failed action", run.Message)
	}
	if _, err := os.Stat(filepath.Join(dir, "cleanup")); err != nil {
		t.Errorf("the onFailure step did not run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "never")); err == nil {
		t.Error("an action after the failed one ran")
	}
	// A failed run is not retried with the same rendering.
	if _, ok, _ := h.r.Install(context.Background(), m2, m2.Interfaces[0].MAC); ok {
		t.Error("Install after a failed run is ok; want the local disk until a change or a generation bump")
	}
}

// An action past its timeout is stopped by the runner (the process is
// killed: the test's bound is far below the sleep), its onFailure step
// runs, and the run times out. A global timeout ends the run the same way.
func TestTimeouts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	slow := sh("slow", "echo sleeping; exec sleep 300")
	slow.Timeout = schema.Duration(time.Second)
	slow.OnFailure = []schema.Step{sh("after-timeout", "touch "+filepath.Join(dir, "handled")).Step}
	m1 := machine(1)
	t1 := template("action-timeout", slow, sh("never", "echo never"))

	m2 := machine(2)
	t2 := template("global-timeout", sh("fast", "echo fast"), sh("slow", "exec sleep 300"))
	t2.Timeout = schema.Duration(2 * time.Second)

	h := newHarness(t, fleet(m1, m2, t1, t2, workflow("w1", m1, t1), workflow("w2", m2, t2)))
	h.waitRuns("two runs", func(r []protocol.Run) bool { return len(r) == 2 })
	r1, r2 := runAgent(t, h.agent(m1, shell{})), runAgent(t, h.agent(m2, shell{}))
	res := wait(t, r1)
	if res.err != nil || res.res.State != protocol.RunTimeout {
		t.Fatalf("run ended %+v, %v; want timeout", res.res, res.err)
	}
	run := h.runs()[1]
	want := []protocol.ActionState{protocol.ActionTimeout, protocol.ActionSuccess, protocol.ActionSkipped}
	if diff := cmp.Diff(want, states(&run)); diff != "" {
		t.Errorf("action states (-want +got):\n%s", diff)
	}
	if !strings.Contains(run.Actions[0].Message, "timed out after 1s") {
		t.Errorf("action message %q, want the timeout", run.Actions[0].Message)
	}
	if _, err := os.Stat(filepath.Join(dir, "handled")); err != nil {
		t.Errorf("the onFailure step of the timed-out action did not run: %v", err)
	}

	// The agent does not know the global timeout: the runner stops it.
	res = wait(t, r2)
	if res.err != nil || res.res.State != protocol.RunTimeout {
		t.Fatalf("run ended %+v, %v; want timeout", res.res, res.err)
	}
	run = h.runs()[0]
	want = []protocol.ActionState{protocol.ActionSuccess, protocol.ActionTimeout}
	if diff := cmp.Diff(want, states(&run)); diff != "" {
		t.Errorf("action states (-want +got):\n%s", diff)
	}
	if !strings.Contains(run.Message, "global timeout 2s exceeded") {
		t.Errorf("run message %q, want the global timeout", run.Message)
	}
}

package runner_test

import (
	"strings"
	"testing"

	"github.com/gitmetal/gitmetal/runner/protocol"
)

// metricLines returns the runner's metric samples (no comments).
func (h *harness) metricLines() []string {
	h.t.Helper()
	var b strings.Builder
	if err := h.r.WriteMetrics(&b); err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TestMetrics: runs in flight come from the journal; ended runs are
// counted once, by final state, after their transaction committed.
func TestMetrics(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	m1, m2 := machine(1), machine(2)
	tpl := template("t", sh("hello", "echo hello"))
	h.sync(m1, m2, tpl, workflow("w1", m1, tpl), workflow("w2", m2, tpl))
	has := func(want ...string) {
		t.Helper()
		got := strings.Join(h.metricLines(), "\n")
		for _, w := range want {
			if !strings.Contains(got+"\n", w+"\n") {
				t.Errorf("metrics lack %q:\n%s", w, got)
			}
		}
	}
	// Two pending, plus the sentinel's.
	has(`gitmetal_runs_active{state="pending"} 3`, `gitmetal_runs_active{state="running"} 0`,
		`gitmetal_runs_ended_total{state="success"} 0`)

	if st := h.complete(m1); st != protocol.RunSuccess {
		t.Fatalf("run: %s", st)
	}
	// w2 removed: its pending run is cancelled, and so is the first
	// sentinel's (each sync replaces the sentinel workflow).
	h.sync(m1, m2, tpl, workflow("w1", m1, tpl))
	h.waitRuns("w2's run cancelled", func(runs []protocol.Run) bool {
		for _, r := range runs {
			if r.Workflow == "w2" {
				return r.State == protocol.RunCancelled
			}
		}
		return false
	})
	// Cancelled while pending: no run time.
	has(`gitmetal_runs_active{state="pending"} 1`,
		`gitmetal_runs_ended_total{state="success"} 1`, `gitmetal_runs_ended_total{state="cancelled"} 2`,
		`gitmetal_runs_ended_total{state="failed"} 0`, `gitmetal_run_seconds_total{state="cancelled"} 0`)
}

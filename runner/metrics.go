package runner

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/gitmetal/gitmetal/runner/journal"
	"github.com/gitmetal/gitmetal/runner/protocol"
)

// endedStates are the final states, in the order /metrics lists them.
var endedStates = []protocol.RunState{protocol.RunSuccess, protocol.RunFailed, protocol.RunTimeout, protocol.RunCancelled}

// metrics counts the runs that ended since the runner started, with the
// time they took from start to end (a run cancelled before it started
// took none). They are added after the transaction that ended the run
// committed: an op may run twice (read, then write) or roll back.
type metrics struct {
	mu      sync.Mutex
	ended   map[protocol.RunState]uint64
	seconds map[protocol.RunState]float64
}

func newMetrics() *metrics {
	return &metrics{ended: map[protocol.RunState]uint64{}, seconds: map[protocol.RunState]float64{}}
}

// endedRun is a run an op ended.
type endedRun struct {
	state protocol.RunState
	took  time.Duration
}

func (m *metrics) add(runs []endedRun) {
	if len(runs) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range runs {
		m.ended[e.state]++
		m.seconds[e.state] += e.took.Seconds()
	}
}

// WriteMetrics writes the runner's metrics in the Prometheus text format:
// the runs pending and running now (from the journal), and the runs that
// ended since the start, by final state, with their total run time.
func (r *Runner) WriteMetrics(w io.Writer) error {
	var active []journal.Summary
	if err := r.j.View(func(tx *journal.Tx) error {
		var err error
		active, err = tx.Active()
		return err
	}); err != nil {
		return err
	}
	var pending, running int
	for _, s := range active {
		if s.State == protocol.RunRunning {
			running++
		} else {
			pending++
		}
	}
	var b strings.Builder
	b.WriteString("# HELP gitmetal_runs_active Workflow runs not ended yet, by state.\n# TYPE gitmetal_runs_active gauge\n")
	fmt.Fprintf(&b, "gitmetal_runs_active{state=\"pending\"} %d\n", pending)
	fmt.Fprintf(&b, "gitmetal_runs_active{state=\"running\"} %d\n", running)
	m := r.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	b.WriteString("# HELP gitmetal_runs_ended_total Workflow runs ended since the daemon started, by final state.\n# TYPE gitmetal_runs_ended_total counter\n")
	for _, s := range endedStates {
		fmt.Fprintf(&b, "gitmetal_runs_ended_total{state=%q} %d\n", s, m.ended[s])
	}
	b.WriteString("# HELP gitmetal_run_seconds_total Time from start to end of the runs ended since the daemon started, by final state.\n# TYPE gitmetal_run_seconds_total counter\n")
	for _, s := range endedStates {
		fmt.Fprintf(&b, "gitmetal_run_seconds_total{state=%q} %g\n", s, m.seconds[s])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

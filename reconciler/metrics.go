package reconciler

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// reconcileBuckets are the upper bounds, in seconds, of the reconcile
// duration histogram: from a one-file change (milliseconds) to a cold load
// of a large fleet (seconds).
var reconcileBuckets = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// metrics are the reconciler's Prometheus metrics.
type metrics struct {
	sourceErrors atomic.Uint64
	invalid      atomic.Uint64

	mu        sync.Mutex
	buckets   [len(reconcileBuckets)]uint64
	count     uint64
	sum       float64
	applied   string
	counts    Counts
	lastSaved time.Time
}

func newMetrics() *metrics { return &metrics{} }

func (m *metrics) observe(d time.Duration) {
	s := d.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, b := range reconcileBuckets {
		if s <= b {
			m.buckets[i]++
		}
	}
	m.count++
	m.sum += s
}

func (m *metrics) setApplied(rev string, c Counts) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applied, m.counts = rev, c
}

func (m *metrics) cacheSaved(t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastSaved = t
}

func (m *metrics) sinceCacheSave(now time.Time) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return now.Sub(m.lastSaved)
}

// WriteMetrics writes the reconciler's metrics in the Prometheus text
// format.
func (r *Reconciler) WriteMetrics(w io.Writer) error {
	m := r.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	b.WriteString("# HELP gitmetal_reconcile_duration_seconds Time from the start of a sync to a revision applied.\n")
	b.WriteString("# TYPE gitmetal_reconcile_duration_seconds histogram\n")
	for i, le := range reconcileBuckets {
		fmt.Fprintf(&b, "gitmetal_reconcile_duration_seconds_bucket{le=%q} %d\n", strconv.FormatFloat(le, 'g', -1, 64), m.buckets[i])
	}
	fmt.Fprintf(&b, "gitmetal_reconcile_duration_seconds_bucket{le=\"+Inf\"} %d\n", m.count)
	fmt.Fprintf(&b, "gitmetal_reconcile_duration_seconds_sum %g\n", m.sum)
	fmt.Fprintf(&b, "gitmetal_reconcile_duration_seconds_count %d\n", m.count)
	b.WriteString("# HELP gitmetal_applied_revision_info The revision the store holds.\n")
	b.WriteString("# TYPE gitmetal_applied_revision_info gauge\n")
	if m.applied != "" {
		fmt.Fprintf(&b, "gitmetal_applied_revision_info{revision=%q} 1\n", m.applied)
	}
	b.WriteString("# HELP gitmetal_invalid_revisions_total Revisions refused because they were invalid.\n")
	b.WriteString("# TYPE gitmetal_invalid_revisions_total counter\n")
	fmt.Fprintf(&b, "gitmetal_invalid_revisions_total %d\n", m.invalid.Load())
	b.WriteString("# HELP gitmetal_source_errors_total Failed attempts to read the source.\n")
	b.WriteString("# TYPE gitmetal_source_errors_total counter\n")
	fmt.Fprintf(&b, "gitmetal_source_errors_total %d\n", m.sourceErrors.Load())
	b.WriteString("# HELP gitmetal_objects The objects of the applied revision, by kind.\n")
	b.WriteString("# TYPE gitmetal_objects gauge\n")
	fmt.Fprintf(&b, "gitmetal_objects{kind=\"hardware\"} %d\n", m.counts.Hardware)
	fmt.Fprintf(&b, "gitmetal_objects{kind=\"templates\"} %d\n", m.counts.Templates)
	fmt.Fprintf(&b, "gitmetal_objects{kind=\"workflows\"} %d\n", m.counts.Workflows)
	_, err := io.WriteString(w, b.String())
	return err
}

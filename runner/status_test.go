package runner_test

import (
	"context"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/runner"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
)

func TestWriteRuns(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 8, 1, 10, 0, 0, 0, time.UTC)
	exit := 3
	run := protocol.Run{
		ID: "r7", Workflow: "provision", Hardware: "web-01", State: protocol.RunRunning,
		Reason: "first run", Created: now.Add(-2 * time.Minute), Started: now.Add(-time.Minute),
		FailedAction: -1,
		Actions: []protocol.Action{
			{Index: 0, OnFailureOf: -1, Step: schema.Step{Name: "stream-image", Uses: "image2disk"}, State: protocol.ActionSuccess,
				Attempt: 1, Started: now.Add(-time.Minute), Finished: now.Add(-10 * time.Second)},
			{Index: 1, OnFailureOf: -1, Step: schema.Step{Name: "netplan", Uses: "writefile", Retries: 2}, State: protocol.ActionRunning,
				Attempt: 2, Started: now.Add(-8 * time.Second), Message: "attempt 1 failed: exit status 3", ExitCode: &exit,
				Progress: &protocol.Progress{Bytes: 1 << 30, Total: 2 << 30}},
			{Index: 2, OnFailureOf: 1, Step: schema.Step{Name: "cleanup", Uses: "exec"}, State: protocol.ActionPending},
			{Index: 3, OnFailureOf: -1, Step: schema.Step{Name: "reboot", Uses: "reboot", Background: true}, State: protocol.ActionPending},
		},
	}
	var b strings.Builder
	if err := runner.WriteRuns(&b, []protocol.Run{run}, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		`(?m)^RUN\s+MACHINE\s+WORKFLOW\s+STATE`,
		`(?m)^r7\s+web-01\s+provision\s+running\s+\S+ \S+\s+1m0s\s+first run$`,
		`(?m)^\s+0 stream-image\s+image2disk\s+success\s+50s\s+attempt 1/1$`,
		`(?m)^\s+1 netplan\s+writefile\s+running\s+8s\s+attempt 2/3  exit 3  1\.0GiB/2\.0GiB 50%  attempt 1 failed: exit status 3$`,
		`(?m)^\s+onFailure 2 cleanup\s+exec\s+pending`,
		`(?m)^\s+3 reboot\s+reboot\s+pending\s+background$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("output does not match %s:\n%s", want, out)
		}
	}
}

// FetchRuns reads what GET /v1/runs serves, filters included.
func TestFetchRuns(t *testing.T) {
	t.Parallel()
	m1, m2 := machine(1), machine(2)
	tpl := template("t", sh("one", "true"))
	h := newHarness(t, fleet(m1, m2, tpl, workflow("w1", m1, tpl), workflow("w2", m2, tpl)))
	h.waitRuns("two runs", func(r []protocol.Run) bool { return len(r) == 2 })
	runs, err := runner.FetchRuns(context.Background(), nil, h.srv.URL+"/", url.Values{"machine": {m2.Name}})
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].Hardware != m2.Name || runs[0].Workflow != "w2" {
		t.Errorf("got %+v, want w2's run alone", runs)
	}
	if _, err := runner.FetchRuns(context.Background(), nil, h.srv.URL, url.Values{"limit": {"x"}}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("bad limit: %v, want a 400 error", err)
	}
}

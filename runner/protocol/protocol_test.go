package protocol_test

import (
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/runner/protocol"
)

func TestProgressString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p    protocol.Progress
		want string
	}{
		{protocol.Progress{Bytes: 512}, "512B"},
		{protocol.Progress{Bytes: 3 << 20, Total: 12 << 20, Rate: 1 << 20}, "3.0MiB/12.0MiB 25% 1.0MiB/s"},
		{protocol.Progress{Bytes: 5 << 30, Text: "verifying"}, "5.0GiB verifying"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestPaths(t *testing.T) {
	t.Parallel()
	if got, want := protocol.StatusPath("r12", 3), "/v1/agent/runs/r12/actions/3/status"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := protocol.LogsPath("r12", 0), "/v1/agent/runs/r12/actions/0/logs"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestStates(t *testing.T) {
	t.Parallel()
	for s, want := range map[protocol.RunState][2]bool{
		protocol.RunPending:   {false, true},
		protocol.RunRunning:   {false, true},
		protocol.RunSuccess:   {true, false},
		protocol.RunFailed:    {true, false},
		protocol.RunTimeout:   {true, false},
		protocol.RunCancelled: {true, false},
	} {
		if s.Final() != want[0] || s.Active() != want[1] {
			t.Errorf("%s: final %v active %v, want %v %v", s, s.Final(), s.Active(), want[0], want[1])
		}
	}
}

func TestDurationsAndCurrent(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_800_000_000, 0)
	r := protocol.Run{Started: t0, Actions: []protocol.Action{
		{Index: 0, OnFailureOf: -1, State: protocol.ActionSuccess, Started: t0, Finished: t0.Add(time.Second)},
		{Index: 1, OnFailureOf: 0, State: protocol.ActionPending},
		{Index: 2, OnFailureOf: -1, State: protocol.ActionPending},
	}}
	if got := r.Duration(t0.Add(time.Minute)); got != time.Minute {
		t.Errorf("running run's duration: %s, want 1m", got)
	}
	if got := r.Actions[0].Duration(t0.Add(time.Hour)); got != time.Second {
		t.Errorf("ended action's duration: %s, want 1s", got)
	}
	if got := r.Current(); got != 2 {
		t.Errorf("Current() = %d, want 2 (the next main action, not the failure handler)", got)
	}
}

package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gitmetal/gitmetal/runner/protocol"
)

// FetchRuns asks the daemon at server (a base URL such as
// http://127.0.0.1:8080) for runs, newest first; query holds the filters of
// GET /v1/runs (machine, workflow, state, active, limit) and may be nil.
// It is what `gitmetal status` calls before WriteRuns.
func FetchRuns(ctx context.Context, client *http.Client, server string, query url.Values) ([]protocol.Run, error) {
	if client == nil {
		client = http.DefaultClient
	}
	u := strings.TrimRight(server, "/") + "/v1/runs"
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch runs: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch runs: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("fetch runs: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch runs: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var runs []protocol.Run
	if err := json.Unmarshal(body, &runs); err != nil {
		return nil, fmt.Errorf("fetch runs: %w", err)
	}
	return runs, nil
}

// WriteRuns prints runs for a terminal, each followed by its actions with
// state, attempts, duration and progress or message, as of now:
//
//	RUN  MACHINE  WORKFLOW   STATE    CREATED              DURATION  REASON
//	r7   web-01   provision  running  2026-08-01 10:02:11  1m4s      first run
//	       0 stream-image  image2disk  success  58s   attempt 1/1
//	       1 netplan       writefile   running  6s    attempt 2/3  1.0GiB/2.0GiB 50%
//	       2 reboot        reboot      pending
//	    onFailure 3 cleanup  exec   pending
func WriteRuns(w io.Writer, runs []protocol.Run, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tMACHINE\tWORKFLOW\tSTATE\tCREATED\tDURATION\tREASON")
	for i := range runs {
		run := &runs[i]
		state := string(run.State)
		if run.Stopping != "" && !run.State.Final() {
			state += " (stopping)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", run.ID, run.Hardware, run.Workflow, state,
			run.Created.Local().Format(time.DateTime), round(run.Duration(now)), run.Reason)
		if run.Message != "" {
			fmt.Fprintf(tw, "\t\t\t\t\t\t%s\n", oneLine(run.Message))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for i := range runs {
		run := &runs[i]
		if len(runs) > 1 {
			fmt.Fprintf(w, "%s %s:\n", run.ID, run.Hardware)
		}
		if err := WriteActions(w, run, now); err != nil {
			return err
		}
	}
	return nil
}

// WriteActions prints one run's actions, one a line, onFailure steps
// indented under the action they handle.
func WriteActions(w io.Writer, run *protocol.Run, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	for i := range run.Actions {
		a := &run.Actions[i]
		name := fmt.Sprintf("  %d %s", a.Index, a.Step.Name)
		if a.OnFailureOf >= 0 {
			name = fmt.Sprintf("    onFailure %d %s", a.Index, a.Step.Name)
		}
		var note []string
		if a.Attempt > 0 {
			note = append(note, fmt.Sprintf("attempt %d/%d", a.Attempt, 1+a.Step.Retries))
		}
		if a.Step.Background {
			note = append(note, "background")
		}
		if a.ExitCode != nil {
			note = append(note, fmt.Sprintf("exit %d", *a.ExitCode))
		}
		if a.Progress != nil && a.State == protocol.ActionRunning {
			note = append(note, a.Progress.String())
		}
		if a.Message != "" {
			note = append(note, oneLine(a.Message))
		}
		dur := ""
		if !a.Started.IsZero() {
			dur = round(a.Duration(now)).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, a.Step.Uses, a.State, dur, strings.Join(note, "  "))
	}
	return tw.Flush()
}

func round(d time.Duration) time.Duration {
	if d > time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 200 {
		s = truncate(s, 200)
	}
	return s
}

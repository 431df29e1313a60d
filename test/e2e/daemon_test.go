package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/runner/protocol"
)

// buildGitmetal builds the gitmetal binary from this module, or takes the
// one $GITMETAL_E2E_BIN names (to play the story with a released binary).
func buildGitmetal(t *testing.T, root string) string {
	t.Helper()
	if bin := os.Getenv("GITMETAL_E2E_BIN"); bin != "" {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("GITMETAL_E2E_BIN: %v", err)
		}
		t.Logf("gitmetal binary from GITMETAL_E2E_BIN: %s", bin)
		return bin
	}
	bin := filepath.Join(t.TempDir(), "gitmetal")
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/gitmetal")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/gitmetal: %v\n%s", err, out)
	}
	return bin
}

// daemon is `gitmetal serve`, a real process inside the lab's namespace.
type daemon struct {
	t        *testing.T
	l        *lab
	bin      string
	cmd      *exec.Cmd
	api      string // http://10.78.x.1:8080
	log      string // its stderr and stdout
	stateDir string
	exited   chan struct{}
	exitErr  error
}

// daemonConfig is what the daemon serves.
type daemonConfig struct {
	repo, ipxeDir, installerDir string
}

// startDaemon starts gitmetal serve in the lab and waits until its API
// answers. It is stopped (SIGTERM, then SIGKILL, by PID) at cleanup.
func startDaemon(t *testing.T, l *lab, bin string, cfg daemonConfig) *daemon {
	t.Helper()
	server := l.c.serverIP().String()
	d := &daemon{
		t: t, l: l, bin: bin,
		api:      "http://" + server + ":" + strconv.Itoa(apiPort),
		log:      filepath.Join(l.results, "daemon.log"),
		stateDir: filepath.Join(l.results, "state"),
		exited:   make(chan struct{}),
	}
	args := []string{"serve",
		"--repo", cfg.repo,
		"--state-dir", d.stateDir,
		"--listen", server + ":" + strconv.Itoa(apiPort),
		"--advertise-addr", server,
		"--dhcp-iface", bridge,
		"--dhcp-mode", "reservation",
		"--tftp-listen", server + ":69",
		"--ipxe-dir", cfg.ipxeDir,
		"--installer-dir", cfg.installerDir,
		// The OS asks the DHCP server's address on port 80, as EC2's
		// instances ask 169.254.169.254.
		"--metadata-listen", server + ":80",
		"--log-level", "debug",
	}
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = l.ns.Command(context.Background(), bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start gitmetal serve: %v", err)
	}
	t.Logf("gitmetal serve started (pid %d) in netns %s: %s", d.cmd.Process.Pid, l.ns.Name, strings.Join(args, " "))
	go func() {
		d.exitErr = d.cmd.Wait()
		logf.Close()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("gitmetal serve's log %s, last lines:\n%s", d.log, tailFile(d.log, 30))
		}
	})

	deadline := time.Now().Add(setupTimeout)
	for {
		resp, err := l.client.Get(d.api + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		select {
		case <-d.exited:
			t.Fatalf("gitmetal serve exited at start (%v); its log:\n%s", d.exitErr, tailFile(d.log, 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("gitmetal serve did not answer %s/healthz within %v (%v); its log:\n%s", d.api, setupTimeout, err, tailFile(d.log, 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the daemon by its PID: SIGTERM, and SIGKILL if it has not
// exited 30 s later.
func (d *daemon) stop() {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.t.Errorf("gitmetal serve (pid %d) did not stop on SIGTERM within 30 s; killing it", d.cmd.Process.Pid)
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// get fetches path from the API and decodes its JSON into v.
func (d *daemon) get(path string, v any) error {
	resp, err := d.l.client.Get(d.api + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	if s, ok := v.(*string); ok {
		*s = string(b)
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("GET %s: %w: %s", path, err, b)
	}
	return nil
}

// status is the part of GET /v1/status the story looks at.
type status struct {
	AppliedRevision   string `json:"appliedRevision"`
	AttemptedRevision string `json:"attemptedRevision"`
	Errors            []struct {
		File         string `json:"file"`
		Line, Column int
		Message      string `json:"message"`
	} `json:"errors"`
}

// waitStatus polls /v1/status until ok says yes.
func (d *daemon) waitStatus(what string, ok func(status) bool) status {
	d.t.Helper()
	deadline := time.Now().Add(setupTimeout)
	var s status
	var err error
	for {
		if err = d.get("/v1/status", &s); err == nil && ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: not within %v; last status %+v (%v)", what, setupTimeout, s, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitApplied waits until the daemon has applied revision rev.
func (d *daemon) waitApplied(rev string) {
	d.t.Helper()
	d.waitStatus("revision "+rev+" applied", func(s status) bool { return s.AppliedRevision == rev })
}

// runs returns the machine's runs, newest first.
func (d *daemon) runs(machine string) []protocol.Run {
	d.t.Helper()
	var runs []protocol.Run
	if err := d.get("/v1/runs?machine="+machine, &runs); err != nil {
		d.t.Fatal(err)
	}
	return runs
}

// run returns one run, with its actions.
func (d *daemon) run(id string) *protocol.Run {
	d.t.Helper()
	var r protocol.Run
	if err := d.get("/v1/runs/"+id, &r); err != nil {
		d.t.Fatal(err)
	}
	return &r
}

// waitPendingRun waits until the runner has derived a pending run for the
// machine at revision rev and returns it.
func (d *daemon) waitPendingRun(machine, rev string) *protocol.Run {
	d.t.Helper()
	deadline := time.Now().Add(setupTimeout)
	for {
		runs := d.runs(machine)
		for i := range runs {
			if runs[i].State == protocol.RunPending && runs[i].Revision == rev {
				return &runs[i]
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no pending run for %s at revision %s within %v; runs: %s", machine, rev, setupTimeout, summarizeRuns(runs))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// script fetches the machine's iPXE script as the firmware would.
func (d *daemon) script(mac string) string {
	d.t.Helper()
	var s string
	if err := d.get("/ipxe/"+mac+"/boot.ipxe", &s); err != nil {
		d.t.Fatal(err)
	}
	return s
}

// cli runs a gitmetal command inside the lab (so that --server reaches the
// daemon) and returns its output and exit code.
func (d *daemon) cli(args ...string) (string, int) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	out, err := d.l.ns.Command(ctx, d.bin, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	d.t.Fatalf("gitmetal %s: %v\n%s", strings.Join(args, " "), err, out)
	return "", -1
}

// summarizeRuns is one line per run, for failure messages.
func summarizeRuns(runs []protocol.Run) string {
	var b strings.Builder
	for _, r := range runs {
		fmt.Fprintf(&b, "\n  %s %s %s rev=%s reason=%q %s", r.ID, r.Workflow, r.State, short(r.Revision), r.Reason, r.Message)
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

// tailFile returns the last n lines of a file, for failure messages.
func tailFile(p string, n int) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  | " + strings.Join(lines, "\n  | ")
}

package runner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/agent"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/runner"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/test/logbuf"
	"github.com/gitmetal/gitmetal/test/poll"
)

// daemonEnv makes the test binary a runner daemon (see daemonMain): the
// kill -9 test starts it as a child process, kills it mid-run and starts it
// again on the same state directory.
const daemonEnv = "GITMETAL_RUNNER_TEST_DAEMON"

func TestMain(m *testing.M) {
	if dir := os.Getenv(daemonEnv); dir != "" {
		os.Exit(daemonMain(dir))
	}
	os.Exit(m.Run())
}

// Lines the kill test's actions print.
const (
	killFirstLines  = 200
	killSecondLines = 300
)

// killFleet is the daemon's desired state: one machine, three actions;
// the second prints slowly so that the daemon dies in the middle of it.
func killFleet() []any {
	m := machine(1)
	tpl := template("install",
		sh("first", fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "first $i"; i=$((i+1)); done`, killFirstLines)),
		sh("second", fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "second $i"; i=$((i+1)); sleep 0.01; done`, killSecondLines)),
		sh("third", `echo third`))
	return []any{m, tpl, workflow("w", m, tpl)}
}

// daemonMain serves a runner on the listener inherited as fd 3, with its
// state in dir, and writes the machine's installer token to dir/token
// once it has a run. It runs until killed.
func daemonMain(dir string) int {
	log := zerolog.New(os.Stderr).With().Timestamp().Str("pid", fmt.Sprint(os.Getpid())).Logger()
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		log.Error().Err(err).Msg("listener")
		return 1
	}
	st, err := store.New()
	if err != nil {
		log.Error().Err(err).Msg("store")
		return 1
	}
	if _, err := st.Apply("rev1", fleet(killFleet()...)); err != nil {
		log.Error().Err(err).Msg("apply")
		return 1
	}
	r, err := runner.New(runner.Config{Store: st, StateDir: dir, RetryBackoff: 100 * time.Millisecond, Log: log})
	if err != nil {
		log.Error().Err(err).Msg("runner")
		return 1
	}
	defer r.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	mux := http.NewServeMux()
	r.Register(mux)
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	go func() {
		m := machine(1)
		for ctx.Err() == nil {
			if tok, ok, err := r.Install(ctx, m, m.Interfaces[0].MAC); err == nil && ok {
				tmp := filepath.Join(dir, "token.tmp")
				if os.WriteFile(tmp, []byte(tok), 0o600) == nil {
					os.Rename(tmp, filepath.Join(dir, "token"))
				}
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if err := r.Run(ctx); err != nil {
		log.Error().Err(err).Msg("run")
		return 1
	}
	srv.Close()
	return 0
}

// daemon is a child process running daemonMain.
type daemon struct {
	cmd    *exec.Cmd
	stderr *logbuf.Buffer
	done   chan struct{}
}

func startDaemon(t *testing.T, dir string, ln *os.File) *daemon {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), daemonEnv+"="+dir)
	cmd.ExtraFiles = []*os.File{ln}
	d := &daemon{cmd: cmd, stderr: &logbuf.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("daemon %d stderr:\n%s", cmd.Process.Pid, d.stderr)
		}
	})
	return d
}

// kill sends SIGKILL to the daemon (by its PID) and waits for it to die.
func (d *daemon) kill() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// The daemon is killed with SIGKILL while an action streams its output;
// restarted on the same state directory, it has every line and status it
// acknowledged, the agent carries on, and the run completes with every
// line stored exactly once.
func TestKill9MidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts daemon processes")
	}
	t.Parallel()
	dir := t.TempDir()
	ln, lf := listen(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	url := "http://" + addr

	d1 := startDaemon(t, dir, lf)
	var token []byte
	var err error
	deadline := time.Now().Add(waitFor)
	for {
		if token, err = os.ReadFile(filepath.Join(dir, "token")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon wrote no token within %s: %v", waitFor, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := machine(1)
	agentLog := &logbuf.Buffer{}
	a, err := agent.New(agent.Config{
		Server: url, Token: string(token), MACs: []string{m.Interfaces[0].MAC}, Executor: shell{},
		Log:  zerolog.New(zerolog.MultiLevelWriter(agentLog, zerolog.NewTestWriter(t))).Level(zerolog.DebugLevel),
		Wait: 5 * time.Second, Heartbeat: 200 * time.Millisecond, FlushInterval: 50 * time.Millisecond,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ag := runAgent(t, a)

	// Wait until the second action has some lines on disk, then kill.
	var before protocol.Run
	var acked []protocol.LogLine
	waitUntil(t, "lines of the second action acknowledged", func() bool {
		var runs []protocol.Run
		if getJSON(t, url+"/v1/runs", &runs) != http.StatusOK || len(runs) != 1 {
			return false
		}
		before = runs[0]
		acked = fetchLogs(t, url, before.ID)
		n := 0
		for _, l := range acked {
			if strings.HasPrefix(l.Text, "second ") {
				n++
			}
		}
		return n >= 20 && before.Actions[1].State == protocol.ActionRunning
	})
	d1.kill()
	if before.Actions[0].State != protocol.ActionSuccess {
		t.Fatalf("before the kill action 0 is %s, want success", before.Actions[0].State)
	}
	// No daemon, and no socket: the agent's requests are refused until the
	// next daemon listens on the same address.
	ln.Close()
	lf.Close()
	waitUntil(t, "the agent to notice", func() bool { return strings.Contains(agentLog.String(), "failed") })
	_, lf = listen(t, addr)
	startDaemon(t, dir, lf)
	res := wait(t, ag)
	if res.err != nil || res.res.State != protocol.RunSuccess {
		t.Fatalf("agent: %+v, %v; want success", res.res, res.err)
	}
	var after protocol.Run
	if getJSON(t, url+"/v1/runs/"+before.ID, &after) != http.StatusOK {
		t.Fatal("GET run after the restart failed")
	}
	if after.State != protocol.RunSuccess {
		t.Fatalf("run after the restart: %s", after.State)
	}
	for i, a := range after.Actions {
		if a.State != protocol.ActionSuccess || a.Attempt != 1 {
			t.Errorf("action %d: %s attempt %d, want success at attempt 1", i, a.State, a.Attempt)
		}
	}
	if !after.Actions[0].Finished.Equal(before.Actions[0].Finished) {
		t.Errorf("action 0 finished %v after the restart, %v before", after.Actions[0].Finished, before.Actions[0].Finished)
	}
	all := fetchLogs(t, url, before.ID)
	// Everything acknowledged before the kill is still there, unchanged.
	for i, l := range acked {
		if i >= len(all) || !sameLine(all[i], l) {
			t.Fatalf("acknowledged line %d %+v lost or changed after the restart", i, l)
		}
	}
	count := map[string]int{}
	for _, l := range all {
		if l.Stream == protocol.StreamStdout {
			count[l.Text]++
		}
	}
	check := func(prefix string, n int) {
		for i := range n {
			if c := count[fmt.Sprintf("%s %d", prefix, i)]; c != 1 {
				t.Errorf("line %q stored %d times, want once", fmt.Sprintf("%s %d", prefix, i), c)
			}
		}
	}
	check("first", killFirstLines)
	check("second", killSecondLines)
	if count["third"] != 1 {
		t.Errorf("line %q stored %d times, want once", "third", count["third"])
	}
}

// listen listens on addr (retrying while the address is still taken) and
// returns the listener and a file of its socket for a child process.
func listen(t *testing.T, addr string) (net.Listener, *os.File) {
	t.Helper()
	var ln net.Listener
	var err error
	waitUntil(t, "listening on "+addr, func() bool {
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ln.Close()
		lf.Close()
	})
	return ln, lf
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Within(t, waitFor, what, cond)
}

func fetchLogs(t *testing.T, url, id string) []protocol.LogLine {
	t.Helper()
	resp, err := http.Get(url + "/v1/runs/" + id + "/logs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []protocol.LogLine
	dec := json.NewDecoder(resp.Body)
	for {
		var l protocol.LogLine
		if err := dec.Decode(&l); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			return out
		}
		out = append(out, l)
	}
}

func sameLine(a, b protocol.LogLine) bool {
	return a.Seq == b.Seq && a.Time.Equal(b.Time) && a.Action == b.Action && a.Attempt == b.Attempt &&
		a.Stream == b.Stream && a.Text == b.Text
}

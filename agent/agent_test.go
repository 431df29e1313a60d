package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/agent"
	"github.com/gitmetal/gitmetal/agent/actions"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/runner"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/fleetgen"
)

const waitFor = 90 * time.Second

func testLogger(t *testing.T) zerolog.Logger {
	if testing.Verbose() {
		return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
	}
	return zerolog.Nop()
}

func machine(n int) *schema.Hardware {
	return &schema.Hardware{
		Name: fleetgen.Name(n),
		Interfaces: []schema.Interface{{
			MAC: fleetgen.MAC(n), IP: fleetgen.IP(n) + "/24", Arch: "x86_64",
			LeaseTime: schema.DefaultLeaseTime, Netboot: schema.Netboot{AllowPXE: true},
		}},
	}
}

// flaky stands between the agent and the runner and spoils requests in
// turn: every fourth gets a 500 without reaching the runner, every fourth
// (shifted by one) reaches the runner, which commits it, but the answer is
// lost (the connection is closed).
// Log batches are spoiled on their own count: every other one is stored
// and its answer lost, so that every retried batch is a repeat.
type flaky struct {
	next        http.Handler
	n, logs     atomic.Int64
	spoiled     atomic.Int64
	lostBatches atomic.Int64
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if strings.HasSuffix(req.URL.Path, "/logs") && req.Method == http.MethodPost {
		if f.logs.Add(1)%2 == 0 {
			f.lostBatches.Add(1)
			f.lose(w, req)
			return
		}
		f.next.ServeHTTP(w, req)
		return
	}
	switch f.n.Add(1) % 4 {
	case 1:
		f.spoiled.Add(1)
		http.Error(w, "flaky: try again", http.StatusInternalServerError)
		return
	case 2:
		f.spoiled.Add(1)
		f.lose(w, req)
		return
	}
	f.next.ServeHTTP(w, req)
}

// lose lets the runner handle req, then closes the connection instead of
// answering.
func (f *flaky) lose(w http.ResponseWriter, req *http.Request) {
	f.next.ServeHTTP(httptest.NewRecorder(), req)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

// The agent runs the built-in actions against a real runner through a
// network that fails and loses answers: the run succeeds, the file is
// written, and every log line is stored exactly once.
func TestAgentThroughFlakyNetwork(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	m := machine(1)
	tpl := &schema.Template{Name: "t", Actions: []schema.Action{
		{Step: schema.Step{Name: "count", Uses: "exec",
			Args: []string{"/bin/sh", "-c", `i=1; while [ $i -le 50 ]; do echo "line $i"; i=$((i+1)); sleep 0.01; done`}}},
		{Step: schema.Step{Name: "hostname", Uses: "writefile",
			Env: map[string]string{"DEST_PATH": "/etc/hostname", "CONTENTS": "node-00001\n", "MODE": "0644"}}},
	}}
	wf := &schema.Workflow{Name: "w", Hardware: m.Name, Template: tpl.Name, Policy: schema.PolicyOnChange}
	st := store.TestStore(t, &schema.Fleet{
		Hardware:  map[string]*schema.Hardware{m.Name: m},
		Templates: map[string]*schema.Template{tpl.Name: tpl},
		Workflows: map[string]*schema.Workflow{wf.Name: wf},
	})
	r, err := runner.New(runner.Config{Store: st, StateDir: t.TempDir(), Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	r.Register(mux)
	proxy := &flaky{next: mux}
	srv := httptest.NewServer(proxy)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		r.Close()
	})

	var token string
	deadline := time.Now().Add(waitFor)
	for {
		tok, ok, err := r.Install(ctx, m, m.Interfaces[0].MAC)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			token = tok
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no run for the machine")
		}
		time.Sleep(20 * time.Millisecond)
	}

	ex, err := agent.NewActionsExecutor(actions.Config{Root: root, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		Server: srv.URL, Token: token, MACs: []string{strings.ToUpper(m.Interfaces[0].MAC)}, Executor: ex,
		Log:  testLogger(t),
		Wait: 2 * time.Second, Heartbeat: 100 * time.Millisecond, FlushInterval: 20 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithTimeout(ctx, waitFor)
	defer acancel()
	res, err := a.Run(actx)
	if err != nil || res.State != protocol.RunSuccess {
		t.Fatalf("agent: %+v, %v; want success", res, err)
	}
	if proxy.spoiled.Load() < 4 || proxy.lostBatches.Load() < 3 {
		t.Fatalf("only %d requests and %d log batches were spoiled: the test did not test retries", proxy.spoiled.Load(), proxy.lostBatches.Load())
	}
	b, err := os.ReadFile(filepath.Join(root, "etc/hostname"))
	if err != nil || string(b) != "node-00001\n" {
		t.Errorf("/etc/hostname: %q, %v; want node-00001", b, err)
	}
	run, err := r.RunByID(res.Run)
	if err != nil {
		t.Fatal(err)
	}
	for _, act := range run.Actions {
		if act.State != protocol.ActionSuccess || act.Attempt != 1 {
			t.Errorf("action %d: %s attempt %d, want success at the first attempt", act.Index, act.State, act.Attempt)
		}
	}
	// The proxy spoils GETs too: ask until one gets through.
	var resp *http.Response
	for try := 0; ; try++ {
		resp, err = http.Get(srv.URL + "/v1/runs/" + res.Run + "/logs")
		if err == nil && resp.StatusCode == http.StatusOK {
			break
		}
		if err == nil {
			resp.Body.Close()
		}
		if try == 10 {
			t.Fatalf("GET logs: %v", err)
		}
	}
	defer resp.Body.Close()
	count := map[string]int{}
	dec := json.NewDecoder(resp.Body)
	for {
		var l protocol.LogLine
		if err := dec.Decode(&l); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		count[l.Text]++
	}
	for i := 1; i <= 50; i++ {
		if c := count[fmt.Sprintf("line %d", i)]; c != 1 {
			t.Errorf("line %d stored %d times, want once", i, c)
		}
	}
}

// A runner that is not there yet: the agent keeps asking until ctx ends,
// and returns ctx's error.
func TestAgentStaysUp(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		http.Error(w, "starting", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	a, err := agent.New(agent.Config{
		Server: srv.URL, Token: "t", MACs: []string{"52:54:00:00:00:01"}, Executor: agent.ExecutorFunc(nil),
		Log: testLogger(t), MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := a.Run(ctx)
		done <- err
	}()
	deadline := time.Now().Add(waitFor)
	for hits.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatal("the agent gave up asking")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not return after ctx ended")
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	ok := agent.Config{Server: "http://127.0.0.1:8080", Token: "tok", MACs: []string{"52:54:00:00:00:01"}, Executor: agent.ExecutorFunc(nil)}
	for _, tc := range []struct {
		name string
		mod  func(*agent.Config)
		want string
	}{
		{"no server", func(c *agent.Config) { c.Server = "" }, "Server and Token are required"},
		{"no token", func(c *agent.Config) { c.Token = "" }, "Server and Token are required"},
		{"ftp server", func(c *agent.Config) { c.Server = "ftp://x" }, "want an http:// or https:// URL"},
		{"token with a space", func(c *agent.Config) { c.Token = "a b" }, "white space"},
		{"no MAC", func(c *agent.Config) { c.MACs = nil }, "at least one MAC"},
		{"bad MAC", func(c *agent.Config) { c.MACs = []string{"zz"} }, `MAC "zz"`},
		{"negative wait", func(c *agent.Config) { c.Wait = -time.Second }, "Wait -1s"},
		{"backoffs reversed", func(c *agent.Config) { c.MinBackoff, c.MaxBackoff = time.Second, time.Millisecond }, "MaxBackoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			cfg.MACs = append([]string(nil), ok.MACs...)
			tc.mod(&cfg)
			_, err := agent.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := agent.New(ok); err != nil {
		t.Errorf("valid config: %v", err)
	}
	ok.Executor = nil // the built-in actions
	if _, err := agent.New(ok); err != nil {
		t.Errorf("config without an executor: %v", err)
	}
}

// Package cli tests the gitmetal binary the way an operator uses it: a real
// daemon process following a real git repository, driven by git commits,
// observed through its HTTP API and the gitmetal status and plan commands,
// killed with SIGKILL and restarted.
package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/test/gittest"
	"github.com/gitmetal/gitmetal/test/logbuf"
	"github.com/gitmetal/gitmetal/test/poll"
)

// buildGitmetal builds the binary once per test binary run.
func buildGitmetal(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gitmetal")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/gitmetal/gitmetal/cmd/gitmetal")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// daemon is a running `gitmetal serve`.
type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string // the API's listener
	boot string // the URL machines are given (--boot-listen's, else url)
	logs *logbuf.Buffer
}

func startDaemon(t *testing.T, bin string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--log-level", "debug"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, cmd: cmd, logs: &logbuf.Buffer{}}
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			d.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.logs.String())
		}
	})
	// The daemon logs the addresses it listens on first.
	addr := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			d.logs.Write([]byte(line + "\n"))
			var m struct{ Message, Listen, HTTPBase string }
			if json.Unmarshal([]byte(line), &m) == nil && m.Message == "gitmetal serving" {
				select {
				case addr <- [2]string{m.Listen, m.HTTPBase}:
				default:
				}
			}
		}
	}()
	select {
	case a := <-addr:
		d.url, d.boot = "http://"+a[0], a[1]
	case <-time.After(30 * time.Second):
		t.Fatalf("the daemon did not start:\n%s", d.logs.String())
	}
	return d
}

type status struct {
	AppliedRevision, AttemptedRevision string
	Errors                             []struct {
		File         string
		Line, Column int
		Message      string
	}
}

func (d *daemon) status() status {
	d.t.Helper()
	var s status
	if err := json.Unmarshal([]byte(d.get("/v1/status")), &s); err != nil {
		d.t.Fatal(err)
	}
	return s
}

func (d *daemon) get(path string) string {
	d.t.Helper()
	_, body := fetch(d.t, "GET", d.url+path, "", nil)
	return body
}

// exampleRepo is a git repository holding examples/fleet in one commit,
// which it returns too.
func exampleRepo(t *testing.T) (*gittest.Repo, string) {
	t.Helper()
	repo := gittest.New(t, "main")
	repo.CopyDir("../../examples/fleet", "")
	return repo, repo.Commit("the example fleet")
}

// waitApplied waits until the daemon has applied rev, at most within.
func (d *daemon) waitApplied(rev string, within time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for {
		s := d.status()
		if s.AppliedRevision == rev {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("revision %s not applied within %v: status %+v", rev, within, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gitmetal runs a gitmetal command and returns its output and exit code.
func gitmetal(t *testing.T, bin, dir string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("gitmetal %v: %v", args, err)
	return "", -1
}

// TestOperatorSession is the reconciler issue's acceptance session: serve a
// repository, commit, break it, revert, plan, kill -9 and restart.
func TestOperatorSession(t *testing.T) {
	t.Parallel()
	bin := buildGitmetal(t)
	repo, first := exampleRepo(t)
	state := t.TempDir()

	d := startDaemon(t, bin, "--repo", repo.Dir, "--state-dir", state, "--interval", "1s")
	d.waitApplied(first, 30*time.Second)
	oldWeb01 := d.get("/v1/hardware/web-01")

	// A commit applies within 2 s.
	repo.Replace("hardware/rack-a/web-01.cue", `ip: "10.20.0.21/24"`, `ip: "10.20.0.121/24"`)
	moved := repo.Commit("move web-01")
	d.waitApplied(moved, 2*time.Second)
	if !strings.Contains(d.get("/v1/hardware/web-01"), "10.20.0.121/24") {
		t.Fatal("web-01 does not have its new address")
	}

	// An invalid commit is refused with its file and line; the last good
	// revision keeps serving.
	repo.Replace("hardware/rack-b/arm-01.cue", `arch: "aarch64"`, `arch: "arm64"`)
	bad := repo.Commit("arm64 is spelt aarch64")
	deadline := time.Now().Add(2 * time.Second)
	var s status
	for s = d.status(); s.AttemptedRevision != bad; s = d.status() {
		if time.Now().After(deadline) {
			t.Fatalf("the invalid commit was not attempted within 2 s: %+v", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s.AppliedRevision != moved || len(s.Errors) == 0 || s.Errors[0].File != "hardware/rack-b/arm-01.cue" || s.Errors[0].Line == 0 {
		t.Fatalf("got %+v, want %s still applied and an error at hardware/rack-b/arm-01.cue:LINE", s, moved)
	}
	out, code := gitmetal(t, bin, "", "status", "--server", d.url)
	if code != 1 || !strings.Contains(out, "hardware/rack-b/arm-01.cue:") || !strings.Contains(out, "REFUSED") {
		t.Errorf("gitmetal status: exit %d, want 1 naming the file:\n%s", code, out)
	}

	// git revert brings the old content back.
	repo.Git("revert", "--no-edit", "HEAD") // the typo
	repo.Git("revert", "--no-edit", moved)  // the move
	reverted := repo.Git("rev-parse", "HEAD")
	d.waitApplied(reverted, 5*time.Second)
	if got := d.get("/v1/hardware/web-01"); stripRevision(got) != stripRevision(oldWeb01) {
		t.Errorf("after the reverts web-01 is\n%s\nwant\n%s", got, oldWeb01)
	}
	if out, code := gitmetal(t, bin, "", "status", "--server", d.url); code != 0 {
		t.Errorf("gitmetal status after the fix: exit %d:\n%s", code, out)
	}

	// gitmetal plan: 0 without changes, 2 with, 1 when invalid.
	if out, code := gitmetal(t, bin, repo.Dir, "plan"); code != 0 {
		t.Errorf("plan with a clean tree: exit %d, want 0:\n%s", code, out)
	}
	repo.Replace("workflows/web-01-ubuntu.cue", "ubuntu-24.04", "ubuntu-26.04")
	out, code = gitmetal(t, bin, repo.Dir, "plan")
	if code != 2 || !strings.Contains(out, "web-01") || !strings.Contains(out, "re-provision") {
		t.Errorf("plan of an image change: exit %d, want 2 naming web-01 as re-provisioned:\n%s", code, out)
	}
	if out, code := gitmetal(t, bin, repo.Dir, "plan", "--format", "markdown"); code != 2 || !strings.Contains(out, "web-01") {
		t.Errorf("plan --format markdown: exit %d:\n%s", code, out)
	}
	repo.Replace("hardware/rack-a/web-02.cue", `name: "web-02"`, `name: "Web-02"`)
	if out, code := gitmetal(t, bin, repo.Dir, "plan"); code != 1 || !strings.Contains(out, "hardware/rack-a/web-02.cue:") {
		t.Errorf("plan of an invalid tree: exit %d, want 1 naming the file:\n%s", code, out)
	}
	repo.Git("checkout", "--", ".")

	// kill -9 and restart: the state dir's clone and validation cache make
	// the restart cheap, and the same revision is served.
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.cmd.Wait()
	d2 := startDaemon(t, bin, "--repo", repo.Dir, "--state-dir", state, "--interval", "1s")
	d2.waitApplied(reverted, 30*time.Second)
	if !strings.Contains(d2.logs.String(), `"message":"validation cache loaded"`) {
		t.Errorf("the restarted daemon did not load the validation cache:\n%s", d2.logs.String())
	}
}

func stripRevision(s string) string {
	var m map[string]any
	if json.Unmarshal([]byte(s), &m) != nil {
		return s
	}
	delete(m, "revision")
	b, _ := json.Marshal(m)
	return string(b)
}

// TestServeRefusesBadFlags: a flag value serve cannot use is exit 2 with
// the flag named and what it allows, before anything starts.
func TestServeRefusesBadFlags(t *testing.T) {
	t.Parallel()
	bin := buildGitmetal(t)
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--keep-runs", "-1"}, "--keep-runs -1: want 0 (keep every run) or more"},
		{[]string{"--site", "Fra 1"}, `--site "Fra 1": want a site name`},
		{[]string{"--api-token-file", "/nonexistent/token"}, "--api-token-file: open /nonexistent/token"},
		{[]string{"--log-level", "loud"}, `--log-level "loud": allowed: debug, info, warn, error`},
		{[]string{"--log-format", "xml"}, `--log-format "xml": allowed: json, console`},
	} {
		args := append([]string{"serve", "--repo", dir, "--state-dir", filepath.Join(dir, "state")}, c.args...)
		out, code := gitmetal(t, bin, dir, args...)
		if code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("serve %v: exit %d, %q; want exit 2 and %q", c.args, code, out, c.want)
		}
	}
}

// TestBootListener: with --boot-listen, the machines' listener serves what
// the installer calls (iPXE scripts and the agent protocol, with the
// per-boot token the script hands out), and the API's listener serves the
// people's API, which machines are not given.
func TestBootListener(t *testing.T) {
	t.Parallel()
	bin := buildGitmetal(t)
	repo, first := exampleRepo(t)
	d := startDaemon(t, bin, "--repo", repo.Dir, "--state-dir", t.TempDir(), "--boot-listen", "127.0.0.1:0")
	d.waitApplied(first, 30*time.Second)
	if d.boot == "" || d.boot == d.url {
		t.Fatalf("boot URL %q, API %q: want two listeners", d.boot, d.url)
	}

	// A machine with a pending run gets the installer script with a token.
	var runs []protocol.Run
	poll.Until(t, "a pending run", func() bool {
		runs = nil
		return json.Unmarshal([]byte(d.get("/v1/runs?active=1")), &runs) == nil && len(runs) > 0
	})
	var one struct {
		Hardware struct {
			Interfaces []struct{ MAC string }
		}
	}
	body := d.get("/v1/hardware/" + runs[0].Hardware)
	if err := json.Unmarshal([]byte(body), &one); err != nil || len(one.Hardware.Interfaces) == 0 {
		t.Fatalf("hardware %s: %v in %s", runs[0].Hardware, err, body)
	}
	mac := one.Hardware.Interfaces[0].MAC
	code, script := fetch(t, "GET", d.boot+"/ipxe/"+mac+"/boot.ipxe", "", nil)
	token := regexp.MustCompile(`gitmetal\.token=(\S+)`).FindStringSubmatch(script)
	if code != http.StatusOK || token == nil {
		t.Fatalf("boot listener's script for %s: %d, no gitmetal.token=:\n%s", mac, code, script)
	}

	hello, err := json.Marshal(protocol.Hello{MACs: []string{mac}, Agent: "cli-test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, url string
		body        []byte
		want        int
	}{
		{"POST", d.boot + protocol.PathHello, hello, http.StatusOK},
		{"POST", d.url + protocol.PathHello, hello, http.StatusNotFound},
		{"GET", d.url + "/v1/runs", nil, http.StatusOK},
		{"GET", d.boot + "/v1/runs", nil, http.StatusNotFound},
		{"GET", d.boot + "/v1/hardware", nil, http.StatusNotFound},
	} {
		if code, body := fetch(t, c.method, c.url, token[1], c.body); code != c.want {
			t.Errorf("%s %s: got %d, want %d: %s", c.method, c.url, code, c.want, body)
		}
	}
}

// fetch does one request with token as its bearer token and returns the
// status and body.
func fetch(t *testing.T, method, url, token string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestServeSite: a daemon with --site serves that site's machines and
// their workflows only; a commit that moves a machine to its site brings
// it in, with its run. gitmetal status names the site.
func TestServeSite(t *testing.T) {
	t.Parallel()
	bin := buildGitmetal(t)
	repo := gittest.New(t, "main")
	repo.CopyDir("../../examples/fleet", "")
	// web-02 lives in fra1; the others take the settings' ams1.
	repo.Replace("hardware/rack-a/web-02.cue", `name: "web-02"`, `name: "web-02"
	site: "fra1"`)
	first := repo.Commit("web-02 is in fra1")
	d := startDaemon(t, bin, "--repo", repo.Dir, "--state-dir", t.TempDir(), "--interval", "1s", "--site", "ams1")
	d.waitApplied(first, 30*time.Second)
	has := func(path string) bool {
		code, body := fetch(t, "GET", d.url+path, "", nil)
		if code != http.StatusOK && code != http.StatusNotFound {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		return code == http.StatusOK
	}
	runsOf := func(machine string) int {
		var runs []protocol.Run
		if err := json.Unmarshal([]byte(d.get("/v1/runs?machine="+machine)), &runs); err != nil {
			t.Fatal(err)
		}
		return len(runs)
	}
	if !has("/v1/hardware/web-01") || has("/v1/hardware/web-02") || has("/v1/workflows/web-02-ubuntu") {
		t.Errorf("ams1's daemon: web-01 %v, web-02 %v, web-02's workflow %v; want only web-01",
			has("/v1/hardware/web-01"), has("/v1/hardware/web-02"), has("/v1/workflows/web-02-ubuntu"))
	}
	poll.Until(t, "web-01's run", func() bool { return runsOf("web-01") > 0 })
	if n := runsOf("web-02"); n != 0 {
		t.Errorf("ams1's daemon made %d runs for fra1's web-02", n)
	}
	if out, code := gitmetal(t, bin, repo.Dir, "status", "--server", d.url); code != 0 || !strings.Contains(out, "site       ams1") {
		t.Errorf("gitmetal status: exit %d, want 0 and the site:\n%s", code, out)
	}

	// web-02 moves to ams1: plan per site says who gains and who loses
	// it, and this daemon serves it from the next revision.
	repo.Replace("hardware/rack-a/web-02.cue", `
	site: "fra1"`, "")
	for site, want := range map[string]int{"ams1": 2, "fra1": 2, "lon1": 0} {
		out, code := gitmetal(t, bin, repo.Dir, "plan", "--site", site)
		if code != want || want == 2 && !strings.Contains(out, "web-02") {
			t.Errorf("gitmetal plan --site %s: exit %d, want %d (naming web-02 when 2):\n%s", site, code, want, out)
		}
	}
	moved := repo.Commit("web-02 moves to ams1")
	d.waitApplied(moved, 10*time.Second)
	if !has("/v1/hardware/web-02") || !has("/v1/workflows/web-02-ubuntu") {
		t.Error("web-02 moved to ams1 but ams1's daemon does not serve it")
	}
	poll.Until(t, "web-02's run", func() bool { return runsOf("web-02") > 0 })
}

// TestAPIToken: with --api-token-file, the API's /v1/ answers only with
// the token; gitmetal status sends it from the same kind of file; health
// stays open.
func TestAPIToken(t *testing.T) {
	t.Parallel()
	bin := buildGitmetal(t)
	repo, first := exampleRepo(t)
	tokenFile := filepath.Join(t.TempDir(), "api-token")
	const token = "gm-test-token-5f0c9a7e1b"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, bin, "--repo", repo.Dir, "--state-dir", t.TempDir(), "--api-token-file", tokenFile)
	poll.Until(t, "the first revision applied", func() bool {
		code, body := fetch(t, "GET", d.url+"/v1/status", token, nil)
		return code == http.StatusOK && strings.Contains(body, first)
	})
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/v1/status", "", http.StatusUnauthorized},
		{"/v1/hardware/web-01", "", http.StatusUnauthorized},
		{"/v1/runs", "wrong-token-0123456789", http.StatusUnauthorized},
		{"/v1/hardware/web-01", token, http.StatusOK},
		{"/healthz", "", http.StatusOK},
	} {
		if code, body := fetch(t, "GET", d.url+c.path, c.token, nil); code != c.want {
			t.Errorf("GET %s with token %q: got %d, want %d: %s", c.path, c.token, code, c.want, body)
		}
	}
	if out, code := gitmetal(t, bin, repo.Dir, "status", "--server", d.url); code == 0 || !strings.Contains(out, "401") {
		t.Errorf("gitmetal status without the token: exit %d, want a failure naming 401:\n%s", code, out)
	}
	if out, code := gitmetal(t, bin, repo.Dir, "status", "--server", d.url, "--api-token-file", tokenFile); code != 0 || !strings.Contains(out, "web-01") {
		t.Errorf("gitmetal status with the token: exit %d, want 0 and the runs:\n%s", code, out)
	}
}

// TestAgentAndLogs: a machine's workflow run by `gitmetal agent` (as the
// installer runs it, with the token its iPXE script carries), then read
// back with `gitmetal logs`.
func TestAgentAndLogs(t *testing.T) {
	t.Parallel()
	bin := buildGitmetal(t)
	repo, _ := exampleRepo(t)
	const mac = "52:54:00:c1:10:01"
	repo.Write("hardware/lab/cli-01.cue", `hardware: {
	name: "cli-01"
	interfaces: [{mac: "`+mac+`", ip: "10.20.9.10/24", hostname: "cli-01"}]
	disks: [{device: "/dev/null"}]
}
`)
	repo.Write("templates/hello.cue", `template: {
	name: "hello"
	actions: [{name: "greet", uses: "exec", args: ["/bin/sh", "-c", "echo hello from {{.hardware.name}}; echo to stderr >&2"]}]
}
`)
	repo.Write("workflows/cli-01-hello.cue", `workflow: {name: "cli-01-hello", hardware: "cli-01", template: "hello"}
`)
	rev := repo.Commit("cli-01 says hello")
	d := startDaemon(t, bin, "--repo", repo.Dir, "--state-dir", t.TempDir())
	d.waitApplied(rev, 30*time.Second)
	var runs []protocol.Run
	poll.Until(t, "cli-01's run", func() bool {
		runs = nil
		return json.Unmarshal([]byte(d.get("/v1/runs?machine=cli-01")), &runs) == nil && len(runs) == 1
	})
	id := runs[0].ID
	code, script := fetch(t, "GET", d.boot+"/ipxe/"+mac+"/boot.ipxe", "", nil)
	token := regexp.MustCompile(`gitmetal\.token=(\S+)`).FindStringSubmatch(script)
	if code != http.StatusOK || token == nil {
		t.Fatalf("script for %s: %d, no token:\n%s", mac, code, script)
	}

	out, code := gitmetal(t, bin, repo.Dir, "agent", "--server", d.boot, "--token", token[1], "--mac", mac)
	if code != 0 || !strings.Contains(out, `"success"`) {
		t.Fatalf("gitmetal agent: exit %d, want 0 and the run's success:\n%s", code, out)
	}
	for _, args := range [][]string{{"logs", "--server", d.url, id}, {"logs", "--server", d.url, "-f", id}} {
		out, code := gitmetal(t, bin, repo.Dir, args...)
		if code != 0 || !regexp.MustCompile(`stdout +hello from cli-01`).MatchString(out) ||
			!regexp.MustCompile(`stderr +to stderr`).MatchString(out) || !strings.Contains(out, "run success") {
			t.Errorf("gitmetal %v: exit %d, want 0, each stream's line and the end:\n%s", args, code, out)
		}
	}
	if out, code := gitmetal(t, bin, repo.Dir, "logs", "--server", d.url, "r999"); code != 1 || !strings.Contains(out, "404") {
		t.Errorf("gitmetal logs of a run that does not exist: exit %d, want 1 and 404:\n%s", code, out)
	}
}

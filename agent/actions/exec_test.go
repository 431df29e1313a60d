package actions

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/gittest"
)

// output returns the recorded lines that are not the action's own.
func output(r *recorder) []string {
	var out []string
	for _, l := range r.Lines() {
		if !strings.HasPrefix(l, "running ") && !strings.Contains(l, " exited 0 after ") {
			out = append(out, l)
		}
	}
	return out
}

func TestExecExitCodeAndOutput(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t)
	err := newTestActions(t).Run(context.Background(), step("exec", nil,
		"/bin/sh", "-c", "echo out1; echo err1 >&2; sleep 0.1; echo out2; printf 'no newline'; exit 3"), rec)
	t.Logf("error: %v", err)
	var xe *ExitError
	if !errors.As(err, &xe) || xe.Code != 3 {
		t.Fatalf("Run: got %v, want an *ExitError with code 3", err)
	}
	got := output(rec)
	slices.Sort(got) // stdout and stderr interleave freely
	if diff := cmp.Diff([]string{"no newline", "out1", "out2", "stderr: err1"}, got); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
}

func TestExecCommandForms(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"args", map[string]string{"GREETING": "hello"}, []string{"/bin/sh", "-c", `echo "$GREETING world"`}, []string{"hello world"}},
		{"cmd line split at ; and spaces", map[string]string{"CMD_LINE": "echo a  b; echo c;"}, nil, []string{"a b", "c"}},
		{"interpreter", map[string]string{"CMD_LINE": "echo $X; echo done", "DEFAULT_INTERPRETER": "/bin/sh -c", "X": "from env"}, nil,
			[]string{"from env", "done"}},
		{"found in PATH", map[string]string{"PATH": "/usr/bin:/bin"}, []string{"echo", "plain"}, []string{"plain"}},
		{"environment is the step's", map[string]string{"A": "1"}, []string{"env"},
			[]string{"A=1", "HOME=/root", "PATH=" + defaultPath}},
		{"long line split", nil, []string{"/bin/sh", "-c", fmt.Sprintf("head -c %d /dev/zero | tr '\\0' x", maxLine+10)},
			[]string{strings.Repeat("x", maxLine), strings.Repeat("x", 10)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t)
			if err := newTestActions(t).Run(context.Background(), step("exec", tc.env, tc.args...), rec); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if diff := cmp.Diff(tc.want, output(rec)); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExecErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no command", nil, nil, "no command: set args, or env CMD_LINE"},
		{"both", map[string]string{"CMD_LINE": "true"}, []string{"true"}, "set either args or CMD_LINE, not both"},
		{"not found", nil, []string{"no-such-command-here"}, "command no-such-command-here: not found in PATH="},
		{"not found by path", nil, []string{"/no/such/binary"}, "command /no/such/binary: not found"},
		{"resolv without device", map[string]string{"CMD_LINE": "true", "UPDATE_RESOLV_CONF": "1"}, nil, "needs BLOCK_DEVICE"},
		{"killed", nil, []string{"/bin/sh", "-c", "kill -TERM $$"}, "command killed by signal terminated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := newTestActions(t).Run(context.Background(), step("exec", tc.env, tc.args...), newRecorder(t))
			t.Logf("error: %v", err)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// gone reports whether pid has exited (a zombie waiting for its reaper
// counts: it no longer runs).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	st := step("exec", nil, "/bin/sh", "-c", "sleep 300 & echo $! > "+pidFile+"; echo started; wait")
	st.Timeout = schema.Duration(3 * time.Second)
	rec := newRecorder(t)
	err := newTestActions(t).Run(context.Background(), st, rec)
	t.Logf("error: %v", err)
	var te *TimeoutError
	if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: got %v, want a *TimeoutError", err)
	}
	if !rec.has("started") {
		t.Fatal("the command never started: the timeout proves nothing")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(10 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the background child %d still runs after the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// makeRootfs makes an ext4 image holding a busybox system.
func makeRootfs(t testing.TB) string {
	t.Helper()
	bb := gittest.NeedTool(t, "busybox")
	if ef, err := elf.Open(bb); err == nil {
		for _, p := range ef.Progs {
			if p.Type == elf.PT_INTERP {
				msg := bb + " is dynamically linked: the chroot test needs busybox-static"
				if ci() {
					t.Fatal(msg)
				}
				t.Skip(msg)
			}
		}
		ef.Close()
	}
	dir := t.TempDir()
	for _, d := range []string{"bin", "usr/bin", "etc", "dev", "proc", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"bin/sh":          "busybox",
		"bin/cat":         "busybox",
		"bin/ls":          "busybox",
		"bin/mount":       "busybox",
		"usr/bin/env":     "/bin/busybox",                          // absolute, as /etc/alternatives links are
		"etc/resolv.conf": "/run/systemd/resolve/stub-resolv.conf", // dangling in the image
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return makeExt4(t, dir)
}

// mountedUnder lists mount points under dir.
func mountedUnder(t testing.TB, dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
			found = append(found, fields[4])
		}
	}
	return found
}

func TestExecChroot(t *testing.T) {
	t.Parallel()
	needRoot(t)
	img := makeRootfs(t)
	a := newTestActions(t)
	hostResolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Skipf("the test needs the host's /etc/resolv.conf: %v", err)
	}
	rec := newRecorder(t)
	err = a.Run(context.Background(), step("exec", map[string]string{
		"BLOCK_DEVICE":        img,
		"FS_TYPE":             "ext4",
		"DEFAULT_INTERPRETER": "/bin/sh -c",
		"CMD_LINE":            "test -e /proc/self/stat && echo proc-ok; test -e /dev/null && echo dev-ok; ls /sys/class >/dev/null && echo sys-ok; cat /etc/resolv.conf; echo here > /marker",
		"UPDATE_RESOLV_CONF":  "true",
	}), rec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := append([]string{"proc-ok", "dev-ok", "sys-ok"}, strings.Split(strings.TrimRight(string(hostResolv), "\n"), "\n")...)
	var got []string
	for _, l := range output(rec) {
		if !strings.HasPrefix(l, "attached ") && !strings.HasPrefix(l, "mounted ") && !strings.HasPrefix(l, "unmounted ") {
			got = append(got, l)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}

	// A command that mounts something and leaves it: the action cleans
	// up, or the file system could not be unmounted.
	rec3 := newRecorder(t)
	err = a.Run(context.Background(), step("exec", map[string]string{"BLOCK_DEVICE": img, "FS_TYPE": "ext4"},
		"/bin/sh", "-c", "mount -t tmpfs none /tmp && echo mounted-tmp"), rec3)
	if err != nil {
		t.Fatalf("Run with a leftover mount: %v", err)
	}
	if !rec3.has("mounted-tmp") || !rec3.has("/tmp, left mounted by the action") {
		t.Errorf("leftover mount: got %q", rec3.Lines())
	}

	// Args form, with a command found through an absolute link inside
	// the image.
	rec2 := newRecorder(t)
	err = a.Run(context.Background(), step("exec", map[string]string{"BLOCK_DEVICE": img, "FS_TYPE": "ext4", "ONLY": "this"}, "env"), rec2)
	if err != nil {
		t.Fatalf("Run env: %v", err)
	}
	if !rec2.has("ONLY=this") || !rec2.has("running env (chrooted in ") {
		t.Errorf("env in the chroot: got %q", rec2.Lines())
	}

	if m := mountedUnder(t, a.cfg.TempDir); len(m) != 0 {
		t.Errorf("still mounted: %v", m)
	}
	if ls, _ := os.ReadDir(a.cfg.TempDir); len(ls) != 0 {
		t.Errorf("left in TempDir: %v", ls)
	}
	m, err := a.mountFS(img, "ext4", "test", newRecorder(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.unmount(newRecorder(t))
	if b, err := os.ReadFile(filepath.Join(m.dir, "marker")); err != nil || string(b) != "here\n" {
		t.Errorf("/marker in the image: got %q, %v, want the command's output", b, err)
	}
	if l, err := os.Readlink(filepath.Join(m.dir, "etc/resolv.conf")); err != nil || l != "/run/systemd/resolve/stub-resolv.conf" {
		t.Errorf("etc/resolv.conf after the command: got link %q (%v), want the original link back", l, err)
	}
	if _, err := os.Lstat(filepath.Join(m.dir, "etc/resolv.conf.gitmetal-orig")); err == nil {
		t.Errorf("the renamed original was left behind")
	}
}

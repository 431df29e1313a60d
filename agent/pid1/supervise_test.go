package pid1

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/gitmetal/gitmetal/test/logbuf"
)

const helperEnv = "GITMETAL_PID1_SUPERVISOR_HELPER"

// TestSupervisor runs the supervisor in a process of its own (its reaper
// waits for any child, which would steal other tests' children here), as
// a child subreaper, the way PID 1 inherits orphans.
func TestSupervisor(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("needs /bin/sh")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSupervisorHelper$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestSupervisorHelper") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
}

func TestSupervisorHelper(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("run by TestSupervisor")
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	var logs logbuf.Buffer
	sup := newSupervisor(zerolog.New(&logs))
	go sup.reap()

	// Output reaches the writer line by line, the exit status is told,
	// and the orphan the command leaves is reaped.
	var out logbuf.Buffer
	status, err := sup.runOnce("/bin/sh", []string{"sh", "-c", "echo out-line; echo err-line >&2; (sleep 0.3; echo orphan-done) & exit 3"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if status != "exit status 3" {
		t.Errorf("got %q, want exit status 3", status)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "orphan-done") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"out-line\n", "err-line\n", "orphan-done\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	for time.Now().Before(deadline) && len(children(t)) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	if c := children(t); len(c) > 0 {
		t.Errorf("children left (zombies not reaped?): %v", c)
	}

	// An agent that exits is started again, with a growing backoff, until
	// the context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	sup.runAgent(ctx, "/bin/sh", []string{"sh", "-c", "echo started; exit 1"}, &out)
	if n := strings.Count(out.String(), "started\n"); n != 2 {
		t.Errorf("got %d starts in 2.5 s, want 2 (backoff 1 s then 2 s):\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "agent exited, restarting it"); n != 2 {
		t.Errorf("got %d restart lines, want 2:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `"status":"exit status 1"`) {
		t.Errorf("log lacks the exit status:\n%s", logs.String())
	}
}

// children lists the processes whose parent is this one, with their state.
func children(t *testing.T) []string {
	t.Helper()
	self := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []string
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b)[i+1:])
		if len(f) > 1 && f[1] == self {
			out = append(out, strings.TrimSuffix(filepath.Base(filepath.Dir(s)), "/")+":"+f[0])
		}
	}
	return out
}

// TestConsoleWritesEveryActiveConsole: the consoles come from sysfs's
// active list, each opened once; a missing one is skipped.
func TestConsoleWritesEveryActiveConsole(t *testing.T) {
	t.Parallel()
	master, slaveName := openPTY(t)
	sysfs := t.TempDir()
	dev := t.TempDir()
	os.MkdirAll(filepath.Join(sysfs, "class/tty/console"), 0o755)
	os.WriteFile(filepath.Join(sysfs, "class/tty/console/active"), []byte("ttyFAKE ttyMISSING ttyFAKE\n"), 0o644)
	if err := os.Symlink(slaveName, filepath.Join(dev, "ttyFAKE")); err != nil {
		t.Fatal(err)
	}
	c := OpenConsole(sysfs, dev)
	if got := strings.Join(c.Names, ","); got != "ttyFAKE" {
		t.Fatalf("got consoles %q, want ttyFAKE", got)
	}
	log := NewLogger(c)
	log.Info().Str("if", "eth0").Msg("dhcp lease")
	buf := make([]byte, 4096)
	master.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := master.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	line := string(buf[:n])
	if !strings.Contains(line, "INF dhcp lease component=pid1 if=eth0") || !strings.HasPrefix(line, "[") {
		t.Errorf("got %q, want an uptime-stamped line with the message and fields", line)
	}
	if strings.Contains(line, "\x1b[") {
		t.Errorf("got colour codes in %q", line)
	}
	// With no active list, /dev/console is used.
	empty := OpenConsole(t.TempDir(), dev)
	if len(empty.Names) != 0 {
		t.Errorf("no active list and no console node: got %v, want none", empty.Names)
	}
}

// openPTY opens a pseudo-terminal pair and returns the master and the
// slave's path.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Skipf("no /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	m := os.NewFile(uintptr(fd), "ptmx")
	t.Cleanup(func() { m.Close() })
	return m, "/dev/pts/" + strconv.Itoa(n)
}

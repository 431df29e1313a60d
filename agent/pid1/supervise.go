package pid1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// supervisor starts the processes PID 1 runs and reaps every process that
// exits. As PID 1 it inherits every orphan (the commands actions run, and
// their children), so it must wait for all of them; os/exec's Wait would
// race with that, which is why the agent runs as a child started with
// ForkExec and waited for here, never in-process with a reaper beside it.
type supervisor struct {
	log zerolog.Logger
	mu  sync.Mutex
	// children maps the PIDs started here to where their exit goes.
	children map[int]chan unix.WaitStatus
	wake     chan struct{}
}

func newSupervisor(log zerolog.Logger) *supervisor {
	return &supervisor{log: log, children: map[int]chan unix.WaitStatus{}, wake: make(chan struct{}, 1)}
}

// reap waits for any child, forever: the exits of processes started here
// go to their channel, the others (orphans) are just collected.
func (s *supervisor) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ECHILD):
			// No children yet: wait for a start (or poll, for a child
			// started some other way).
			select {
			case <-s.wake:
			case <-time.After(time.Second):
			}
			continue
		case err != nil:
			s.log.Error().Err(err).Msg("wait4")
			time.Sleep(time.Second)
			continue
		}
		s.mu.Lock()
		ch := s.children[pid]
		delete(s.children, pid)
		s.mu.Unlock()
		if ch != nil {
			ch <- ws
		}
	}
}

// start starts a process whose exit status arrives on the returned
// channel. Registration happens under the lock the reaper takes, so a
// child that exits at once is not mistaken for an orphan.
func (s *supervisor) start(argv0 string, argv, env []string, files []uintptr, attr *syscall.SysProcAttr) (int, <-chan unix.WaitStatus, error) {
	ch := make(chan unix.WaitStatus, 1)
	s.mu.Lock()
	pid, err := syscall.ForkExec(argv0, argv, &syscall.ProcAttr{Dir: "/", Env: env, Files: files, Sys: attr})
	if err == nil {
		s.children[pid] = ch
	}
	s.mu.Unlock()
	if err != nil {
		return 0, nil, err
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return pid, ch, nil
}

// childEnv is the environment of the processes PID 1 starts.
func childEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/",
		"TERM=linux",
		// The consoles are plain terminals and logs: no colour codes
		// (zerolog's console writer honours it).
		"NO_COLOR=1",
	}
}

// describe says how a process ended.
func describe(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// runAgent runs the agent (the executable path with argv) with its output on
// the console, and starts it again whenever it exits, with a backoff that
// doubles from a second to a minute and resets once a start lasted long.
// It returns when ctx ends (never, in PID 1).
func (s *supervisor) runAgent(ctx context.Context, path string, argv []string, out io.Writer) {
	backoff := time.Second
	for n := 1; ctx.Err() == nil; n++ {
		started := time.Now()
		status, err := s.runOnce(path, argv, out)
		ran := time.Since(started)
		if ran > 2*time.Minute {
			backoff = time.Second
		}
		ev := s.log.Warn().Int("start", n).Stringer("ran", ran.Round(time.Millisecond)).Stringer("restart_in", backoff)
		if err != nil {
			ev.Err(err).Msg("agent did not start")
		} else {
			ev.Str("status", status).Msg("agent exited, restarting it")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Minute)
	}
}

// runOnce starts the agent and waits for its exit, copying its output
// line by line to out.
func (s *supervisor) runOnce(path string, argv []string, out io.Writer) (string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		r.Close()
		w.Close()
		return "", err
	}
	pid, exited, err := s.start(path, argv, childEnv(), []uintptr{null.Fd(), w.Fd(), w.Fd()}, &syscall.SysProcAttr{Setsid: true})
	w.Close()
	null.Close()
	if err != nil {
		r.Close()
		return "", err
	}
	s.log.Info().Int("pid", pid).Msg("agent started")
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		copyLines(out, r)
		r.Close()
	}()
	ws := <-exited
	// Grandchildren that still hold the pipe must not hold PID 1 up.
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	return describe(ws), nil
}

// copyLines copies r to w a line at a time, so that the agent's lines and
// PID 1's own never mix within a line. It returns at EOF.
func copyLines(w io.Writer, r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			w.Write(line)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return
		}
	}
}

// runShells starts a shell on each console and starts it again when it
// exits (gitmetal.debug=1, when /bin/sh exists). It returns when ctx ends.
func (s *supervisor) runShells(ctx context.Context, sh string, consoles []string) {
	for _, name := range consoles {
		go func() {
			for ctx.Err() == nil {
				if err := s.shell(sh, "/dev/"+name); err != nil {
					s.log.Warn().Err(err).Str("console", name).Msg("debug shell")
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}()
	}
}

// shell runs sh on the terminal tty as a session leader with tty as its
// controlling terminal, and waits for it to exit.
func (s *supervisor) shell(sh, tty string) error {
	fd, err := unix.Open(tty, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	unix.SetNonblock(fd, false)
	f := os.NewFile(uintptr(fd), tty)
	defer f.Close()
	pid, exited, err := s.start(sh, []string{"-sh"}, append(childEnv(), "PS1=gitmetal-installer# "),
		[]uintptr{f.Fd(), f.Fd(), f.Fd()}, &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0})
	if err != nil {
		return err
	}
	s.log.Info().Int("pid", pid).Str("console", tty).Msg("debug shell started")
	ws := <-exited
	s.log.Info().Str("console", tty).Str("status", describe(ws)).Msg("debug shell exited")
	return nil
}

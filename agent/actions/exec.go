package actions

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/gitmetal/gitmetal/schema"
)

// defaultPath is the command search path when the step sets no PATH.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// maxLine splits longer output lines into several log lines.
const maxLine = 16 << 10

// exec: Step.Args, or CMD_LINE (run through DEFAULT_INTERPRETER, e.g.
// "/bin/sh -c", or else split at ';' into commands and at spaces into
// arguments, as Tinkerbell's cexec does); BLOCK_DEVICE + FS_TYPE to run
// chrooted in that file system; UPDATE_RESOLV_CONF. The environment is
// PATH and HOME defaults plus Step.Env; the agent's own is not passed on.
func (a *Actions) exec(ctx context.Context, step schema.Step, out Reporter) (err error) {
	p := newParams(step.Env)
	cmdLine := p.str("CMD_LINE")
	device := p.str("BLOCK_DEVICE")
	resolv := p.boolean("UPDATE_RESOLV_CONF", false)
	var cmds [][]string
	switch {
	case len(step.Args) > 0 && strings.TrimSpace(cmdLine) != "":
		p.fail("CMD_LINE", cmdLine, "set either args or CMD_LINE, not both")
	case len(step.Args) > 0:
		cmds = [][]string{step.Args}
	case strings.TrimSpace(cmdLine) == "":
		p.errs = append(p.errs, errors.New("no command: set args, or env CMD_LINE"))
	case strings.TrimSpace(p.str("DEFAULT_INTERPRETER")) != "":
		cmds = [][]string{append(strings.Fields(p.str("DEFAULT_INTERPRETER")), cmdLine)}
	default:
		for c := range strings.SplitSeq(cmdLine, ";") {
			if f := strings.Fields(c); len(f) > 0 {
				cmds = append(cmds, f)
			}
		}
	}
	if resolv && device == "" {
		p.fail("UPDATE_RESOLV_CONF", p.str("UPDATE_RESOLV_CONF"), "needs BLOCK_DEVICE (it is about the chroot's resolv.conf)")
	}
	if err := p.err(); err != nil {
		return err
	}
	env := commandEnv(step.Env)

	root := ""
	if device != "" {
		m, merr := a.mountFS(device, p.str("FS_TYPE"), "BLOCK_DEVICE", out)
		if merr != nil {
			return merr
		}
		defer func() { err = errors.Join(err, m.unmount(out)) }()
		for _, d := range []string{"dev", "proc", "sys"} {
			if err := m.bind("/"+d, d); err != nil {
				return err
			}
		}
		if resolv {
			restore, rerr := m.resolvConf(out)
			if rerr != nil {
				return rerr
			}
			defer func() { err = errors.Join(err, restore()) }()
		}
		root = m.dir
	}
	for _, argv := range cmds {
		if err := a.runCommand(ctx, root, argv, env, out); err != nil {
			return err
		}
	}
	return nil
}

// commandEnv is Step.Env over the defaults, sorted for a stable order.
func commandEnv(stepEnv map[string]string) []string {
	env := map[string]string{"PATH": defaultPath, "HOME": "/root"}
	for k, v := range stepEnv {
		env[k] = v
	}
	list := make([]string, 0, len(env))
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	sort.Strings(list)
	return list
}

// runCommand runs argv, chrooted into root when root is not empty, and
// sends every output line to out.
func (a *Actions) runCommand(ctx context.Context, root string, argv, env []string, out Reporter) error {
	pathEnv := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	bin, err := lookPath(cmp.Or(root, "/"), argv[0], pathEnv)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Args = argv
	cmd.Env = env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Chroot: root}
	// Kill the whole process group: a shell's children go too.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A child that keeps stdout open after the command ends does not
	// hold the action up for longer than this.
	cmd.WaitDelay = 5 * time.Second
	stdout, stderr := &lineWriter{out: out}, &lineWriter{out: out, stderr: true}
	cmd.Stdout, cmd.Stderr = stdout, stderr

	where := ""
	if root != "" {
		where = " (chrooted in " + root + ")"
	}
	out.Logf("running %s%s", strings.Join(argv, " "), where)
	start := time.Now()
	err = cmd.Run()
	stdout.flush()
	stderr.flush()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		xe := &ExitError{Code: ee.ExitCode()}
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			xe.Code, xe.Signal = -1, ws.Signal().String()
		}
		return fmt.Errorf("%s: %w", argv[0], xe)
	case err != nil:
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	out.Logf("%s exited 0 after %s", argv[0], time.Since(start).Round(time.Millisecond))
	return nil
}

// lookPath finds file as the command would be found inside root: symbolic
// links are resolved inside root (/etc/alternatives links are absolute),
// and the path returned is the one inside root.
func lookPath(root, file, pathEnv string) (string, error) {
	check := func(p string) error {
		resolved, err := securejoin.SecureJoin(root, p)
		if err != nil {
			return err
		}
		fi, err := os.Stat(resolved)
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable file", p)
		}
		return nil
	}
	where := ""
	if root != "/" {
		where = " in the BLOCK_DEVICE file system"
	}
	if strings.Contains(file, "/") {
		p := file
		if !path.IsAbs(p) {
			p = "/" + p
		}
		if err := check(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", fmt.Errorf("command %s: not found%s", file, where)
			}
			return "", fmt.Errorf("command %s%s: %w", file, where, err)
		}
		return p, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if !path.IsAbs(dir) {
			continue
		}
		if p := path.Join(dir, file); check(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %s: not found in PATH=%s%s", file, pathEnv, where)
}

// lineWriter turns a command's output into log lines.
type lineWriter struct {
	out    Reporter
	stderr bool // the command's standard error, else its output
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	rest := w.buf
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		w.emit(rest[:i])
		rest = rest[i+1:]
	}
	for len(rest) >= maxLine {
		w.emit(rest[:maxLine])
		rest = rest[maxLine:]
	}
	w.buf = append(w.buf[:0], rest...)
	return len(p), nil
}

func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = w.buf[:0]
	}
}

func (w *lineWriter) emit(line []byte) {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if w.stderr {
		w.out.Stderr(string(line))
		return
	}
	w.out.Logf("%s", line)
}

// resolvConf puts the installer's /etc/resolv.conf in the mounted file
// system for the length of the command, as Tinkerbell's cexec does: the
// original (often a link into /run) is renamed aside, an empty file bound
// over with the installer's, and everything put back by restore.
func (m *mountPoint) resolvConf(out Reporter) (restore func() error, err error) {
	if _, err := os.Stat("/etc/resolv.conf"); err != nil {
		out.Logf("UPDATE_RESOLV_CONF: the installer has no /etc/resolv.conf (%v); leaving the target's alone", err)
		return func() error { return nil }, nil
	}
	root, err := os.OpenRoot(m.dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if fi, err := root.Lstat("etc"); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("UPDATE_RESOLV_CONF: /etc in the target is missing or not a directory")
	}
	const name, aside = "etc/resolv.conf", "etc/resolv.conf.gitmetal-orig"
	moved := false
	if _, err := root.Lstat(name); err == nil {
		if err := root.Rename(name, aside); err != nil {
			return nil, fmt.Errorf("UPDATE_RESOLV_CONF: %w", err)
		}
		moved = true
	}
	undo := func() error {
		var errs []error
		if err := os.Remove(filepath.Join(m.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		if moved {
			if err := os.Rename(filepath.Join(m.dir, aside), filepath.Join(m.dir, name)); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("UPDATE_RESOLV_CONF: %w", err), undo())
	}
	f.Close()
	target := filepath.Join(m.dir, name)
	if err := bindMount("/etc/resolv.conf", target); err != nil {
		return nil, errors.Join(fmt.Errorf("UPDATE_RESOLV_CONF: bind: %w", err), undo())
	}
	return func() error {
		if err := unmount(target, true); err != nil {
			return fmt.Errorf("UPDATE_RESOLV_CONF: unmount %s: %w", target, err)
		}
		return undo()
	}, nil
}

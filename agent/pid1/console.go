package pid1

import (
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Console writes every line to each of the kernel's active consoles.
//
// The kernel sends its own messages to every console= of the command
// line, but /dev/console, the only terminal init gets, is just the last
// one: with gitmetal's "console=ttyS0,115200 console=tty0" that is the
// screen, so a serial console (or a BMC's serial-over-LAN) would show the
// kernel booting and then nothing. Console opens the terminals listed in
// /sys/class/tty/console/active instead, each once.
type Console struct {
	mu    sync.Mutex
	outs  []*os.File
	Names []string // the terminals written to, such as "ttyS0", "tty0"
}

// OpenConsole opens the active consoles (read from sysfs, a mounted
// /sys), or /dev/console when none can be opened.
func OpenConsole(sysfs, dev string) *Console {
	c := &Console{}
	b, _ := os.ReadFile(filepath.Join(sysfs, "class/tty/console/active"))
	seen := map[string]bool{}
	for _, name := range strings.Fields(string(b)) {
		if seen[name] || strings.ContainsAny(name, "/.") {
			continue
		}
		seen[name] = true
		if f := openTerminal(filepath.Join(dev, name)); f != nil {
			c.outs = append(c.outs, f)
			c.Names = append(c.Names, name)
		}
	}
	if len(c.outs) == 0 {
		if f := openTerminal(filepath.Join(dev, "console")); f != nil {
			c.outs = append(c.outs, f)
			c.Names = append(c.Names, "console")
		}
	}
	return c
}

// openTerminal opens a terminal for writing without waiting for a modem's
// carrier (O_NONBLOCK, then CLOCAL), and then makes writes blocking again
// so that lines are not dropped when the UART is slower than the agent. A
// serial port without a UART behind it fails to open (EIO) and is skipped.
func openTerminal(p string) *os.File {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil && t.Cflag&unix.CLOCAL == 0 {
		t.Cflag |= unix.CLOCAL
		unix.IoctlSetTermios(fd, unix.TCSETS, t)
	}
	unix.SetNonblock(fd, false)
	return os.NewFile(uintptr(fd), p)
}

// Write writes p to every console. It never fails: a console that cannot
// be written to is not a reason to stop.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.outs {
		// Terminals want \r\n; the tty layer adds the \r (ONLCR).
		f.Write(p)
	}
	return len(p), nil
}

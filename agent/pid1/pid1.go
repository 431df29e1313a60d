// Package pid1 is what the gitmetal binary does as PID 1 of the installer
// initramfs (see agent/initramfs): it turns a bare kernel into a machine
// the agent can work on, starts the agent, and keeps it running.
//
// In order, each step logged on every console:
//
//  1. mount /proc, /sys, /dev (devtmpfs), /dev/pts, /dev/shm, /run, /tmp;
//  2. open the kernel's active consoles (Console: the serial port and the
//     screen, not only /dev/console);
//  3. read gitmetal.server, gitmetal.token, gitmetal.mac (or BOOTIF) and
//     gitmetal.debug from /proc/cmdline (ParseCmdline);
//  4. load the modules of /lib/modules/gitmetal.order with finit_module,
//     dependencies first (the builder resolved them);
//  5. bring up the NIC with the boot MAC (netlink) and get a lease with
//     nclient4: address, routes (option 121, else the router), DNS into
//     /etc/resolv.conf, host name; renew it at T1 for as long as it runs;
//  6. wait briefly for disks to settle (SCSI and SATA probe asynchronously),
//     so the agent's inventory sees them, and make the /dev/disk/by-id
//     links sysfs alone can name (virtio, NVMe), as udev would;
//  7. run the agent as a child process — `/init agent --server ...
//     --allow-reboot`, the binary's own agent subcommand — with its output
//     on the consoles, and start it again whenever it exits.
//
// Rules it keeps: PID 1 never exits (the kernel panics when it does), so
// every failure is printed and retried with backoff, forever: a missing
// NIC driver, a DHCP server that does not answer, an agent that crashes. It
// reaps every orphan. It runs the agent as a separate process so that
// reaping never races with the agent's own os/exec waits, and so that an
// agent that panics is restarted instead of taking the machine down.
// gitmetal.debug=1 also starts /bin/sh on each console when the installer
// carries one (INSTALLER_BUSYBOX=1); nothing needs a shell otherwise.
//
// What it must not do: decide anything about the workflow (the agent and
// the runner do), or use os/exec (its waits would race with the reaper).
package pid1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Paths in the initramfs, shared with the builder (agent/initramfs).
const (
	InitPath        = "/init"
	ModulesDir      = "/lib/modules"
	ModuleOrderFile = "/lib/modules/gitmetal.order"
	ShellPath       = "/bin/sh"
)

// Config configures Main.
type Config struct {
	// Version is printed when the installer starts.
	Version string
	// AgentArgs returns the agent's command line after the program name,
	// for the settings and the MAC of the NIC that got the lease.
	// Default DefaultAgentArgs.
	AgentArgs func(s Settings, mac string) []string
}

// DefaultAgentArgs runs the gitmetal binary's agent subcommand:
// agent --server S --token T --mac M --allow-reboot --log-level info|debug.
func DefaultAgentArgs(s Settings, mac string) []string {
	level := "info"
	if s.Debug {
		level = "debug"
	}
	return []string{"agent", "--server", s.Server, "--token", s.Token, "--mac", mac, "--allow-reboot", "--log-level", level}
}

// Main runs the installer's PID 1 and never returns. Call it first thing
// in main when os.Getpid() == 1.
func Main(cfg Config) {
	if cfg.AgentArgs == nil {
		cfg.AgentArgs = DefaultAgentArgs
	}
	mounted := map[string]bool{}
	done, mountErr := mountAll(mounted, false)
	cons := OpenConsole("/sys", "/dev")
	log := NewLogger(cons)
	ignoreSignals(log)
	// A panic here would end PID 1 and so the kernel: say it, and stay.
	defer func() {
		if r := recover(); r != nil {
			log.Error().Str("panic", fmt.Sprint(r)).Msg("the installer's PID 1 failed; the machine stays up for a person to look at")
			idle()
		}
	}()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	log.Info().Str("version", cfg.Version).Str("kernel", strings.TrimSpace(string(kernel))).
		Strs("consoles", cons.Names).Msg("gitmetal installer starting")
	if mountErr != nil {
		log.Error().Err(mountErr).Msg("some file systems are not mounted")
	}
	log.Info().Strs("mounted", done).Msg("file systems mounted")

	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		log.Error().Err(err).Msg("cannot read the kernel command line")
	}
	s, cmdErr := ParseCmdline(string(cmdline))
	if s.Debug {
		log = log.Level(zerolog.DebugLevel)
	} else {
		log = log.Level(zerolog.InfoLevel)
	}
	ctx := context.Background()
	sup := newSupervisor(log)
	go sup.reap()
	if s.Debug {
		if _, err := os.Stat(ShellPath); err == nil {
			sup.runShells(ctx, ShellPath, cons.Names)
		} else {
			log.Info().Msg("gitmetal.debug=1: no /bin/sh in this installer (build it with INSTALLER_BUSYBOX=1 for a shell)")
		}
	}

	entropy := make(chan time.Duration, 1)
	go func() { entropy <- waitEntropy() }()

	start := time.Now()
	res, err := loadModules(ModulesDir, ModuleOrderFile)
	if err != nil {
		log.Error().Err(err).Msg("kernel modules not loaded")
	}
	for _, e := range res.failed {
		log.Warn().Err(e).Msg("module not loaded")
	}
	log.Debug().Strs("modules", res.absent).Msg("modules for hardware this machine does not have")
	log.Debug().Strs("modules", res.slow).Msg("modules that took 100 ms or more to load")
	log.Info().Int("loaded", res.loaded).Int("already", res.already).Int("not_for_this_machine", len(res.absent)).
		Int("failed", len(res.failed)).Stringer("took", time.Since(start).Round(time.Millisecond)).Msg("kernel modules loaded")
	if done, err := mountAll(mounted, true); err != nil {
		log.Warn().Err(err).Msg("late mounts")
	} else if len(done) > 0 {
		log.Info().Strs("mounted", done).Msg("file systems mounted")
	}
	log.Debug().Msg("waiting for disks in the background")
	settled := make(chan []string, 1)
	go func() { settled <- settleDisks("/sys/block", 500*time.Millisecond, 10*time.Second) }()

	if cmdErr != nil {
		// Without a server and a token there is nobody to report to: say
		// why on the console, forever, and keep the machine up for a
		// person to look at.
		for {
			log.Error().Err(cmdErr).Str("cmdline", redact(string(cmdline))).
				Msg("the installer cannot reach the runner: fix the boot script's kernel command line")
			time.Sleep(time.Minute)
		}
	}
	if s.MAC == "" {
		log.Warn().Msg("no gitmetal.mac= or BOOTIF= on the kernel command line: trying every Ethernet interface")
	}

	select {
	case d := <-entropy:
		log.Info().Stringer("took", d.Round(time.Millisecond)).Msg("random number generator ready")
	case <-time.After(5 * time.Second):
		log.Warn().Msg("waiting for the kernel's random number generator (no RDRAND or hardware RNG: the kernel gathers timer jitter)")
		d := <-entropy
		log.Info().Stringer("took", d.Round(time.Millisecond)).Msg("random number generator ready")
	}
	log.Debug().Msg("bringing up the network")
	handle, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	for err != nil {
		log.Error().Err(err).Msg("netlink")
		time.Sleep(5 * time.Second)
		handle, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	nw := &network{
		handle: handle,
		newConn: func(ifname string) (net.PacketConn, error) {
			return nclient4.NewRawUDPConn(ifname, nclient4.ClientPort)
		},
		resolvConf:     "/etc/resolv.conf",
		sethostname:    func(h string) error { return unix.Sethostname([]byte(h)) },
		log:            log,
		attemptTimeout: 15 * time.Second,
		minBackoff:     time.Second,
		maxBackoff:     30 * time.Second,
	}
	b, _ := nw.up(ctx, s.MAC) // only ends with ctx, which never ends
	log.Info().Str("if", b.Name()).Str("mac", b.MAC()).Str("ip", b.cfg.Addr.String()).
		Str("server", b.cfg.Server.String()).Str("routes", routesString(b.cfg.Routes)).
		Str("dns", addrsString(b.cfg.DNS)).Str("hostname", b.cfg.Hostname).Stringer("lease", b.cfg.Lease).
		Msg("dhcp lease")
	go nw.keep(ctx, b)

	disks := <-settled
	links := linkDisks("/sys/block", "/dev/disk/by-id", disks)
	log.Info().Strs("disks", disks).Strs("by_id", links).Msg("block devices")
	exe, err := os.Executable()
	if err != nil {
		exe = InitPath
	}
	log.Info().Str("server", s.Server).Msg("starting the agent")
	sup.runAgent(ctx, exe, append([]string{exe}, cfg.AgentArgs(s, b.MAC())...), cons)
	idle() // runAgent returns only when ctx ends, which it does not
}

// idle blocks forever. A timer keeps the Go runtime from deciding that
// every goroutine is asleep, which would end the program.
func idle() {
	for {
		time.Sleep(time.Hour)
	}
}

// ignoreSignals catches the signals whose default action in a Go program
// is to exit (the kernel sends PID 1 only the signals it handles, and Go
// handles them all): ctrl-alt-del, a `kill 1` from an action, a hangup on
// the console. They are logged and ignored. A handler, unlike SIG_IGN, is
// not inherited by the agent and the commands it runs.
func ignoreSignals(log zerolog.Logger) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE)
	go func() {
		for s := range sigs {
			log.Warn().Str("signal", s.String()).Msg("PID 1 ignores signals")
		}
	}()
}

// waitEntropy blocks until the kernel's random number generator is
// initialized and returns how long that took. A blocking getrandom makes
// the kernel gather timer jitter when it has no RDRAND, hardware RNG or
// seed; the DHCP client's transaction IDs (which spin on a non-blocking
// getrandom) and the agent's TLS and IDs need it ready.
func waitEntropy() time.Duration {
	start := time.Now()
	b := make([]byte, 16)
	for {
		_, err := unix.Getrandom(b, 0)
		if err == nil || !errors.Is(err, unix.EINTR) {
			return time.Since(start)
		}
	}
}

// NewLogger returns PID 1's logger: zerolog's console format without
// colours, with the seconds since boot as the time (the kernel's own
// timestamps, and a clock that is right even when the RTC is not).
func NewLogger(w io.Writer) zerolog.Logger {
	cw := zerolog.ConsoleWriter{
		Out:     w,
		NoColor: true,
		FormatTimestamp: func(any) string {
			return "[" + uptime() + "]"
		},
	}
	return zerolog.New(cw).With().Timestamp().Str("component", "pid1").Logger()
}

// uptime is /proc/uptime's first field, padded like the kernel's.
func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "       ?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "       ?"
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "       ?"
	}
	return fmt.Sprintf("%8.2f", v)
}

// redact hides the token in a command line printed on the console.
func redact(cmdline string) string {
	var out []string
	for _, a := range splitCmdline(cmdline) {
		if strings.HasPrefix(a, "gitmetal.token=") {
			a = "gitmetal.token=<redacted>"
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}

func routesString(rs []Route) string {
	var out []string
	for _, r := range rs {
		if r.Gateway.IsValid() {
			out = append(out, r.Dst.String()+" via "+r.Gateway.String())
		} else {
			out = append(out, r.Dst.String()+" on-link")
		}
	}
	return strings.Join(out, ", ")
}

func addrsString[T fmt.Stringer](as []T) string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return strings.Join(out, ",")
}

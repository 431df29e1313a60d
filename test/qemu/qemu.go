// Package qemu runs QEMU virtual machines for gitmetal's netboot tests: it
// builds a small test kernel and initramfs (Debian's kernel, never
// installed; busybox-static; an /init that prints marker lines on the
// serial console and powers off) and boots VMs with SeaBIOS or OVMF, a NIC
// on a tap device in a network namespace, boot order network first, a
// watchdog, and helpers that wait for milestone lines in the serial log.
//
// Design notes:
//   - KVM does not work on the project's machines (SeaBIOS/iPXE die with an
//     emulation failure and QEMU then pauses forever), so VMs run under
//     TCG and a watchdog kills each one by its PID after Timeout.
//   - -nographic makes SeaBIOS and iPXE mirror their text to the serial
//     port, which goes to a log file; tests wait for lines in that file
//     (milestones), never for durations.
//   - Downloads and built images live in a cache directory keyed by
//     content, so repeated runs reuse them.
//
// The package must not create network namespaces, bridges or taps (the
// test owns those, see test/netlab), must not touch host interfaces, and
// must not use QEMU's user-mode network except where a test asks for it
// with ExtraArgs.
package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Firmware is the VM's firmware.
type Firmware string

// The firmwares.
const (
	// BIOS is SeaBIOS; a NIC gets QEMU's iPXE option ROM.
	BIOS Firmware = "bios"
	// UEFI is OVMF (OVMFCode with a private copy of OVMFVars).
	UEFI Firmware = "uefi"
)

// Paths of Debian's packages.
const (
	QEMUBinary = "qemu-system-x86_64" // qemu-system-x86
	OVMFCode   = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars   = "/usr/share/OVMF/OVMF_VARS_4M.fd" // ovmf
)

// DefaultTimeout is how long a VM may run before the watchdog kills it.
const DefaultTimeout = 300 * time.Second

// fatalPatterns end a wait at once: the VM will not get anywhere.
var fatalPatterns = []string{
	"KVM internal error",
	"UEFI Interactive Shell",
	"No bootable device",
	"Kernel panic",
}

// Config describes one VM.
type Config struct {
	// Firmware: BIOS (default) or UEFI.
	Firmware Firmware
	// Kernel, Initrd and Append boot a kernel directly (-kernel,
	// -initrd, -append), without firmware network boot. Optional.
	Kernel, Initrd, Append string
	// NetNS runs QEMU inside this network namespace (ip netns exec), where
	// Tap must exist. Optional: without it QEMU runs in the caller's.
	NetNS string
	// Tap is the tap device the NIC is attached to. Without it the VM has
	// no NIC.
	Tap string
	// MAC is the NIC's address. Default 52:54:00:12:34:56.
	MAC string
	// NIC is the QEMU NIC model. Default virtio-net-pci.
	NIC string
	// NoROM removes the NIC's option ROM (romfile=): on UEFI, OVMF's own
	// PXE then boots (DHCP → TFTP ipxe.efi), as on real hardware.
	NoROM bool
	// ROMFile replaces the NIC's option ROM. Optional.
	ROMFile string
	// Disk is a raw disk image attached after the NIC in the boot order.
	// DiskSizeMB > 0 without Disk creates an empty (sparse) one.
	Disk       string
	DiskSizeMB int
	// MemoryMB is the VM's memory. Default 1024.
	MemoryMB int
	// Timeout is when the watchdog kills QEMU. Default DefaultTimeout.
	Timeout time.Duration
	// Dir holds the serial log, QEMU's own output and the UEFI variables.
	// Required (a test's t.TempDir()).
	Dir string
	// ExtraArgs are appended to QEMU's command line.
	ExtraArgs []string
}

// VM is a running QEMU.
type VM struct {
	cfg       Config
	cmd       *exec.Cmd
	SerialLog string // the guest's serial console
	QEMULog   string // QEMU's own stdout and stderr
	done      chan struct{}
	mu        sync.Mutex
	err       error // QEMU's exit, once done is closed
	killed    bool  // by the watchdog
}

// Args returns QEMU's command line for cfg (after defaults), without the
// ip netns exec prefix.
func Args(cfg Config, serialLog, varsFile string) []string {
	a := []string{QEMUBinary,
		"-accel", "tcg", "-machine", "q35", "-m", fmt.Sprint(cfg.MemoryMB), "-smp", "1",
		"-nodefaults", "-nographic", "-serial", "file:" + serialLog, "-monitor", "none",
		"-no-reboot",
	}
	if cfg.Firmware == UEFI {
		a = append(a,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+varsFile)
	}
	if cfg.Tap != "" {
		dev := fmt.Sprintf("%s,netdev=n0,mac=%s,bootindex=1", cfg.NIC, cfg.MAC)
		switch {
		case cfg.NoROM:
			dev += ",romfile="
		case cfg.ROMFile != "":
			dev += ",romfile=" + cfg.ROMFile
		}
		a = append(a, "-netdev", "tap,id=n0,ifname="+cfg.Tap+",script=no,downscript=no", "-device", dev)
	}
	if cfg.Disk != "" {
		a = append(a, "-drive", "if=none,id=d0,format=raw,file="+cfg.Disk, "-device", "virtio-blk-pci,drive=d0,bootindex=2")
	}
	if cfg.Tap != "" && cfg.Kernel == "" {
		a = append(a, "-boot", "order=n")
	}
	if cfg.Kernel != "" {
		a = append(a, "-kernel", cfg.Kernel)
		if cfg.Initrd != "" {
			a = append(a, "-initrd", cfg.Initrd)
		}
		if cfg.Append != "" {
			a = append(a, "-append", cfg.Append)
		}
	}
	return append(a, cfg.ExtraArgs...)
}

// Start starts QEMU and its watchdog. Stop (or the watchdog) ends it.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if cfg.Dir == "" {
		return nil, errors.New("qemu: Dir is required")
	}
	if cfg.Firmware == "" {
		cfg.Firmware = BIOS
	}
	if cfg.Firmware != BIOS && cfg.Firmware != UEFI {
		return nil, fmt.Errorf("qemu: firmware %q: want bios or uefi", cfg.Firmware)
	}
	if cfg.MAC == "" {
		cfg.MAC = "52:54:00:12:34:56"
	}
	if cfg.NIC == "" {
		cfg.NIC = "virtio-net-pci"
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 1024
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Kernel == "" && cfg.Tap == "" && cfg.Disk == "" && cfg.DiskSizeMB == 0 && len(cfg.ExtraArgs) == 0 {
		return nil, errors.New("qemu: nothing to boot: give Kernel, Tap, a disk or ExtraArgs")
	}
	vm := &VM{
		cfg:       cfg,
		SerialLog: filepath.Join(cfg.Dir, "serial.log"),
		QEMULog:   filepath.Join(cfg.Dir, "qemu.log"),
		done:      make(chan struct{}),
	}
	if cfg.Disk == "" && cfg.DiskSizeMB > 0 {
		vm.cfg.Disk = filepath.Join(cfg.Dir, "disk.raw")
		if err := os.WriteFile(vm.cfg.Disk, nil, 0o644); err != nil {
			return nil, err
		}
		if err := os.Truncate(vm.cfg.Disk, int64(cfg.DiskSizeMB)<<20); err != nil {
			return nil, err
		}
	}
	vars := ""
	if cfg.Firmware == UEFI {
		vars = filepath.Join(cfg.Dir, "OVMF_VARS.fd")
		b, err := os.ReadFile(OVMFVars)
		if err != nil {
			return nil, fmt.Errorf("qemu: OVMF (apt-get install -y ovmf): %w", err)
		}
		if err := os.WriteFile(vars, b, 0o644); err != nil {
			return nil, err
		}
	}
	// Create the log so waiters can open it before QEMU writes.
	if err := os.WriteFile(vm.SerialLog, nil, 0o644); err != nil {
		return nil, err
	}
	argv := Args(vm.cfg, vm.SerialLog, vars)
	if cfg.NetNS != "" {
		// ip netns exec execs QEMU, so the PID is QEMU's own.
		argv = append([]string{"ip", "netns", "exec", cfg.NetNS}, argv...)
	}
	out, err := os.Create(vm.QEMULog)
	if err != nil {
		return nil, err
	}
	vm.cmd = exec.Command(argv[0], argv[1:]...)
	vm.cmd.Stdin = nil
	vm.cmd.Stdout = out
	vm.cmd.Stderr = out
	if err := vm.cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("qemu: start %s: %w", strings.Join(argv, " "), err)
	}
	go func() {
		err := vm.cmd.Wait()
		out.Close()
		vm.mu.Lock()
		vm.err = err
		vm.mu.Unlock()
		close(vm.done)
	}()
	go vm.watchdog(ctx)
	return vm, nil
}

// watchdog kills QEMU by its PID after the timeout or when ctx ends.
func (vm *VM) watchdog(ctx context.Context) {
	t := time.NewTimer(vm.cfg.Timeout)
	defer t.Stop()
	select {
	case <-vm.done:
		return
	case <-t.C:
	case <-ctx.Done():
	}
	vm.mu.Lock()
	vm.killed = true
	vm.mu.Unlock()
	vm.cmd.Process.Kill()
}

// PID is QEMU's process ID.
func (vm *VM) PID() int { return vm.cmd.Process.Pid }

// Stop kills QEMU (by its PID) unless it has exited, and waits for it.
func (vm *VM) Stop() {
	select {
	case <-vm.done:
		return
	default:
	}
	vm.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-vm.done:
	case <-time.After(5 * time.Second):
		vm.cmd.Process.Kill()
		<-vm.done
	}
}

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Exit returns how QEMU ended; call it after Done is closed.
func (vm *VM) Exit() (killedByWatchdog bool, err error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.killed, vm.err
}

// Serial returns the serial log so far, with carriage returns and ANSI
// escape sequences (SeaBIOS, iPXE and OVMF draw with them) removed.
func (vm *VM) Serial() string {
	b, _ := os.ReadFile(vm.SerialLog)
	return Clean(string(b))
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;=?]*[a-zA-Z]|\x1b[()][0-9A-Za-z]|\x1b[a-zA-Z=>]|\r`)

// Clean removes carriage returns and ANSI escape sequences.
func Clean(s string) string { return ansi.ReplaceAllString(s, "") }

// ErrExited is returned by WaitFor when QEMU exits before the line appears;
// ErrFatal when a line of fatalPatterns appears.
var (
	ErrExited = errors.New("qemu exited")
	ErrFatal  = errors.New("fatal line in the serial log")
)

// WaitFor waits until a line of the serial log matches re and returns the
// line. It fails when ctx ends, QEMU exits (or the watchdog kills it)
// without such a line, or a line of fatalPatterns appears first.
func (vm *VM) WaitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		exited := false
		select {
		case <-vm.done:
			exited = true
		default:
		}
		// Read after checking done, so the last lines QEMU wrote are seen.
		if line, fatal := vm.scan(re); line != "" {
			return line, nil
		} else if fatal != "" {
			return "", fmt.Errorf("%w: %q while waiting for %q", ErrFatal, fatal, re)
		}
		if exited {
			killed, err := vm.Exit()
			if killed {
				return "", fmt.Errorf("%w: killed by the watchdog after %v while waiting for %q", ErrExited, vm.cfg.Timeout, re)
			}
			return "", fmt.Errorf("%w (%v) while waiting for %q", ErrExited, err, re)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %q: %w", re, ctx.Err())
		case <-tick.C:
		}
	}
}

// scan returns the first line matching re, or else the first fatal line.
func (vm *VM) scan(re *regexp.Regexp) (match, fatal string) {
	f, err := os.Open(vm.SerialLog)
	if err != nil {
		return "", ""
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 64<<20))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := Clean(sc.Text())
		if re.MatchString(line) {
			return line, ""
		}
		if fatal == "" {
			for _, p := range fatalPatterns {
				if strings.Contains(line, p) {
					fatal = line
				}
			}
		}
	}
	return "", fatal
}

// Milestones waits for each pattern in turn (each may match anywhere in the
// log) and returns the matching lines; it stops at the first that does not
// come.
func (vm *VM) Milestones(ctx context.Context, patterns ...string) ([]string, error) {
	var lines []string
	for _, p := range patterns {
		line, err := vm.WaitFor(ctx, regexp.MustCompile(p))
		if err != nil {
			return lines, err
		}
		lines = append(lines, line)
	}
	return lines, nil
}

// Tail returns the last n lines of the cleaned serial log, for failure
// messages.
func (vm *VM) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(vm.Serial(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString("  | " + l + "\n")
	}
	return b.String()
}

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/test/e2e/diskimage"
	"github.com/gitmetal/gitmetal/test/qemu"
)

// machine is the VM: its disk outlives each QEMU process, as a server's
// disk outlives a power cycle.
type machine struct {
	t     *testing.T
	l     *lab
	disk  string
	boots int
	start time.Time // of the story, for the timeline
}

// newMachine makes the VM's empty disk (sparse, 1 GiB).
func newMachine(t *testing.T, l *lab) *machine {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return &machine{t: t, l: l, disk: disk, start: time.Now()}
}

// milestone is a line the serial console must show, in order.
type milestone struct {
	name, re string
	// check, when set, judges the matching line: an error ends the boot
	// at once (a milestone that matches alternatives fails fast when the
	// wrong one comes).
	check func(line string) error
	// hint, when set, is added to the failure when the milestone does
	// not come: what usually causes that.
	hint string
}

// firmwareMilestones are the firmware's network boot up to iPXE's DHCP.
func (m *machine) firmwareMilestones() []milestone {
	ip := regexp.QuoteMeta(m.l.c.machineIP().String())
	if m.l.c.uefi() {
		// OVMF's own PXE, then the ipxe.efi it fetched over TFTP.
		return []milestone{
			{name: "uefi pxe", re: `>>Start PXE over IPv4`},
			{name: "uefi pxe dhcp", re: `Station IP address is ` + ip},
			{name: "ipxe.efi", re: `iPXE initialising devices`},
			{name: "ipxe dhcp", re: `net0: ` + ip + `/255\.255\.255\.0`},
		}
	}
	return []milestone{
		{name: "ipxe rom", re: `iPXE \(http://ipxe\.org\)|iPXE initialising devices`},
		{name: "ipxe dhcp", re: `net0: ` + ip + `/255\.255\.255\.0`},
	}
}

// firmwareArgs are QEMU arguments for the case's firmware settings. On
// UEFI, the firmware's IPv6 network boot is off, as on most servers' setup
// screens: with nothing answering DHCPv6, OVMF's PXEv6 option would add
// about a minute to every boot that falls through to the disk
// (opt/org.tianocore/IPv6Support, see edk2's OvmfPkg/RUNTIME_CONFIG.md).
func firmwareArgs(c vmCase) []string {
	if c.uefi() {
		return []string{"-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no"}
	}
	return nil
}

// vmConfig is the machine's VM, its files in dir. UEFI: OVMF's own PXE
// client fetches ipxe.efi over TFTP, as on a real server; BIOS: the NIC's
// iPXE ROM, as QEMU ships it.
func (m *machine) vmConfig(dir string) qemu.Config {
	return qemu.Config{
		Firmware:  m.l.c.fw,
		NetNS:     m.l.ns.Name,
		Tap:       tap,
		MAC:       m.l.c.mac,
		NoROM:     m.l.c.uefi(),
		Disk:      m.disk,
		MemoryMB:  1024,
		Timeout:   bootTimeout,
		Dir:       dir,
		ExtraArgs: firmwareArgs(m.l.c),
	}
}

// power runs one boot: QEMU from power-on until it exits (the OS powers
// off, or the workflow reboots: QEMU runs with -no-reboot), checking the
// milestones in order on the way. It returns the matching lines.
func (m *machine) power(what string, milestones []milestone) []string {
	m.t.Helper()
	m.boots++
	dir := filepath.Join(m.l.results, fmt.Sprintf("boot-%02d-%s", m.boots, what))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		m.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	vm, err := qemu.Start(ctx, m.vmConfig(dir))
	if err != nil {
		m.t.Fatal(err)
	}
	defer vm.Stop()
	begin := time.Now()
	m.t.Logf("boot %d (%s): QEMU pid %d, serial console %s", m.boots, what, vm.PID(), vm.SerialLog)
	var lines []string
	for _, ms := range milestones {
		line, err := vm.WaitFor(ctx, regexp.MustCompile(ms.re))
		if err != nil {
			if ms.hint != "" {
				err = fmt.Errorf("%w (%s)", err, ms.hint)
			}
			m.t.Fatalf("boot %d (%s): milestone %q: %v\nserial console %s, last lines:\n%s", m.boots, what, ms.name, err, vm.SerialLog, vm.Tail(30))
		}
		m.t.Logf("  +%5.1fs %-16s %s", time.Since(begin).Seconds(), ms.name, clip(strings.TrimSpace(line), 110))
		if ms.check != nil {
			if err := ms.check(line); err != nil {
				m.t.Fatalf("boot %d (%s): milestone %q: %v\nserial console %s, last lines:\n%s", m.boots, what, ms.name, err, vm.SerialLog, vm.Tail(30))
			}
		}
		lines = append(lines, line)
	}
	select {
	case <-vm.Done():
	case <-ctx.Done():
		m.t.Fatalf("boot %d (%s): QEMU still running after %v; serial console %s, last lines:\n%s", m.boots, what, bootTimeout, vm.SerialLog, vm.Tail(30))
	}
	if killed, err := vm.Exit(); killed || err != nil {
		m.t.Fatalf("boot %d (%s): QEMU exit: killed by the watchdog %v, error %v; want the guest to power off or reboot\nlast lines:\n%s", m.boots, what, killed, err, vm.Tail(30))
	}
	m.t.Logf("  +%5.1fs %-16s (story at +%.0fs)", time.Since(begin).Seconds(), "qemu exited", time.Since(m.start).Seconds())
	return lines
}

// provision boots the machine while it has the pending run runID: the
// script loads the installer, whose agent runs the workflow; its last
// action reboots the machine (and so ends QEMU). The installer's and the
// agent's console lines are milestones too, loosely matched: their wording
// belongs to agent/pid1 and agent, the run's record (checkRun) is what
// counts.
func (m *machine) provision(runID string) {
	m.t.Helper()
	c := m.l.c
	ms := append(m.firmwareMilestones(),
		milestone{name: "script", re: scriptRE, check: wantScript("booting the installer for " + c.name + " (" + c.mac + ")")},
		milestone{name: "installer kernel", re: `Linux version `},
		milestone{name: "installer", re: `gitmetal installer starting`},
		milestone{name: "agent", re: `runner has a run for this machine`, check: func(line string) error {
			if !strings.Contains(line, "run="+runID) {
				return fmt.Errorf("the agent got another run than %s: %q", runID, strings.TrimSpace(line))
			}
			return nil
		}},
		milestone{name: "image written", re: `action ended.*name=stream-image`},
		milestone{name: "file written", re: `action ended.*name=write-identity`},
		milestone{name: "reboot", re: `reboot: Restarting system`},
	)
	m.power("provision", ms)
}

// bootDisk boots the machine while it has no pending run: the script exits
// to the firmware, which boots the disk; the OS prints its result line and
// powers off. It returns the result.
func (m *machine) bootDisk() diskimage.Result {
	m.t.Helper()
	ms := append(m.firmwareMilestones(),
		milestone{name: "script", re: scriptRE, check: wantScript("booting from the local disk")},
		// OVMF starts its setup menu (UiApp) when no boot option booted:
		// fail at once instead of at the watchdog.
		milestone{
			name: "os init",
			re:   regexp.QuoteMeta(diskimage.ProgressMarker+" init os=") + `|BdsDxe: starting Boot[0-9A-F]+ "UiApp"`,
			check: func(line string) error {
				if strings.Contains(line, "UiApp") {
					return errors.New("OVMF fell through to its setup menu: no boot option booted the disk (" + exitHint + ")")
				}
				return nil
			},
			hint: exitHint,
		},
	)
	if m.l.c.debian {
		ms = append(ms, milestone{name: "systemd", re: `Welcome to .*Debian`,
			hint: "the initramfs switches to /sbin/init on partition 2: look for its FAIL line"})
	}
	ms = append(ms, milestone{name: "os result", re: regexp.QuoteMeta(diskimage.Marker + " os=")})
	result := len(ms) - 1
	if m.l.c.debian {
		// cloud-init says which datasource it used once runcmd is done.
		ms = append(ms, milestone{name: "cloud-init", re: `Cloud-init v\. \S+ finished at .*Datasource`, check: func(line string) error {
			if !strings.Contains(line, "Datasource DataSourceEc2") {
				return fmt.Errorf("cloud-init did not use the EC2 datasource: %q", strings.TrimSpace(line))
			}
			return nil
		}})
	}
	lines := m.power("disk", ms)
	r, err := diskimage.ParseResult(lines[result])
	if err != nil {
		m.t.Fatal(err)
	}
	return r
}

// exitHint says why a UEFI machine may not reach its disk after gitmetal's
// local-disk script.
const exitHint = "on UEFI, the local-disk iPXE script must leave with an error (`exit 1`, not `exit`): " +
	"EDK2's boot manager takes a boot option that returns success as done and shows its menu, " +
	"while an error makes it try the next option, the disk"

// scriptRE matches what either of gitmetal's scripts says on the console.
const scriptRE = `gitmetal: (.*booting from the local disk|booting the installer for )`

// wantScript checks that the script line says want.
func wantScript(want string) func(string) error {
	return func(line string) error {
		if !strings.Contains(line, want) {
			return fmt.Errorf("gitmetal's script says %q, want %q", strings.TrimSpace(line), want)
		}
		return nil
	}
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

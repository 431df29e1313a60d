package netboot

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/boot/dhcp"
	"github.com/gitmetal/gitmetal/test/qemu"
)

// The tests are deliberately not parallel: one VM at a time on two cores.

// TestNetbootBIOS: SeaBIOS runs the virtio NIC's iPXE ROM, whose DHCP
// request already says "iPXE", so gitmetal's DHCP gives it the reserved
// address and the machine's script URL; the script loads the installer
// (the test kernel and initramfs) with the runner's token. No TFTP.
func TestNetbootBIOS(t *testing.T) {
	c := vmCase{name: "netboot-bios", mac: "52:54:00:77:01:10", subnet: 1}
	l := boot(t, c, []milestone{
		{"seabios", `SeaBIOS \(version`},
		{"ipxe rom", `iPXE \(PCI \S+\) starting execution`},
		{"ipxe dhcp", `net0: ` + regexp.QuoteMeta(c.machineIP().String()) + `/255\.255\.255\.0`},
	})
	// The ROM is already iPXE: it never needs TFTP.
	if got := l.tftp.entries(map[string]string{"component": "tftp", "message": "tftp transfer done"}); len(got) != 0 {
		t.Errorf("got TFTP transfers %v, want none: the iPXE ROM must go straight to the HTTP script", got)
	}
	acks := l.dhcpAcks()
	if len(acks) == 0 {
		t.Fatalf("DHCP log has no ACK for %s with %s", c.mac, c.machineIP())
	}
	for _, a := range acks {
		if a != l.scriptURL() {
			t.Errorf("DHCP ACK for %s gave boot %q, want the script URL %s", c.mac, a, l.scriptURL())
		}
	}
}

// TestNetbootUEFI: OVMF without a NIC ROM boots like real UEFI firmware:
// its own PXE gets the reserved address and ipxe.efi (architecture 7)
// from gitmetal's DHCP, fetches it over gitmetal's TFTP, and that iPXE
// asks DHCP again, as iPXE, and gets the script URL.
func TestNetbootUEFI(t *testing.T) {
	c := vmCase{name: "netboot-uefi", mac: "52:54:00:77:02:10", subnet: 2, uefi: true}
	l := boot(t, c, []milestone{
		{"uefi pxe", `>>Start PXE over IPv4`},
		{"uefi pxe dhcp", `Station IP address is ` + regexp.QuoteMeta(c.machineIP().String())},
		{"uefi nbp", `NBP filename is ` + regexp.QuoteMeta(dhcp.DefaultEFIBinary)},
		{"uefi tftp", `NBP file downloaded successfully`},
		{"ipxe.efi", `iPXE initialising devices`},
		{"ipxe dhcp", `net0: ` + regexp.QuoteMeta(c.machineIP().String()) + `/255\.255\.255\.0`},
	})
	// OVMF's PXE first (ipxe.efi over TFTP), then iPXE (the script): no
	// other boot file, such as the UEFI HTTP boot URL OVMF falls back to
	// when TFTP fails.
	acks := l.dhcpAcks()
	want := []string{dhcp.DefaultEFIBinary, l.scriptURL()}
	if got := slices.Compact(slices.Clone(acks)); !slices.Equal(got, want) {
		t.Errorf("DHCP ACKs for %s gave boot files %q, want %q in that order", c.mac, acks, want)
	}
	if got := l.tftp.entries(map[string]string{"component": "tftp", "message": "tftp transfer done", "file": dhcp.DefaultEFIBinary}); len(got) == 0 {
		t.Errorf("TFTP log has no completed transfer of %s", dhcp.DefaultEFIBinary)
	}
}

// milestone is a line the serial console must show, in order.
type milestone struct {
	name, re string
}

// boot builds the lab for c, boots the VM and checks, in order, the
// firmware's milestones, then the ones every case shares: the script,
// the test kernel's init with gitmetal's command line, and the power-off.
// Then it checks the server side: the script and installer requests, the
// script kind, and the token.
func boot(t *testing.T, c vmCase, firmware []milestone) *lab {
	t.Helper()
	requireLab(t, c.uefi)
	img := qemu.TestImage(t, qemu.ImageConfig{})
	l := newLab(t, c, img)
	fw := qemu.BIOS
	if c.uefi {
		fw = qemu.UEFI
	}
	start := time.Now()
	vm := qemu.Run(t, qemu.Config{
		Firmware: fw,
		NetNS:    l.ns.Name,
		Tap:      tap,
		MAC:      c.mac,
		NoROM:    c.uefi,
		Dir:      l.results,
		Timeout:  qemu.DefaultTimeout,
	})
	t.Logf("VM started (QEMU pid %d); logs in %s", vm.PID(), l.results)
	milestones := append(firmware,
		milestone{"ipxe filename", regexp.QuoteMeta("Filename: " + l.scriptURL())},
		milestone{"script", regexp.QuoteMeta(fmt.Sprintf("gitmetal: booting the installer for %s (%s)", c.name, c.mac))},
		milestone{"kernel", `Linux version ` + regexp.QuoteMeta(img.ABI)},
		milestone{"init", regexp.QuoteMeta(img.Marker + " init-start kernel=" + img.ABI)},
		milestone{"cmdline", regexp.QuoteMeta(img.Marker+" cmdline gitmetal.server="+l.base+" gitmetal.token=") +
			`(\S+)` + regexp.QuoteMeta(" gitmetal.mac="+c.mac+" ")},
		milestone{"nic", regexp.QuoteMeta(img.Marker+" nic ") + `\S+` + regexp.QuoteMeta(" mac="+c.mac)},
		milestone{"done", regexp.QuoteMeta(img.Marker + " done")},
	)
	ctx, cancel := context.WithTimeout(context.Background(), qemu.DefaultTimeout)
	defer cancel()
	var token string
	for _, m := range milestones {
		re := regexp.MustCompile(m.re)
		line, err := vm.WaitFor(ctx, re)
		if err != nil {
			// qemu.Run logs the end of the serial console at cleanup.
			t.Fatalf("milestone %q: %v", m.name, err)
		}
		t.Logf("+%5.1fs %-14s %s", time.Since(start).Seconds(), m.name, strings.TrimSpace(line))
		if m.name == "cmdline" {
			token = re.FindStringSubmatch(line)[1]
		}
	}
	// Each milestone matched somewhere; they must also come in order.
	serial := vm.Serial()
	last, lastName := -1, ""
	for _, m := range milestones {
		loc := regexp.MustCompile(m.re).FindStringIndex(serial)
		if loc == nil || loc[0] < last {
			t.Errorf("milestone %q is not after %q in the serial console", m.name, lastName)
			continue
		}
		last, lastName = loc[0], m.name
	}
	select {
	case <-vm.Done():
	case <-ctx.Done():
		t.Fatalf("the VM did not power off after %q", img.Marker+" done")
	}
	if killed, err := vm.Exit(); killed || err != nil {
		t.Errorf("QEMU exit: killed by the watchdog %v, error %v; want a clean power-off", killed, err)
	}
	t.Logf("+%5.1fs powered off", time.Since(start).Seconds())

	// The token on the kernel command line is the runner's, for this
	// machine and its pending run.
	claims, err := l.runner.VerifyToken(token)
	if err != nil {
		t.Errorf("token %q from the kernel command line: %v", token, err)
	} else if claims.Machine != c.name || claims.Run != l.run.ID {
		t.Errorf("token claims: got machine %q run %q, want %q %q", claims.Machine, claims.Run, c.name, l.run.ID)
	}
	// The server side saw the script and both installer files go to the
	// VM's reserved address, whole.
	l.checkHTTP(t)
	if got := l.logs.entries(map[string]string{"component": "ipxe", "message": "ipxe script served",
		"kind": "installer", "hardware": c.name, "mac": c.mac, "revision": revision}); len(got) == 0 {
		t.Errorf("iPXE log has no installer script served to %s (%s) at revision %s", c.name, c.mac, revision)
	}
	t.Logf("router advertisements sent: %d", l.ra.Answered())
	return l
}

// checkHTTP checks the access log: the script once or more, and each
// installer file served whole at least once, all to the machine's address.
func (l *lab) checkHTTP(t *testing.T) {
	t.Helper()
	want := map[string]int64{"/ipxe/" + l.c.mac + "/boot.ipxe": -1}
	for name, size := range l.installerFiles {
		want["/installer/"+name] = size
	}
	for path, size := range want {
		reqs := l.access.Requests(path)
		whole := false
		for _, r := range reqs {
			if r.Remote != l.c.machineIP().String() {
				t.Errorf("GET %s from %s, want only from the VM's %s", path, r.Remote, l.c.machineIP())
			}
			if r.Method == "GET" && r.Status == 200 && (size < 0 || r.Bytes == size) {
				whole = true
			}
		}
		if !whole {
			t.Errorf("GET %s: got %+v, want a 200 with %d bytes", path, reqs, size)
		}
	}
}

// dhcpAcks returns the boot file or URL of each DHCP ACK the server logged
// for the VM with its reserved address, in order.
func (l *lab) dhcpAcks() []string {
	var boots []string
	for _, e := range l.logs.entries(map[string]string{"component": "dhcp", "message": "dhcp request",
		"mac": l.c.mac, "hardware": l.c.name, "reply": "ACK", "yiaddr": l.c.machineIP().String()}) {
		b, _ := e["boot"].(string)
		boots = append(boots, b)
	}
	return boots
}

// Package netboot holds gitmetal's end-to-end netboot tests: a QEMU virtual
// machine (TCG) network-boots through gitmetal's own DHCP, TFTP and boot
// HTTP servers and its real runner, into the test kernel and initramfs of
// test/qemu, whose init prints marker lines on the serial console.
//
//   - TestNetbootBIOS: SeaBIOS with the virtio NIC's iPXE option ROM
//     (ipxe-qemu). That iPXE sends user class "iPXE", so gitmetal's DHCP
//     hands it the machine's HTTP script URL at once.
//   - TestNetbootUEFI: OVMF with the NIC's option ROM removed (romfile=),
//     so OVMF's own PXE does DHCP, fetches ipxe.efi over TFTP, and that
//     iPXE does DHCP again (user class iPXE) and fetches the script.
//
// Each test builds its lab in one network namespace of its own: a bridge
// holding the server's address (10.77.x.1/24), a tap on the bridge for
// QEMU (started inside the namespace with ip netns exec), the DHCP, boot
// HTTP and runner services of this process with their sockets opened
// inside the namespace (netlab), and the TFTP server in a helper process
// started inside it (see tftp_test.go for why). The fleet
// is written as CUE files, loaded with schema's loader and applied to a
// store: one machine with the VM's MAC, a template and a workflow, so the
// runner derives a pending run and answers the iPXE script request with
// the installer and a per-boot token. The installer directory holds the
// test kernel as vmlinuz and the test initramfs as initramfs.cpio.gz, the
// names gitmetal.cue's settings.installer gives.
//
// The tests assert milestones, in order, never durations: the firmware's
// DHCP (and TFTP on UEFI), the script, the test kernel's init with
// gitmetal.server=, gitmetal.token= and gitmetal.mac= on its command line,
// and a clean power-off; and, from the server side, the DHCP reservation
// in the DHCP server's log, ipxe.efi in the TFTP server's (UEFI; none at
// all on BIOS), the script and both installer files in the HTTP access
// log, and a token the runner verifies for this machine's pending run.
// Each boot may take up to qemu.DefaultTimeout (300 s); measured here under
// TCG on a loaded two-core machine, power-on to power-off took 7 to 13 s
// (BIOS) and 18 to 30 s (UEFI).
//
// Design notes and rules:
//   - Nothing leaves the namespace: no default route (the fleet gives no
//     gateway), no NAT, no veth to the host, and DHCP runs on the lab's
//     bridge only.
//   - iPXE waits about 13 s for IPv6 router discovery when nobody answers.
//     The bridge therefore has IPv6 on (a link-local address only, no
//     duplicate address detection, no autoconfiguration from
//     advertisements) and a small responder answers router solicitations
//     with a router advertisement of router lifetime 0: iPXE's IPv6
//     configuration ends at once and nobody gets an IPv6 default route.
//   - One VM at a time: the tests are not parallel (two cores, TCG).
//   - The serial console, QEMU's output and the servers' logs go to a
//     results directory ($GITMETAL_TEST_RESULTS, else
//     /tmp/gitmetal-results), kept and named in the test log when a test
//     fails, removed when it passes.
//   - The tests need root, /dev/net/tun, qemu-system-x86, ipxe-qemu (BIOS),
//     ovmf (UEFI), the iPXE binaries (Debian's ipxe package, or
//     `make ipxe`'s .cache/ipxe/bin) and apt for the test kernel. They skip
//     without them, and fail when CI=true.
//
// The package has no code of its own beyond its tests and must not grow
// any: what a test needs from gitmetal it takes from the real packages
// (boot/dhcp, boot/tftp, boot/ipxe, runner, reconciler/store, schema) as
// cmd/gitmetal wires them, not from copies or mocks.
package netboot

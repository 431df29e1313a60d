// Package e2e is gitmetal's acceptance test: a person's story, end to end,
// with real firmware, run by `make e2e`.
//
// "I commit a machine definition and a workflow to git; the machine
// PXE-boots, gets my OS written to its disk, reboots into it, and the OS
// learns its hostname and user-data from gitmetal. I change the image in a
// PR, `gitmetal plan` tells me one machine will be re-provisioned, I merge,
// it is. It was a mistake: I `git revert`, and it goes back."
//
// TestE2E plays it once per firmware (SeaBIOS with the virtio NIC's iPXE
// ROM; OVMF with its own PXE, no NIC ROM), one VM at a time:
//
//  1. a lab: one network namespace with a bridge holding the server's
//     address, a tap for QEMU, and a router-advertisement responder (iPXE
//     would otherwise wait ~13 s per boot for IPv6); nothing on any host
//     interface, no routes out, no NAT;
//  2. a git repository made from examples/fleet plus one machine with the
//     VM's MAC and address, a template image2disk → writefile → reboot, and
//     a workflow binding them; the OS images (test/e2e/diskimage, v1 and v2)
//     are served by a small HTTP server of the test inside the namespace;
//  3. `gitmetal serve` built with go build and run as a real process inside
//     the namespace (ip netns exec) following that repository: DHCP in
//     reservation mode on the bridge, TFTP, boot HTTP, the metadata service
//     on port 80 of the server's address, the runner, the installer from
//     `make installer`;
//  4. QEMU (TCG) with an empty virtio disk, network first, disk second. Each
//     boot is one QEMU process: QEMU runs with -no-reboot (test/qemu), so the
//     workflow's reboot ends the process and the test powers the machine on
//     again with the same disk — a power cycle, as a person would see it;
//  5. the boots and checks of the story: provision v1 → the OS prints its
//     result line (hostname and user-data from the metadata service, and
//     what writefile wrote) → the run's record at /v1/runs (success, every
//     action with timings) and the journal in the state directory → a boot
//     with no commit boots the disk again, no new run → a commit to v2,
//     which `gitmetal plan` (exit 2) names as re-provisioning this machine
//     → provision v2 → v2's result line → an invalid commit, refused with
//     its file:line by `gitmetal status`, which changes nothing → its fix,
//     and `git revert` of the v2 commit → provision v1 → v1's result line.
//
// A third machine (SeaBIOS) plays the stretch goal once: its image
// is a debootstrapped Debian 12 with systemd and cloud-init
// (diskimage.Config.Debian). Its workflow writes cloud-init's datasource
// configuration (EC2, at gitmetal's metadata service) into the image's
// root file system after image2disk; its user-data is a #cloud-config
// whose runcmd prints the result line from what cloud-init read
// (local-hostname and user-data) and powers off. The boot asserts systemd,
// the result line, and cloud-init's own last line naming the EC2
// datasource.
//
// Every step asserts milestones (lines on the serial console, records in
// the API), never durations; each boot may take up to 300 s. The serial
// console of every boot, the daemon's log, the state directory (with the
// journal) and the repository go to a results directory
// ($GITMETAL_TEST_RESULTS, else /tmp/gitmetal-results), kept and named in
// the test log when the test fails. Without root, /dev/net/tun, QEMU,
// OVMF, the iPXE binaries, the installer or the image tools the test
// fails, saying what is missing: it never passes without having run. It
// runs only when GITMETAL_E2E=1 (`make e2e` sets it), so that `go test
// ./...` does not start a quarter of an hour of VMs; without it, it skips
// and says how to run it.
//
// Knobs (environment):
//
//	GITMETAL_E2E=1             run TestE2E (make e2e sets it)
//	GITMETAL_INSTALLER_DIR     the installer (default installer/ of the module;
//	                           built with go run ./agent/initramfs/build when
//	                           missing, except with CI=true)
//	GITMETAL_E2E_BIN           a gitmetal binary to test instead of building one
//	GITMETAL_TEST_RESULTS      where results directories go (default /tmp/gitmetal-results)
//	GITMETAL_E2E_KEEP=1        keep the results directory of a passing run too
//	GITMETAL_E2E_CACHE         the OS images' cache (default ~/.cache/gitmetal/e2e)
//
// TestDemo (`make demo`, GITMETAL_DEMO=1) builds the same lab with one VM
// (GITMETAL_DEMO_FIRMWARE=uefi for OVMF) and leaves it to a person: the VM
// is powered on again after every power-off or reboot, the test prints the
// commands that show the story (tail the console, gitmetal status, commit
// v2 to the repository, git revert), and it runs until Ctrl-C or
// GITMETAL_DEMO_MINUTES (default 60), then tears everything down.
//
// The package holds no code beyond its tests and the disk image builder
// in diskimage; what the story needs from gitmetal it takes from the
// gitmetal binary and its HTTP API, as a person would. It must not touch
// host interfaces, send traffic outside its namespace, or leave processes,
// namespaces or mounts behind: everything it starts is ended by its PID at
// cleanup.
package e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/test/e2e/diskimage"
	"github.com/gitmetal/gitmetal/test/qemu"
)

// The story's machines, one per firmware, each in a lab of its own.
var cases = []vmCase{
	{name: "e2e-bios", mac: "52:54:00:78:01:10", subnet: 1, fw: qemu.BIOS},
	{name: "e2e-uefi", mac: "52:54:00:78:02:10", subnet: 2, fw: qemu.UEFI},
	// The stretch goal: Debian with cloud-init, installed once.
	{name: "e2e-debian", mac: "52:54:00:78:03:10", subnet: 3, fw: qemu.BIOS, debian: true},
}

// env is what every case shares: built once.
type env struct {
	root, bin, ipxeDir, installerDir string
	v1, v2, debian                   *diskimage.Image
}

// TestE2E plays the story once per firmware; see the package doc. The
// cases run one after the other: one VM at a time on two cores.
func TestE2E(t *testing.T) {
	requireE2E(t)
	start := time.Now()
	e := &env{root: moduleRoot(t)}
	e.ipxeDir = ipxeDir(t, e.root)
	e.installerDir = installerDir(t, e.root)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, v := range []struct {
		img     **diskimage.Image
		version string
		debian  bool
	}{{&e.v1, "v1", false}, {&e.v2, "v2", false}, {&e.debian, "debian", true}} {
		img, err := diskimage.Build(ctx, diskimage.Config{Version: v.version, Debian: v.debian})
		if err != nil {
			t.Fatalf("OS image %s: %v", v.version, err)
		}
		*v.img = img
		t.Logf("OS image %s: %s (%d bytes, %d raw), sha256 %s", v.version, img.Path, img.Size, img.RawSize, img.SHA256)
	}
	e.bin = buildGitmetal(t, e.root)
	t.Logf("set up in %.0fs", time.Since(start).Seconds())
	for _, c := range cases {
		if c.debian {
			t.Run("debian", func(t *testing.T) { debianStory(t, e, c) })
			continue
		}
		t.Run(string(c.fw), func(t *testing.T) { story(t, e, c) })
	}
	t.Logf("whole end-to-end test: %.0fs", time.Since(start).Seconds())
}

// installerDir finds the installer of `make installer`: $GITMETAL_INSTALLER_DIR,
// else installer/ at the top of the module. Without it the test builds one
// (go run ./agent/initramfs/build), except under CI, where `make e2e`
// must have built it.
func installerDir(t *testing.T, root string) string {
	t.Helper()
	dir := os.Getenv("GITMETAL_INSTALLER_DIR")
	if dir == "" {
		dir = filepath.Join(root, "installer")
	}
	if haveInstaller(dir) {
		return dir
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("no installer in %s (vmlinuz and initramfs.cpio.gz): run `make installer` first (`make e2e` does)", dir)
	}
	dir = t.TempDir()
	t.Logf("no installer in %s: building one into %s", filepath.Join(root, "installer"), dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./agent/initramfs/build", "-out", dir)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the installer (go run ./agent/initramfs/build): %v\n%s", err, out)
	}
	if !haveInstaller(dir) {
		t.Fatalf("go run ./agent/initramfs/build made no vmlinuz and initramfs.cpio.gz in %s", dir)
	}
	return dir
}

func haveInstaller(dir string) bool {
	for _, f := range []string{"vmlinuz", "initramfs.cpio.gz"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			return false
		}
	}
	return true
}

// story is the person's story for one machine.
func story(t *testing.T, e *env, c vmCase) {
	results := resultsDir(t)
	l := newLab(t, c, results)
	imgs := newImageServer(t, l, map[string]string{
		"/images/os-v1.img.zst": e.v1.Path,
		"/images/os-v2.img.zst": e.v2.Path,
	})
	ref := func(img *diskimage.Image) imageRef {
		return imageRef{url: imgs.base + "/images/os-" + img.Version + ".img.zst", img: img}
	}
	f := newFleet(t, e.root, results, c, ref(e.v1))
	first := f.repo.Commit("add " + c.name + " and install the e2e OS v1 on it")
	d := startDaemon(t, l, e.bin, daemonConfig{repo: f.repo.Dir, ipxeDir: e.ipxeDir, installerDir: e.installerDir})
	d.waitApplied(first)
	m := newMachine(t, l)
	want := func(version string) diskimage.Result {
		return diskimage.Result{OS: version, Firmware: string(c.fw), IP: c.machineIP().String(),
			Hostname: f.fqdn(), UserData: f.userData, Written: f.written()}
	}
	checkResult := func(got diskimage.Result, version string) {
		t.Helper()
		checkResultLine(t, got, want(version))
	}

	// 1. The first commit: the machine is provisioned with v1 and boots it.
	t.Log("step 1: commit the machine and its workflow; it PXE-boots, installs v1, reboots into it")
	run1 := d.waitPendingRun(c.name, first)
	if s := d.script(c.mac); !strings.Contains(s, "booting the installer") {
		t.Fatalf("with run %s pending, the iPXE script does not load the installer:\n%s", run1.ID, s)
	}
	m.provision(run1.ID)
	checkRun(t, d, run1.ID)
	checkFetched(t, imgs, "/images/os-v1.img.zst", c)
	checkBootMetrics(t, d, c)
	checkResult(m.bootDisk(), "v1")
	journal := filepath.Join(d.stateDir, "runner.db")
	if st, err := os.Stat(journal); err != nil || st.Size() == 0 {
		t.Errorf("the journal %s: %v, want a non-empty file", journal, err)
	}

	// 2. A reboot without a commit boots the disk again.
	t.Log("step 2: reboot without a commit: the disk boots again, no new run")
	before := runIDs(d.runs(c.name))
	checkResult(m.bootDisk(), "v1")
	if after := runIDs(d.runs(c.name)); after != before {
		t.Errorf("a reboot without a commit changed the runs: got %s, want %s", after, before)
	}

	// 3. A commit that changes the image: plan names the machine, and the
	// next boot installs v2.
	t.Log("step 3: change the template's image to v2: plan says re-provision, the machine gets v2")
	f.repo.Write(templateFile, f.templateCUE(ref(e.v2)))
	out, code := plan(t, e.bin, f.repo.Dir)
	if code != 2 || !strings.Contains(out, c.name) || !strings.Contains(out, "re-provision") {
		t.Fatalf("gitmetal plan of the image change: exit %d, want 2 naming %s as re-provisioned:\n%s", code, c.name, out)
	}
	t.Logf("gitmetal plan (exit %d):\n%s", code, indent(out))
	second := f.repo.Commit("install the e2e OS v2")
	if out, code := plan(t, e.bin, f.repo.Dir, first, second); code != 2 || !strings.Contains(out, c.name) {
		t.Errorf("gitmetal plan %s %s: exit %d, want 2 naming %s:\n%s", short(first), short(second), code, c.name, out)
	}
	d.waitApplied(second)
	run2 := d.waitPendingRun(c.name, second)
	if run2.Digest == run1.Digest {
		t.Errorf("run %s for v2 has v1's digest %s", run2.ID, run2.Digest)
	}
	m.provision(run2.ID)
	checkRun(t, d, run2.ID)
	checkFetched(t, imgs, "/images/os-v2.img.zst", c)
	checkResult(m.bootDisk(), "v2")

	// 4. An invalid commit is refused and disturbs nothing.
	t.Log("step 4: an invalid commit is refused with its file:line; nothing changes")
	hw := f.hardwareCUE()
	badLine := lineOf(hw, `arch:     "x86_64"`)
	f.repo.Replace(f.hardwareFile(), `arch:     "x86_64"`, `arch:     "x86"`)
	bad := f.repo.Commit("typo in the arch")
	s := d.waitStatus("the invalid commit attempted", func(s status) bool { return s.AttemptedRevision == bad })
	if s.AppliedRevision != second || len(s.Errors) == 0 || s.Errors[0].File != f.hardwareFile() || s.Errors[0].Line != badLine {
		t.Errorf("status after the invalid commit: got %+v, want %s still applied and an error at %s:%d", s, short(second), f.hardwareFile(), badLine)
	}
	out, code = d.cli("status", "--server", d.api)
	if loc := fmt.Sprintf("%s:%d", f.hardwareFile(), badLine); code != 1 || !strings.Contains(out, loc) || !strings.Contains(out, "REFUSED") {
		t.Errorf("gitmetal status after the invalid commit: exit %d, want 1 naming %s and REFUSED:\n%s", code, loc, out)
	} else {
		t.Logf("gitmetal status (exit %d):\n%s", code, indent(out))
	}
	if s := d.script(c.mac); !strings.Contains(s, "booting from the local disk") || !strings.Contains(s, second) {
		t.Errorf("after the invalid commit the iPXE script is not revision %s's local-disk script:\n%s", short(second), s)
	}

	// 5. The fix, then git revert of the v2 commit: the machine goes back
	// to v1, with exactly v1's rendered workflow.
	t.Log("step 5: fix the typo, then git revert the v2 commit: the machine goes back to v1")
	f.repo.Git("revert", "--no-edit", bad)
	fixed := f.repo.Git("rev-parse", "HEAD")
	d.waitApplied(fixed)
	f.repo.Git("revert", "--no-edit", second)
	reverted := f.repo.Git("rev-parse", "HEAD")
	d.waitApplied(reverted)
	run3 := d.waitPendingRun(c.name, reverted)
	if run3.Digest != run1.Digest {
		t.Errorf("the revert's run %s has digest %s, want v1's %s", run3.ID, run3.Digest, run1.Digest)
	}
	m.provision(run3.ID)
	checkRun(t, d, run3.ID)
	checkResult(m.bootDisk(), "v1")

	// Three runs, all successful: the fix of the typo and the reboots
	// started none.
	runs := d.runs(c.name)
	if got, want := runIDs(runs), strings.Join([]string{run3.ID, run2.ID, run1.ID}, ","); got != want {
		t.Errorf("runs of %s: got %s, want %s (newest first)%s", c.name, got, want, summarizeRuns(runs))
	}
	out, code = d.cli("status", "--server", d.api)
	if code != 0 {
		t.Errorf("gitmetal status at the end: exit %d, want 0:\n%s", code, out)
	}
	t.Logf("gitmetal status at the end:\n%s", indent(out))
	t.Logf("%d boots in %.0fs", m.boots, time.Since(m.start).Seconds())
}

// checkResultLine compares the installed OS's result line with want's.
func checkResultLine(t *testing.T, got, want diskimage.Result) {
	t.Helper()
	if g, w := diskimage.ResultLine(got), diskimage.ResultLine(want); g != w {
		t.Fatalf("the installed OS says\n  %s\nwant\n  %s", g, w)
	}
	t.Logf("the installed OS says: %s", diskimage.ResultLine(got))
}

// debianStory is the stretch goal: the machine installs a debootstrapped
// Debian, whose cloud-init learns its hostname and user-data from
// gitmetal's EC2 metadata service, at the URL the workflow configured.
func debianStory(t *testing.T, e *env, c vmCase) {
	results := resultsDir(t)
	l := newLab(t, c, results)
	const path = "/images/os-debian.img.zst"
	imgs := newImageServer(t, l, map[string]string{path: e.debian.Path})
	f := newFleet(t, e.root, results, c, imageRef{url: imgs.base + path, img: e.debian})
	first := f.repo.Commit("add " + c.name + " and install Debian with cloud-init on it")
	d := startDaemon(t, l, e.bin, daemonConfig{repo: f.repo.Dir, ipxeDir: e.ipxeDir, installerDir: e.installerDir})
	d.waitApplied(first)
	m := newMachine(t, l)
	t.Log("commit the machine and its Debian workflow; it PXE-boots, installs Debian, reboots into it, and cloud-init asks gitmetal")
	run := d.waitPendingRun(c.name, first)
	m.provision(run.ID)
	checkRun(t, d, run.ID)
	checkFetched(t, imgs, path, c)
	// cloud-init's query prints the user-data as it read it; the shell's
	// $(...) drops its last newline.
	checkResultLine(t, m.bootDisk(), diskimage.Result{OS: e.debian.Version, Firmware: string(c.fw), IP: c.machineIP().String(),
		Hostname: f.fqdn(), UserData: strings.TrimRight(f.userData, "\n"), Written: f.written()})
	t.Logf("%d boots in %.0fs", m.boots, time.Since(m.start).Seconds())
}

// checkRun checks a finished run through the API: success, and every
// action successful with its timings.
func checkRun(t *testing.T, d *daemon, id string) {
	t.Helper()
	deadline := time.Now().Add(setupTimeout)
	r := d.run(id)
	// The reboot action is a background one: the agent reports it
	// started, then the machine goes down. The report is on disk before
	// the agent reboots, but poll a little in case of a retried report.
	for !r.State.Final() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		r = d.run(id)
	}
	if r.State != protocol.RunSuccess {
		t.Fatalf("run %s: state %s (%s), want success; actions:%s", id, r.State, r.Message, actionSummary(r))
	}
	names := d.l.c.actions()
	if len(r.Actions) != len(names) {
		t.Fatalf("run %s: %d actions, want %d:%s", id, len(r.Actions), len(names), actionSummary(r))
	}
	for i, a := range r.Actions {
		if a.Step.Name != names[i] || a.State != protocol.ActionSuccess || a.Started.IsZero() || a.Finished.IsZero() || a.Finished.Before(a.Started) {
			t.Errorf("run %s action %d: got %s %s started %v finished %v, want %s success with both times",
				id, i, a.Step.Name, a.State, a.Started, a.Finished, names[i])
		}
	}
	if r.Started.IsZero() || r.Finished.IsZero() {
		t.Errorf("run %s: started %v finished %v, want both", id, r.Started, r.Finished)
	}
	t.Logf("run %s (%s, reason %q): %s in %v:%s", id, short(r.Revision), r.Reason, r.State, time.Duration(r.Elapsed), actionSummary(r))
}

func actionSummary(r *protocol.Run) string {
	var b strings.Builder
	for _, a := range r.Actions {
		fmt.Fprintf(&b, "\n    %-15s %-8s %8v attempt %d %s", a.Step.Name, a.State, time.Duration(a.Elapsed).Round(10*time.Millisecond), a.Attempt, a.Message)
	}
	return b.String()
}

// checkBootMetrics checks that /metrics counts what the boot took: DHCP
// replies sent, the run that succeeded, and under UEFI the TFTP transfer
// of ipxe.efi (SeaBIOS boots the NIC's iPXE ROM, which needs no TFTP).
func checkBootMetrics(t *testing.T, d *daemon, c vmCase) {
	t.Helper()
	var text string
	if err := d.get("/metrics", &text); err != nil {
		t.Fatal(err)
	}
	names := []string{`gitmetal_dhcp_requests_total{result="reply"}`, "gitmetal_dhcp_replies_sent_total", `gitmetal_runs_ended_total{state="success"}`}
	if c.uefi() {
		names = append(names, "gitmetal_tftp_transfers_total")
	}
	for _, name := range names {
		v := ""
		for _, line := range strings.Split(text, "\n") {
			if rest, ok := strings.CutPrefix(line, name+" "); ok {
				v = rest
			}
		}
		if v == "" || v == "0" {
			t.Errorf("/metrics: %s is %q, want more than 0 after a netboot", name, v)
		}
	}
}

// checkFetched checks that the VM, by its reserved address, fetched the
// image whole.
func checkFetched(t *testing.T, imgs *imageServer, path string, c vmCase) {
	t.Helper()
	gets := imgs.access.Requests(path)
	ok := false
	for _, g := range gets {
		if g.Remote != c.machineIP().String() {
			t.Errorf("GET %s from %s, want only the VM's %s", path, g.Remote, c.machineIP())
		}
		if g.Status == 200 && g.Range == "" {
			ok = true
		}
	}
	if !ok {
		t.Errorf("GET %s: got %+v, want a whole 200 to %s", path, gets, c.machineIP())
	}
}

// plan runs gitmetal plan in the repository.
func plan(t *testing.T, bin, repo string, revs ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"plan", "--repo", repo}, revs...)...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("gitmetal plan: %v\n%s", err, out)
	}
	return string(out), 0
}

func runIDs(runs []protocol.Run) string {
	ids := make([]string, len(runs))
	for i, r := range runs {
		ids[i] = r.ID
	}
	return strings.Join(ids, ",")
}

// lineOf is the 1-based line of the first line of s containing sub.
func lineOf(s, sub string) int {
	for i, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return i + 1
		}
	}
	return 0
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

package e2e

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/test/e2e/diskimage"
	"github.com/gitmetal/gitmetal/test/qemu"
)

// TestDemo is `make demo`: the story's lab with one VM that a person
// drives by hand. The VM is powered on again a few seconds after each time
// it powers off or reboots, so every commit to the repository shows on its
// next boot; the test prints the commands to try and runs until Ctrl-C
// (or GITMETAL_DEMO_MINUTES, default 60), then tears the lab down.
// GITMETAL_DEMO_FIRMWARE=uefi boots OVMF instead of SeaBIOS.
func TestDemo(t *testing.T) {
	if os.Getenv("GITMETAL_DEMO") != "1" {
		t.Skip("the demo runs until Ctrl-C: start it with `make demo` (GITMETAL_DEMO=1)")
	}
	requireLab(t)
	minutes := 60
	if s := os.Getenv("GITMETAL_DEMO_MINUTES"); s != "" {
		d, err := time.ParseDuration(s + "m")
		if err != nil || d <= 0 {
			t.Fatalf("GITMETAL_DEMO_MINUTES=%q: want a positive number of minutes", s)
		}
		minutes = int(d.Minutes())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Duration(minutes)*time.Minute)
	defer cancel()

	c := cases[0]
	if os.Getenv("GITMETAL_DEMO_FIRMWARE") == "uefi" {
		c = cases[1]
	}
	root := moduleRoot(t)
	var imgs [2]*diskimage.Image
	for i, v := range []string{"v1", "v2"} {
		img, err := diskimage.Build(ctx, diskimage.Config{Version: v})
		if err != nil {
			t.Fatal(err)
		}
		imgs[i] = img
	}
	bin := buildGitmetal(t, root)
	instDir := installerDir(t, root)

	results, err := os.MkdirTemp("", "gitmetal-demo-")
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, c, results)
	srv := newImageServer(t, l, map[string]string{
		"/images/os-v1.img.zst": imgs[0].Path,
		"/images/os-v2.img.zst": imgs[1].Path,
	})
	v1 := imageRef{url: srv.base + "/images/os-v1.img.zst", img: imgs[0]}
	f := newFleet(t, root, results, c, v1)
	// The person commits with plain git: give the repository an identity.
	f.repo.Git("config", "user.name", "gitmetal demo")
	f.repo.Git("config", "user.email", "demo@gitmetal.invalid")
	first := f.repo.Commit("add " + c.name + " and install the e2e OS v1 on it")
	d := startDaemon(t, l, bin, daemonConfig{repo: f.repo.Dir, ipxeDir: ipxeDir(t, root), installerDir: instDir})
	d.waitApplied(first)
	m := newMachine(t, l)
	console := filepath.Join(results, "console")
	if err := os.MkdirAll(console, 0o755); err != nil {
		t.Fatal(err)
	}

	t.Logf(`
gitmetal demo: %s (%s firmware, MAC %s) in network namespace %s; everything is in %s.
  watch its console:    tail -F %s
  the daemon:           ip netns exec %s %s status --server %s
  the daemon's log:     tail -F %s
  the fleet repository: cd %s
  install v2:           sed -i 's|os-v1.img.zst|os-v2.img.zst|; s|%s|%s|' %s
                        %s plan; git commit -qam 'install v2'
  roll back:            git revert --no-edit HEAD
The VM powers on again a few seconds after each power-off. Ctrl-C ends the demo (in %d minutes at the latest).`,
		c.name, c.fw, c.mac, l.ns.Name, results,
		filepath.Join(console, "serial.log"),
		l.ns.Name, bin, d.api,
		d.log,
		f.repo.Dir,
		imgs[0].SHA256, imgs[1].SHA256, templateFile,
		bin, minutes)

	for boot := 1; ctx.Err() == nil; boot++ {
		m.cycle(ctx, boot, console)
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
	}
	t.Logf("demo over; logs kept in %s", results)
}

// demoLines are the console lines the demo repeats in its own log.
var demoLines = regexp.MustCompile(`gitmetal: (.*booting from the local disk|booting the installer for )|runner has a run for this machine|action ended|` +
	regexp.QuoteMeta(diskimage.Marker+" os="))

// cycle powers the machine on and waits until it powers off or reboots
// (or ctx ends), then logs what its console said.
func (m *machine) cycle(ctx context.Context, boot int, dir string) {
	m.t.Helper()
	m.boots++
	vm, err := qemu.Start(ctx, m.vmConfig(dir))
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Logf("boot %d: powered on (QEMU pid %d)", boot, vm.PID())
	select {
	case <-vm.Done():
	case <-ctx.Done():
		vm.Stop()
	}
	for _, l := range strings.Split(vm.Serial(), "\n") {
		if demoLines.MatchString(l) {
			m.t.Logf("boot %d: %s", boot, clip(strings.TrimSpace(l), 160))
		}
	}
}

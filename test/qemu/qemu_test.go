package qemu

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestArgs(t *testing.T) {
	t.Parallel()
	base := Config{Tap: "tap0", MAC: "52:54:00:00:00:01", NIC: "virtio-net-pci", MemoryMB: 512}
	tests := []struct {
		name   string
		cfg    func(Config) Config
		has    []string
		hasNot []string
	}{
		{"bios rom", func(c Config) Config { c.Firmware = BIOS; return c },
			[]string{"-accel tcg", "-nographic", "-no-reboot", "-serial file:/s.log", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,bootindex=1 ", "-boot order=n"},
			[]string{"pflash", "romfile"}},
		{"uefi norom", func(c Config) Config { c.Firmware = UEFI; c.NoROM = true; return c },
			[]string{"file=" + OVMFCode, "unit=1,file=/vars.fd", "bootindex=1,romfile= "}, nil},
		{"direct kernel", func(c Config) Config {
			c.Tap = ""
			c.Kernel = "/k"
			c.Initrd = "/i"
			c.Append = "console=ttyS0"
			return c
		},
			[]string{"-kernel /k -initrd /i -append console=ttyS0"}, []string{"-netdev", "-boot"}},
		{"disk", func(c Config) Config { c.Disk = "/d.raw"; return c },
			[]string{"file=/d.raw -device virtio-blk-pci,drive=d0,bootindex=2"}, nil},
	}
	for _, tc := range tests {
		got := strings.Join(Args(tc.cfg(base), "/s.log", "/vars.fd"), " ") + " "
		for _, h := range tc.has {
			if !strings.Contains(got, h) {
				t.Errorf("%s: %q lacks %q", tc.name, got, h)
			}
		}
		for _, h := range tc.hasNot {
			if strings.Contains(got, h) {
				t.Errorf("%s: %q has %q", tc.name, got, h)
			}
		}
	}
}

// TestDirectKernelBoot boots the test kernel and initramfs with -kernel
// and -initrd (no firmware, no network) and waits for init's markers and
// the power-off.
func TestDirectKernelBoot(t *testing.T) {
	t.Parallel()
	NeedQEMU(t, false)
	img := TestImage(t, ImageConfig{Script: `m "script-ran"`})
	vm := Run(t, Config{
		Kernel: img.Kernel, Initrd: img.Initrd,
		Append: "console=ttyS0,115200 panic=-1 quiet gitmetal.server=http://10.0.0.1:8080 gitmetal.token=tok-123 gitmetal.mac=52:54:00:12:34:56",
	})
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	lines, err := vm.Milestones(ctx,
		`GITMETAL-TEST init-start kernel=`+regexp.QuoteMeta(img.ABI)+`$`,
		`GITMETAL-TEST cmdline gitmetal.server=http://10.0.0.1:8080 gitmetal.token=tok-123 gitmetal.mac=52:54:00:12:34:56 $`,
		`GITMETAL-TEST no-nic$`,
		`GITMETAL-TEST script-ran$`,
		`GITMETAL-TEST done$`,
	)
	if err != nil {
		t.Fatalf("milestones %q: %v", lines, err)
	}
	select {
	case <-vm.Done():
	case <-ctx.Done():
		t.Fatal("the VM did not power off")
	}
	if killed, err := vm.Exit(); killed || err != nil {
		t.Errorf("got exit (killed %v, %v), want a clean power-off", killed, err)
	}
	// Built again, the same image is the same file.
	if again := TestImage(t, ImageConfig{Script: `m "script-ran"`}); again.Initrd != img.Initrd {
		t.Errorf("rebuild: got %s, want the cached %s", again.Initrd, img.Initrd)
	}
}

// TestWatchdog: a VM with nothing to boot is killed after its Timeout.
func TestWatchdog(t *testing.T) {
	t.Parallel()
	vm := Run(t, Config{DiskSizeMB: 1, Timeout: 5 * time.Second})
	select {
	case <-vm.Done():
	case <-time.After(2 * time.Minute):
		t.Fatal("QEMU still running 2 minutes after a 5 s watchdog")
	}
	killed, _ := vm.Exit()
	if !killed {
		t.Errorf("got killed=false, want the watchdog to have killed QEMU\n%s", vm.Tail(10))
	}
	_, err := vm.WaitFor(context.Background(), regexp.MustCompile("never printed"))
	if !errors.Is(err, ErrExited) && !errors.Is(err, ErrFatal) {
		t.Errorf("WaitFor after the kill: got %v, want ErrExited or ErrFatal", err)
	}
}

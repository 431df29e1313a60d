package actions

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeSystem records the calls that would end the machine. What the
// kernel would have read from the descriptors is read at call time.
type fakeSystem struct {
	mu      sync.Mutex
	kexecs  []kexecCall
	reboots []int
}

type kexecCall struct {
	Kernel, Initrd, Cmdline string
	Flags                   int
}

func (f *fakeSystem) KexecFileLoad(kernelFd, initrdFd int, cmdline string, flags int) error {
	read := func(fd int) string {
		if fd < 0 {
			return "<none>"
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kexecs = append(f.kexecs, kexecCall{read(kernelFd), read(initrdFd), cmdline, flags})
	return nil
}

func (f *fakeSystem) Reboot(cmd int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reboots = append(f.reboots, cmd)
	return nil
}

// newRebootActions returns actions whose kexec and reboot reach the fake
// instead of the kernel. allow sets AllowReboot; the fake is installed
// either way, so a mistake can never reboot the machine running the tests.
func newRebootActions(t testing.TB, allow bool) (*Actions, *fakeSystem) {
	a := newTestActions(t)
	fake := &fakeSystem{}
	a.sys = fake
	a.cfg.AllowReboot = allow
	return a, fake
}

// makeBootfs makes an ext4 image with a kernel and initrd behind links,
// as Debian lays them out.
func makeBootfs(t testing.TB) string {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "boot"), 0o755)
	os.WriteFile(filepath.Join(dir, "boot/vmlinuz-6.1.0-test"), []byte("KERNEL IMAGE"), 0o644)
	os.WriteFile(filepath.Join(dir, "boot/initrd.img-6.1.0-test"), []byte("INITRD IMAGE"), 0o644)
	os.Symlink("boot/vmlinuz-6.1.0-test", filepath.Join(dir, "vmlinuz"))
	os.Symlink("/boot/initrd.img-6.1.0-test", filepath.Join(dir, "initrd.img")) // absolute: resolved inside
	return makeExt4(t, dir)
}

func TestKexec(t *testing.T) {
	t.Parallel()
	needRoot(t)
	img := makeBootfs(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		want kexecCall
	}{
		{"with initrd", map[string]string{"KERNEL_PATH": "/vmlinuz", "INITRD_PATH": "/initrd.img", "CMD_LINE": " root=LABEL=root ro console=ttyS0 "},
			kexecCall{"KERNEL IMAGE", "INITRD IMAGE", "root=LABEL=root ro console=ttyS0", 0}},
		{"without initrd", map[string]string{"KERNEL_PATH": "boot/vmlinuz-6.1.0-test"},
			kexecCall{"KERNEL IMAGE", "<none>", "", kexecNoInitramfs}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: the subtests mount the same image.
			a, fake := newRebootActions(t, true)
			tc.env["BLOCK_DEVICE"], tc.env["FS_TYPE"] = img, "ext4"
			st := step("kexec", tc.env)
			st.Background = true
			if err := a.Run(context.Background(), st, newRecorder(t)); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if diff := cmp.Diff([]kexecCall{tc.want}, fake.kexecs); diff != "" {
				t.Errorf("kexec_file_load calls (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]int{rebootCmdKexec}, fake.reboots); diff != "" {
				t.Errorf("reboot calls (-want +got):\n%s", diff)
			}
			if m := mountedUnder(t, a.cfg.TempDir); len(m) != 0 {
				t.Errorf("still mounted at the reboot: %v", m)
			}
		})
	}

	t.Run("disabled", func(t *testing.T) {
		a, fake := newRebootActions(t, false)
		err := a.Run(context.Background(), step("kexec", map[string]string{
			"BLOCK_DEVICE": img, "FS_TYPE": "ext4", "KERNEL_PATH": "/vmlinuz", "INITRD_PATH": "/initrd.img",
		}), newRecorder(t))
		if !errors.Is(err, ErrRebootDisabled) {
			t.Fatalf("Run: got %v, want ErrRebootDisabled", err)
		}
		if len(fake.kexecs)+len(fake.reboots) != 0 {
			t.Errorf("system calls made while disabled: %+v %v", fake.kexecs, fake.reboots)
		}
		if m := mountedUnder(t, a.cfg.TempDir); len(m) != 0 {
			t.Errorf("still mounted: %v", m)
		}
	})

	t.Run("missing kernel", func(t *testing.T) {
		a, fake := newRebootActions(t, true)
		err := a.Run(context.Background(), step("kexec", map[string]string{
			"BLOCK_DEVICE": img, "FS_TYPE": "ext4", "KERNEL_PATH": "/boot/vmlinuz-9.9",
		}), newRecorder(t))
		t.Logf("error: %v", err)
		if err == nil || !strings.Contains(err.Error(), `env KERNEL_PATH="/boot/vmlinuz-9.9": not found in BLOCK_DEVICE's file system`) {
			t.Fatalf("Run: got %v, want a missing kernel error", err)
		}
		if len(fake.kexecs)+len(fake.reboots) != 0 {
			t.Errorf("system calls made: %+v %v", fake.kexecs, fake.reboots)
		}
	})
}

func TestKexecArguments(t *testing.T) {
	t.Parallel()
	// Path resolution on a plain directory: no root needed.
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	os.WriteFile(filepath.Join(root, "boot/k"), []byte("k"), 0o644)
	os.Symlink("/boot/k", filepath.Join(root, "vmlinuz"))
	os.Symlink("../../../../boot/k", filepath.Join(root, "boot/climb")) // clamped to the root
	os.Symlink("/etc/passwd", filepath.Join(root, "hostfile"))          // resolved inside: missing
	for _, tc := range []struct {
		kernel, initrd string
		want           kexecArgs
		err            string
	}{
		{kernel: "/vmlinuz", want: kexecArgs{kernel: filepath.Join(root, "boot/k"), flags: kexecNoInitramfs}},
		{kernel: "/boot/climb", initrd: "vmlinuz", want: kexecArgs{kernel: filepath.Join(root, "boot/k"), initrd: filepath.Join(root, "boot/k")}},
		{kernel: "/hostfile", err: `env KERNEL_PATH="/hostfile": not found`},
		{kernel: "/boot", err: "not a regular file"},
		{kernel: "/vmlinuz", initrd: "/nope", err: `env INITRD_PATH="/nope": not found`},
	} {
		got, err := kexecArguments(root, tc.kernel, tc.initrd, "")
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("kexecArguments(%q, %q): got %v, want an error containing %q", tc.kernel, tc.initrd, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("kexecArguments(%q, %q): got %+v, %v, want %+v", tc.kernel, tc.initrd, got, err, tc.want)
		}
	}
}

func TestReboot(t *testing.T) {
	t.Parallel()
	a, fake := newRebootActions(t, false)
	if err := a.Run(context.Background(), step("reboot", nil), newRecorder(t)); !errors.Is(err, ErrRebootDisabled) {
		t.Fatalf("Run with AllowReboot false: got %v, want ErrRebootDisabled", err)
	}
	if len(fake.reboots) != 0 {
		t.Fatalf("reboot called while disabled: %v", fake.reboots)
	}
	a, fake = newRebootActions(t, true)
	if err := a.Run(context.Background(), step("reboot", nil), newRecorder(t)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if diff := cmp.Diff([]int{rebootCmdRestart}, fake.reboots); diff != "" {
		t.Errorf("reboot calls (-want +got):\n%s", diff)
	}
}

package diskimage

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gitmetal/gitmetal/test/qemu"
)

// need skips the test with why, or fails it when CI=true.
func need(t *testing.T, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing (CI=true): %s", why)
	}
	t.Skipf("prerequisite missing: %s", why)
}

func TestResultLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		r    Result
		line string
	}{
		{"ok", Result{OS: "v1", Firmware: "bios", IP: "10.1.2.3", Hostname: "h-1", UserData: "ud x", Written: "name=h-1 mac=52:54:00:00:00:01"},
			"GITMETAL-E2E os=v1 firmware=bios ip=10.1.2.3 hostname=h-1 userdata=ud x written=name=h-1 mac=52:54:00:00:00:01"},
		{"newlines", Result{OS: "v2", Firmware: "uefi", IP: "10.1.2.3", Hostname: "h", UserData: "a\nb", Written: "c"},
			"GITMETAL-E2E os=v2 firmware=uefi ip=10.1.2.3 hostname=h userdata=a|b written=c"},
		{"fail", Result{OS: "v1", Fail: "no NIC"}, "GITMETAL-E2E os=v1 FAIL no NIC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := ResultLine(tc.r); got != tc.line {
				t.Errorf("ResultLine: got %q, want %q", got, tc.line)
			}
			got, err := ParseResult("[ 1.0] noise " + tc.line)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.r
			want.UserData = strings.ReplaceAll(want.UserData, "\n", "|")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ParseResult (-want +got):\n%s", diff)
			}
		})
	}
	for _, bad := range []string{"", "GITMETAL-E2E-OS init os=v1", "GITMETAL-E2E os=v1 firmware=bios"} {
		if _, err := ParseResult(bad); err == nil {
			t.Errorf("ParseResult(%q): got nil error, want one", bad)
		}
	}
}

func TestBuildRejectsBadVersion(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"", "v 1", "v1;rm", strings.Repeat("v", 33)} {
		if _, err := Build(context.Background(), Config{Version: v, CacheDir: t.TempDir()}); err == nil {
			t.Errorf("Build(version %q): got nil error, want one", v)
		}
	}
}

// buildImage builds version into a cache shared by the tests of one run.
func buildImage(t *testing.T, version string) *Image {
	t.Helper()
	need(t, len(Missing()) == 0, "missing "+strings.Join(Missing(), ", "))
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg"} {
		_, err := exec.LookPath(tool)
		need(t, err == nil, tool+" not found: the kernel comes from Debian packages")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	img, err := Build(ctx, Config{Version: version})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestBuild checks the layout of a built image with the tools that made
// it, reading the file only: the partition table, the FAT's files, the
// ext4 data partition, the boot code, and the digest.
func TestBuild(t *testing.T) {
	img := buildImage(t, "v1")
	raw := img.RawPath()
	st, err := os.Stat(raw)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != img.RawSize {
		t.Errorf("raw image: got %d bytes, want %d", st.Size(), img.RawSize)
	}
	if got, err := sha256File(img.Path); err != nil || got != img.SHA256 {
		t.Errorf("sha256 of %s: got %s (%v), want %s", img.Path, got, err, img.SHA256)
	}
	if img.RawSize > 64<<20 {
		t.Errorf("raw image: got %d bytes, want at most 64 MiB (TCG must stay fast)", img.RawSize)
	}

	out, err := exec.Command("sfdisk", "--dump", raw).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk --dump: %v\n%s", err, out)
	}
	dump := string(out)
	for _, want := range []string{
		"label: dos",
		raw + "1 : start=        2048, size=       81920, type=ef, bootable",
		raw + "2 : start=       83968, size=       16384, type=83",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("partition table: want %q in\n%s", want, dump)
		}
	}

	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	mbr, err := os.ReadFile(syslinuxMBR)
	if err != nil {
		t.Fatal(err)
	}
	if n := min(len(mbr), 440); !bytes.Equal(b[:n], mbr[:n]) {
		t.Error("the first 440 bytes are not syslinux's mbr.bin")
	}
	if b[510] != 0x55 || b[511] != 0xaa {
		t.Errorf("MBR signature: got %x %x, want 55 aa", b[510], b[511])
	}
	if vbr := b[bootStartMiB*mib:]; !bytes.Contains(vbr[:512], []byte("SYSLINUX")) {
		t.Error("the FAT partition's boot sector is not syslinux's")
	}

	cmd := exec.Command("mdir", "-a", "-b", "-/", "-i", raw+"@@"+strconv.Itoa(bootStartMiB*mib), "::")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mdir: %v\n%s", err, out)
	}
	for _, want := range []string{"::/vmlinuz", "::/initrd.img", "::/syslinux/syslinux.cfg", "::/syslinux/ldlinux.sys", "::/syslinux/ldlinux.c32", "::/EFI/BOOT/BOOTX64.EFI"} {
		if !strings.Contains(strings.ToLower(string(out)), strings.ToLower(want)) {
			t.Errorf("FAT partition: no %s in\n%s", want, out)
		}
	}

	if _, err := exec.LookPath("debugfs"); err == nil {
		dataAt := strconv.Itoa((bootStartMiB + bootSizeMiB) * mib)
		out, err := exec.Command("debugfs", "-R", "cat /README", raw+"?offset="+dataAt).CombinedOutput()
		if err != nil || !strings.Contains(string(out), WrittenPath) {
			t.Errorf("data partition's /README through debugfs: %v\n%s", err, out)
		}
		out, err = exec.Command("dumpe2fs", "-h", raw+"?offset="+dataAt).CombinedOutput()
		if err != nil || !regexp.MustCompile(`Filesystem volume name:\s+`+DataLabel).Match(out) {
			t.Errorf("data partition label: want %s: %v\n%s", DataLabel, err, out)
		}
	}

	// A second build finds the first in the cache.
	again := buildImage(t, "v1")
	if diff := cmp.Diff(img, again); diff != "" {
		t.Errorf("second build (-first +second):\n%s", diff)
	}
	// Another version is another image.
	v2 := buildImage(t, "v2")
	if v2.SHA256 == img.SHA256 || v2.Path == img.Path {
		t.Errorf("v2 %s (%s) is v1's image", v2.Path, v2.SHA256)
	}
}

// TestBoot boots the image straight from the disk, with no NIC, under each
// firmware: the boot loader of that firmware starts the OS, which says so
// and then fails for want of a network, as it should.
func TestBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs under TCG (-short)")
	}
	img := buildImage(t, "v1")
	for _, fw := range []qemu.Firmware{qemu.BIOS, qemu.UEFI} {
		t.Run(string(fw), func(t *testing.T) {
			qemu.NeedQEMU(t, fw == qemu.UEFI)
			dir := t.TempDir()
			disk := filepath.Join(dir, "disk.img")
			b, err := os.ReadFile(img.RawPath())
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(disk, b, 0o644); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			vm := qemu.Run(t, qemu.Config{Firmware: fw, Disk: disk, Dir: dir, MemoryMB: 512})
			ctx, cancel := context.WithTimeout(context.Background(), qemu.DefaultTimeout)
			defer cancel()
			lines, err := vm.Milestones(ctx,
				regexp.QuoteMeta(ProgressMarker+" init os=v1 firmware="+string(fw)+" kernel="+img.ABI),
				regexp.QuoteMeta(Marker+" os=v1 "))
			if err != nil {
				t.Fatalf("%v\nserial console:\n%s", err, vm.Tail(30))
			}
			r, err := ParseResult(lines[1])
			if err != nil {
				t.Fatal(err)
			}
			if want := (Result{OS: "v1", Fail: "no NIC"}); r != want {
				t.Errorf("result: got %+v, want %+v", r, want)
			}
			<-vm.Done()
			t.Logf("%s: power-on to result line and power-off in %.1fs", fw, time.Since(start).Seconds())
		})
	}
}

func TestMirrorOf(t *testing.T) {
	t.Parallel()
	deb822 := `Types: deb
# a comment: with a colon
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
`
	for _, tc := range []struct {
		name    string
		sources []aptSource
		want    string
	}{
		{"deb822", []aptSource{{deb822: true, text: deb822}}, "http://mirror.example/debian"},
		{"deb822 security only", []aptSource{{deb822: true, text: "Types: deb\nURIs: http://s.example/debian-security\nSuites: bookworm-security\n"}}, defaultMirror},
		{"deb822 disabled", []aptSource{{deb822: true, text: "Enabled: no\n" + deb822}}, defaultMirror},
		{"deb-src only", []aptSource{{deb822: true, text: "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n"}}, defaultMirror},
		{"one line", []aptSource{{text: "# deb http://old.example/debian bookworm main\ndeb http://one.example/debian bookworm main contrib\n"}}, "http://one.example/debian"},
		{"one line with options", []aptSource{{text: "deb [arch=amd64 signed-by=/k.gpg] https://opt.example/debian bookworm main\n"}}, "https://opt.example/debian"},
		{"other suite", []aptSource{{text: "deb http://one.example/debian trixie main\n"}}, defaultMirror},
		{"file order", []aptSource{{text: "deb cdrom:[x]/ bookworm main\n"}, {deb822: true, text: deb822}}, "http://mirror.example/debian"},
		{"nothing", nil, defaultMirror},
	} {
		if got := mirrorOf(tc.sources); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

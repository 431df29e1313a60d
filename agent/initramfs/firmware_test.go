package initramfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitmetal/gitmetal/test/gittest"
)

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFirmwareFromDirAndDeb takes firmware from a directory and from a
// .deb built with dpkg-deb (Debian 12's lib/firmware and the /usr-merged
// usr/lib/firmware layouts), with symlinks.
func TestFirmwareFromDirAndDeb(t *testing.T) {
	t.Parallel()
	dpkgDeb := gittest.NeedTool(t, "dpkg-deb")
	gittest.NeedTool(t, "dpkg")
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "fw")
	writeTree(t, dir, map[string]string{
		"bnx2x/bnx2x-e2-7.13.21.0.fw": "E2 firmware",
		"bnx2x/current.fw":            "->bnx2x-e2-7.13.21.0.fw",
	})
	pkg := filepath.Join(tmp, "pkg")
	writeTree(t, pkg, map[string]string{
		"DEBIAN/control":                         "Package: firmware-test\nVersion: 1.0\nArchitecture: all\nMaintainer: gitmetal tests <t@example.com>\nDescription: test firmware\n",
		"usr/lib/firmware/intel/ice/ddp/ice.pkg": "ICE DDP",
		"usr/lib/firmware/ice.pkg":               "->/usr/lib/firmware/intel/ice/ddp/ice.pkg",
		// The same file as the directory's: not a conflict.
		"usr/lib/firmware/bnx2x/bnx2x-e2-7.13.21.0.fw": "E2 firmware",
	})
	deb := filepath.Join(tmp, "firmware-test_1.0_all.deb")
	if out, err := exec.Command(dpkgDeb, "--build", "--root-owner-group", pkg, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, out)
	}
	got, err := firmwareFiles(context.Background(), filepath.Join(tmp, "cache"), []string{dir, deb})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"bnx2x":                       "dir",
		"bnx2x/bnx2x-e2-7.13.21.0.fw": "E2 firmware",
		"bnx2x/current.fw":            "-> bnx2x-e2-7.13.21.0.fw",
		"intel":                       "dir",
		"intel/ice":                   "dir",
		"intel/ice/ddp":               "dir",
		"intel/ice/ddp/ice.pkg":       "ICE DDP",
		"ice.pkg":                     "-> /lib/firmware/intel/ice/ddp/ice.pkg",
	}
	for name, w := range want {
		f, ok := got[name]
		if !ok {
			t.Errorf("%s: missing", name)
			continue
		}
		var g string
		switch f.Mode & modeType {
		case ModeDir:
			g = "dir"
		case ModeSymlink:
			g = "-> " + string(f.Data)
		default:
			g = string(f.Data)
		}
		if g != w {
			t.Errorf("%s: got %q, want %q", name, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d entries, want %d: %v", len(got), len(want), got)
	}

	// Conflicting files, empty sources and missing paths are errors.
	other := filepath.Join(tmp, "other")
	writeTree(t, other, map[string]string{"bnx2x/bnx2x-e2-7.13.21.0.fw": "another E2 firmware"})
	empty := filepath.Join(tmp, "empty")
	os.MkdirAll(empty, 0o755)
	for name, entries := range map[string][]string{
		"conflict": {dir, other},
		"empty":    {empty},
		"missing":  {filepath.Join(tmp, "nosuch")},
		"bad deb":  {filepath.Join(tmp, "nosuch.deb")},
	} {
		if _, err := firmwareFiles(context.Background(), filepath.Join(tmp, "cache"), entries); err == nil {
			t.Errorf("%s: got no error", name)
		}
	}
}

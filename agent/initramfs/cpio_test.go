package initramfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gitmetal/gitmetal/test/gittest"
)

// TestCPIOUnpacks writes an archive and unpacks it with busybox cpio.
func TestCPIOUnpacks(t *testing.T) {
	t.Parallel()
	bb := gittest.NeedTool(t, "busybox")
	files := []File{
		{Name: "bin", Mode: ModeDir | 0o755},
		{Name: "bin/tool", Mode: ModeFile | 0o755, Data: []byte("#!/bin/sh\necho hi\n")},
		{Name: "bin/link", Mode: ModeSymlink | 0o777, Data: []byte("tool")},
		{Name: "etc", Mode: ModeDir | 0o755},
		{Name: "etc/odd-size", Mode: ModeFile | 0o644, Data: bytes.Repeat([]byte{7}, 4099)},
		{Name: "empty", Mode: ModeFile | 0o600},
	}
	var a, b bytes.Buffer
	if err := WriteCPIO(&a, files); err != nil {
		t.Fatal(err)
	}
	rev := slices.Clone(files)
	slices.Reverse(rev)
	if err := WriteCPIO(&b, rev); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("the same files in another order gave another archive")
	}
	if a.Len()%4 != 0 {
		t.Errorf("got an archive of %d bytes, want a multiple of 4", a.Len())
	}
	dir := t.TempDir()
	cmd := exec.Command(bb, "cpio", "-i", "-d")
	cmd.Dir = dir
	cmd.Stdin = &a
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busybox cpio -i: %v\n%s", err, out)
	}
	for _, f := range files {
		p := filepath.Join(dir, f.Name)
		st, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", f.Name, err)
			continue
		}
		switch f.Mode & modeType {
		case ModeSymlink:
			target, err := os.Readlink(p)
			if err != nil || target != string(f.Data) {
				t.Errorf("%s: got link to %q (%v), want %q", f.Name, target, err, f.Data)
			}
			continue
		case ModeFile:
			got, _ := os.ReadFile(p)
			if !bytes.Equal(got, f.Data) {
				t.Errorf("%s: got %d bytes, want %d", f.Name, len(got), len(f.Data))
			}
		}
		if got, want := uint32(st.Mode().Perm()), f.Mode&0o777; got != want {
			t.Errorf("%s: got mode %o, want %o", f.Name, got, want)
		}
	}
}

func TestCPIORejects(t *testing.T) {
	t.Parallel()
	for name, files := range map[string][]File{
		"absolute":  {{Name: "/etc", Mode: ModeDir | 0o755}},
		"empty":     {{Name: "", Mode: ModeFile}},
		"twice":     {{Name: "a", Mode: ModeFile}, {Name: "a", Mode: ModeFile}},
		"no type":   {{Name: "a", Mode: 0o644}},
		"nul byte":  {{Name: "a\x00b", Mode: ModeFile}},
		"ok before": {{Name: "a", Mode: ModeFile}, {Name: "/b", Mode: ModeFile}},
	} {
		if err := WriteCPIO(&bytes.Buffer{}, files); err == nil {
			t.Errorf("%s: got no error", name)
		}
	}
}

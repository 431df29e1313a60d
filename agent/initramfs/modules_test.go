package initramfs

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func TestModuleOrder(t *testing.T) {
	t.Parallel()
	info := map[string]modinfo{
		"virtio_net":   {depends: []string{"net_failover", "virtio", "virtio_ring"}},
		"net_failover": {depends: []string{"failover"}},
		"virtio_pci":   {depends: []string{"virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio", "virtio_ring"}},
		"ext4":         {depends: []string{"mbcache", "jbd2"}, pre: []string{"crc32c"}},
		"jbd2":         {depends: []string{"crc16"}},
		"loop_a":       {depends: []string{"loop_b"}},
		"loop_b":       {depends: []string{"loop_a"}},
		"soft_a":       {pre: []string{"soft_b"}, post: []string{"e1000"}},
		"soft_b":       {pre: []string{"soft_a"}, post: []string{"nosuch_soft"}},
	}
	paths := map[string]string{}
	for _, n := range []string{"virtio_net", "net_failover", "failover", "virtio_pci", "virtio_pci_legacy_dev",
		"virtio_pci_modern_dev", "e1000", "loop_a", "loop_b", "ext4", "mbcache", "jbd2", "crc16",
		"crc32c_generic", "crc32c_intel", "soft_a", "soft_b"} {
		paths[n] = "kernel/" + n + ".ko"
	}
	paths["zstd_mod"] = "kernel/zstd_mod.ko.zst"
	builtin := map[string]bool{"virtio": true, "virtio_ring": true}
	aliasCalls := 0
	newResolver := func() *resolver {
		return &resolver{
			paths:   paths,
			builtin: builtin,
			info:    func(n string) (modinfo, error) { return info[n], nil },
			aliases: func() (map[string][]string, error) {
				aliasCalls++
				return map[string][]string{"crc32c": {"crc32c_generic", "crc32c_intel"}, "crypto-*": {"crc32c_generic"}}, nil
			},
		}
	}
	tests := []struct {
		name  string
		names []string
		want  []Module
	}{
		{"hard dependencies first, built-ins left out", []string{"virtio_pci", "virtio-net", "e1000"}, []Module{
			{Name: "virtio_pci_legacy_dev", Path: "kernel/virtio_pci_legacy_dev.ko"},
			{Name: "virtio_pci_modern_dev", Path: "kernel/virtio_pci_modern_dev.ko"},
			{Name: "virtio_pci", Path: "kernel/virtio_pci.ko", Depends: []string{"virtio_pci_legacy_dev", "virtio_pci_modern_dev"}},
			{Name: "failover", Path: "kernel/failover.ko"},
			{Name: "net_failover", Path: "kernel/net_failover.ko", Depends: []string{"failover"}},
			{Name: "virtio_net", Path: "kernel/virtio_net.ko", Depends: []string{"net_failover"}},
			{Name: "e1000", Path: "kernel/e1000.ko"},
		}},
		{"a soft dependency by alias loads every provider first", []string{"ext4"}, []Module{
			{Name: "crc32c_generic", Path: "kernel/crc32c_generic.ko"},
			{Name: "crc32c_intel", Path: "kernel/crc32c_intel.ko"},
			{Name: "mbcache", Path: "kernel/mbcache.ko"},
			{Name: "crc16", Path: "kernel/crc16.ko"},
			{Name: "jbd2", Path: "kernel/jbd2.ko", Depends: []string{"crc16"}},
			{Name: "ext4", Path: "kernel/ext4.ko", Depends: []string{"mbcache", "jbd2"}},
		}},
		{"soft loops and missing soft dependencies are tolerated, post after", []string{"soft_a"}, []Module{
			{Name: "soft_b", Path: "kernel/soft_b.ko"},
			{Name: "soft_a", Path: "kernel/soft_a.ko"},
			{Name: "e1000", Path: "kernel/e1000.ko"},
		}},
	}
	for _, tc := range tests {
		got, err := newResolver().order(tc.names)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: module order (-want +got):\n%s", tc.name, diff)
		}
	}
	for _, names := range [][]string{{"nosuch"}, {"loop_a"}, {"virtio_net", "nosuch"}} {
		if _, err := newResolver().order(names); err == nil {
			t.Errorf("%v: got no error", names)
		}
	}
	// The alias table is read only when a soft dependency needs it.
	aliasCalls = 0
	if _, err := newResolver().order([]string{"virtio_net"}); err != nil || aliasCalls != 0 {
		t.Errorf("virtio_net: got %d alias scans (%v), want 0", aliasCalls, err)
	}
}

func TestParseModinfo(t *testing.T) {
	t.Parallel()
	raw := []byte("license=GPL\x00depends=mbcache,jbd2,\x00softdep=pre: crc32c post: foo bar\x00alias=fs-ext4\x00alias=ext3\x00name=ext4\x00")
	got := parseModinfo(raw)
	want := modinfo{depends: []string{"mbcache", "jbd2"}, pre: []string{"crc32c"}, post: []string{"foo", "bar"}, aliases: []string{"fs-ext4", "ext3"}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(modinfo{})); diff != "" {
		t.Errorf("parseModinfo (-want +got):\n%s", diff)
	}
	if got := parseModinfo([]byte("depends=\x00")); len(got.depends) != 0 {
		t.Errorf("empty depends: got %q, want none", got.depends)
	}
}

func TestModuleName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"kernel/drivers/net/virtio_net.ko":      "virtio_net",
		"kernel/drivers/net/virtio_net.ko.xz":   "virtio_net",
		"kernel/fs/nls/nls_iso8859-1.ko.zst":    "nls_iso8859_1",
		"kernel/drivers/scsi/sd_mod.ko.gz":      "sd_mod",
		"kernel/drivers/net/ethernet/igb.ko":    "igb",
		"drivers/net/ethernet/intel/ice/ice.ko": "ice",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q): got %q, want %q", in, got, want)
		}
	}
}

// TestReadModuleCompressed: every compression Debian has used for modules
// gives back the same bytes.
func TestReadModuleCompressed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plain := append([]byte("\x7fELF fake module "), bytes.Repeat([]byte("signed payload "), 1000)...)
	write := func(name string, compress func(*bytes.Buffer) error) {
		var b bytes.Buffer
		if err := compress(&b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("m.ko", func(b *bytes.Buffer) error { _, err := b.Write(plain); return err })
	write("m.ko.gz", func(b *bytes.Buffer) error {
		w := gzip.NewWriter(b)
		w.Write(plain)
		return w.Close()
	})
	write("m.ko.xz", func(b *bytes.Buffer) error {
		w, err := xz.NewWriter(b)
		if err != nil {
			return err
		}
		w.Write(plain)
		return w.Close()
	})
	write("m.ko.zst", func(b *bytes.Buffer) error {
		w, err := zstd.NewWriter(b)
		if err != nil {
			return err
		}
		w.Write(plain)
		return w.Close()
	})
	write("bad.ko.xz", func(b *bytes.Buffer) error { _, err := b.WriteString("not xz"); return err })
	for _, name := range []string{"m.ko", "m.ko.gz", "m.ko.xz", "m.ko.zst"} {
		got, err := ReadModule(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, plain) {
			t.Errorf("%s: got %d bytes, want the %d original ones", name, len(got), len(plain))
		}
	}
	if _, err := ReadModule(filepath.Join(dir, "bad.ko.xz")); err == nil {
		t.Error("bad.ko.xz: got no error")
	}
}

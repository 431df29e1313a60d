package pid1

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSettleDisks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "vda"), 0o755)
	os.Mkdir(filepath.Join(dir, "loop0"), 0o755)
	go func() {
		time.Sleep(200 * time.Millisecond)
		os.Mkdir(filepath.Join(dir, "sda"), 0o755)
	}()
	got := settleDisks(dir, 500*time.Millisecond, 10*time.Second)
	if want := []string{"sda", "vda"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (a disk that appears while settling, loop devices left out)", got, want)
	}
	start := time.Now()
	settleDisks(t.TempDir(), time.Hour, 300*time.Millisecond)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("limit 300ms: returned after %v", d)
	}
}

func TestLinkDisks(t *testing.T) {
	t.Parallel()
	sys := t.TempDir()
	write := func(p, s string) {
		os.MkdirAll(filepath.Dir(filepath.Join(sys, p)), 0o755)
		os.WriteFile(filepath.Join(sys, p), []byte(s), 0o644)
	}
	write("vda/serial", "gitmetal-lab\n")
	write("vdb/size", "2048\n") // no serial: no link
	write("nvme0n1/device/model", "QEMU NVMe Ctrl                          \n")
	write("nvme0n1/device/serial", "deadbeef            \n")
	write("nvme0n1/wwid", "nvme.1b36-6465616462656566-51454d55204e564d65204374726c-00000001\n")
	write("vdc/serial", "bad/serial\n") // not a link name
	byID := filepath.Join(t.TempDir(), "disk", "by-id")
	linkDisks(sys, byID, []string{"vda", "vdb", "vdc", "nvme0n1"})
	got := map[string]string{}
	entries, _ := os.ReadDir(byID)
	for _, e := range entries {
		target, _ := os.Readlink(filepath.Join(byID, e.Name()))
		got[e.Name()] = target
	}
	want := map[string]string{
		"virtio-gitmetal-lab":          "../../vda",
		"nvme-QEMU_NVMe_Ctrl_deadbeef": "../../nvme0n1",
		"nvme-nvme.1b36-6465616462656566-51454d55204e564d65204374726c-00000001": "../../nvme0n1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("links (-want +got):\n%s", diff)
	}
}

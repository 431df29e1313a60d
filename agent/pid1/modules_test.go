package pid1

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadModuleOrder(t *testing.T) {
	t.Parallel()
	got, err := ReadModuleOrder(strings.NewReader("# comment\n\nfailover.ko\nnet_failover.ko failover\n  virtio_net.ko net_failover  \n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []OrderEntry{
		{Name: "failover", Depends: []string{}},
		{Name: "net_failover", Depends: []string{"failover"}},
		{Name: "virtio_net", Depends: []string{"net_failover"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, bad := range []string{"virtio_net\n", "../x.ko\n", "a/b.ko\n", ".ko\n"} {
		if _, err := ReadModuleOrder(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: got no error", bad)
		}
	}
}

// TestLoadModulesSkipsDependents: a module that cannot be loaded keeps the
// modules that need it from being tried, and the rest go on. The module
// files do not exist, so nothing reaches the kernel.
func TestLoadModulesSkipsDependents(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	order := filepath.Join(dir, "gitmetal.order")
	os.WriteFile(order, []byte("a.ko\nb.ko a\nc.ko b\nd.ko\n"), 0o644)
	res, err := loadModules(dir, order)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range res.failed {
		got = append(got, e.Error())
	}
	want := []string{
		"module a: no such file or directory",
		"module b: needs a, which did not load",
		"module c: needs b, which did not load",
		"module d: no such file or directory",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("failures (-want +got):\n%s", diff)
	}
	if res.loaded != 0 || len(res.absent) != 0 {
		t.Errorf("got %d loaded and %v absent, want none", res.loaded, res.absent)
	}
	if _, err := loadModules(dir, filepath.Join(dir, "nosuch")); err == nil {
		t.Error("missing order file: got no error")
	}
}

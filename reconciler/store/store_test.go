package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-memdb"

	"github.com/gitmetal/gitmetal/schema"
)

// iface returns an interface with the given MAC, address and hostname; ip
// and hostname may be empty.
func iface(mac, ip, hostname string) schema.Interface {
	return schema.Interface{MAC: mac, IP: ip, Hostname: hostname, Arch: "x86_64"}
}

func machine(name string, ifaces ...schema.Interface) *schema.Hardware {
	return &schema.Hardware{Name: name, Interfaces: ifaces}
}

func template(name string) *schema.Template {
	return &schema.Template{Name: name, Actions: []schema.Action{{Step: schema.Step{Name: "write", Uses: "image2disk"}}}}
}

func workflow(name, hardware string) *schema.Workflow {
	return &schema.Workflow{Name: name, Hardware: hardware, Template: "install", Policy: schema.PolicyOnChange}
}

// fleet returns a fleet of objs: *schema.Hardware, *schema.Template,
// *schema.Workflow and *schema.Settings.
func fleet(objs ...any) *schema.Fleet {
	f := &schema.Fleet{
		Hardware:  map[string]*schema.Hardware{},
		Templates: map[string]*schema.Template{},
		Workflows: map[string]*schema.Workflow{},
	}
	return with(f, objs...)
}

// with returns a new fleet holding f's objects (the same pointers, as the
// loader shares unchanged objects) with objs added or replacing the objects
// of the same name.
func with(f *schema.Fleet, objs ...any) *schema.Fleet {
	g := &schema.Fleet{
		Settings:  f.Settings,
		Hardware:  maps.Clone(f.Hardware),
		Templates: maps.Clone(f.Templates),
		Workflows: maps.Clone(f.Workflows),
	}
	for _, o := range objs {
		switch o := o.(type) {
		case *schema.Hardware:
			g.Hardware[o.Name] = o
		case *schema.Template:
			g.Templates[o.Name] = o
		case *schema.Workflow:
			g.Workflows[o.Name] = o
		case *schema.Settings:
			g.Settings = o
		default:
			panic(fmt.Sprintf("fleet: unexpected %T", o))
		}
	}
	return g
}

// without returns a new fleet holding f's objects except the hardware and
// workflows named.
func without(f *schema.Fleet, hardware, workflows []string) *schema.Fleet {
	g := with(f)
	for _, n := range hardware {
		delete(g.Hardware, n)
	}
	for _, n := range workflows {
		delete(g.Workflows, n)
	}
	return g
}

// replaced returns a copy of h, a new pointer with the same content.
func replaced(h *schema.Hardware) *schema.Hardware {
	c := *h
	return &c
}

func apply(t testing.TB, s *Store, rev string, f *schema.Fleet) ApplyResult {
	t.Helper()
	res, err := s.Apply(rev, f)
	if err != nil {
		t.Fatalf("Apply(%q): %v", rev, err)
	}
	return res
}

// fired reports whether a channel of ws is closed. Apply closes channels
// before it returns, so there is nothing to wait for.
func fired(ws memdb.WatchSet) bool {
	for ch := range ws {
		select {
		case <-ch:
			return true
		default:
		}
	}
	return false
}

func names[T any](objs []*T, name func(*T) string) []string {
	out := []string{}
	for _, o := range objs {
		out = append(out, name(o))
	}
	return out
}

// reader is what Store and Snapshot both offer.
type reader interface {
	HardwareByName(memdb.WatchSet, string) (*schema.Hardware, error)
	HardwareByMAC(memdb.WatchSet, string) (*schema.Hardware, error)
	HardwareByIP(memdb.WatchSet, string) (*schema.Hardware, error)
	HardwareByHostname(memdb.WatchSet, string) (*schema.Hardware, error)
	Hardware(memdb.WatchSet) ([]*schema.Hardware, error)
	TemplateByName(memdb.WatchSet, string) (*schema.Template, error)
	Templates(memdb.WatchSet) ([]*schema.Template, error)
	WorkflowByName(memdb.WatchSet, string) (*schema.Workflow, error)
	Workflows(memdb.WatchSet) ([]*schema.Workflow, error)
	WorkflowsByHardware(memdb.WatchSet, string) ([]*schema.Workflow, error)
	Settings(memdb.WatchSet) (*schema.Settings, error)
	Revision(memdb.WatchSet) (Revision, error)
	Index(string) (uint64, error)
}

var (
	_ reader = (*Store)(nil)
	_ reader = (*Snapshot)(nil)
)

// lookupFleet is the fleet TestLookup reads.
func lookupFleet() *schema.Fleet {
	return fleet(
		machine("a",
			iface("02:00:00:00:00:0a", "10.0.0.5/24", "a"),
			iface("02:00:00:00:01:0a", "", "")),
		machine("b", iface("02:00:00:00:00:0b", "2001:db8::b/64", "b.example.com")),
		machine("c", iface("02:00:00:00:00:0c", "", "")),
	)
}

func TestLookup(t *testing.T) {
	t.Parallel()
	type lookup func(r reader, ws memdb.WatchSet, key string) (*schema.Hardware, error)
	byName := func(r reader, ws memdb.WatchSet, k string) (*schema.Hardware, error) { return r.HardwareByName(ws, k) }
	byMAC := func(r reader, ws memdb.WatchSet, k string) (*schema.Hardware, error) { return r.HardwareByMAC(ws, k) }
	byIP := func(r reader, ws memdb.WatchSet, k string) (*schema.Hardware, error) { return r.HardwareByIP(ws, k) }
	byHostname := func(r reader, ws memdb.WatchSet, k string) (*schema.Hardware, error) {
		return r.HardwareByHostname(ws, k)
	}
	tests := []struct {
		name    string
		lookup  lookup
		key     string
		want    string // machine name; "" for not found
		wantErr bool
	}{
		{name: "name", lookup: byName, key: "b", want: "b"},
		{name: "name missing", lookup: byName, key: "d"},
		{name: "name prefix is not a match", lookup: byName, key: ""},
		{name: "mac", lookup: byMAC, key: "02:00:00:00:00:0a", want: "a"},
		{name: "mac of second interface", lookup: byMAC, key: "02:00:00:00:01:0a", want: "a"},
		{name: "mac upper-case", lookup: byMAC, key: "02:00:00:00:00:0B", want: "b"},
		{name: "mac dash form", lookup: byMAC, key: "02-00-00-00-00-0C", want: "c"},
		{name: "mac missing", lookup: byMAC, key: "02:00:00:00:00:0d"},
		{name: "mac invalid", lookup: byMAC, key: "not-a-mac", wantErr: true},
		{name: "ip", lookup: byIP, key: "10.0.0.5", want: "a"},
		{name: "ipv6 other spelling", lookup: byIP, key: "2001:0DB8:0:0::b", want: "b"},
		{name: "ip missing", lookup: byIP, key: "10.0.0.6"},
		{name: "ip with prefix", lookup: byIP, key: "10.0.0.5/24", wantErr: true},
		{name: "ip invalid", lookup: byIP, key: "bogus", wantErr: true},
		{name: "hostname", lookup: byHostname, key: "a", want: "a"},
		{name: "hostname other case", lookup: byHostname, key: "B.Example.COM", want: "b"},
		{name: "hostname missing", lookup: byHostname, key: "c"},
		{name: "hostname empty", lookup: byHostname, key: ""},
	}
	f := lookupFleet()
	s := TestStore(t, f)
	readers := map[string]reader{"store": s, "snapshot": s.Snapshot()}
	for _, tt := range tests {
		for rname, r := range readers {
			t.Run(rname+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				got, err := tt.lookup(r, memdb.NewWatchSet(), tt.key)
				if tt.wantErr {
					if err == nil {
						t.Fatalf("lookup %q: got %v, want an error", tt.key, got)
					}
					return
				}
				if err != nil {
					t.Fatalf("lookup %q: %v", tt.key, err)
				}
				switch {
				case tt.want == "" && got != nil:
					t.Errorf("lookup %q: got %q, want nil", tt.key, got.Name)
				case tt.want != "" && got == nil:
					t.Errorf("lookup %q: got nil, want %q", tt.key, tt.want)
				case tt.want != "" && got != f.Hardware[tt.want]:
					// The store hands out the fleet's own objects.
					t.Errorf("lookup %q: got %p (%q), want the fleet's %q at %p", tt.key, got, got.Name, tt.want, f.Hardware[tt.want])
				}
			})
		}
	}
}

func TestListsSortedByName(t *testing.T) {
	t.Parallel()
	f := fleet(
		machine("m10", iface("02:00:00:00:00:10", "", "")),
		machine("m2", iface("02:00:00:00:00:02", "", "")),
		machine("m1", iface("02:00:00:00:00:01", "", "")),
		template("zz"), template("install"),
		workflow("w2", "m1"), workflow("w1", "m2"),
	)
	s := TestStore(t, f)
	hw, err := s.Hardware(nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"m1", "m10", "m2"}, names(hw, hardwareName)); diff != "" {
		t.Errorf("Hardware: names (-want +got):\n%s", diff)
	}
	tp, err := s.Templates(nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"install", "zz"}, names(tp, templateName)); diff != "" {
		t.Errorf("Templates: names (-want +got):\n%s", diff)
	}
	wf, err := s.Workflows(nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"w1", "w2"}, names(wf, workflowName)); diff != "" {
		t.Errorf("Workflows: names (-want +got):\n%s", diff)
	}
	if got, err := s.TemplateByName(nil, "zz"); err != nil || got != f.Templates["zz"] {
		t.Errorf("TemplateByName(zz): got %v, %v, want the fleet's template", got, err)
	}
	if got, err := s.WorkflowByName(nil, "w1"); err != nil || got != f.Workflows["w1"] {
		t.Errorf("WorkflowByName(w1): got %v, %v, want the fleet's workflow", got, err)
	}
	if got, err := s.WorkflowByName(nil, "w3"); err != nil || got != nil {
		t.Errorf("WorkflowByName(w3): got %v, %v, want nil, nil", got, err)
	}
}

func TestEmptyStore(t *testing.T) {
	t.Parallel()
	s := TestStore(t, nil)
	rev, err := s.Revision(nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Revision{}, rev); diff != "" {
		t.Errorf("Revision (-want +got):\n%s", diff)
	}
	set, err := s.Settings(nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(schema.DefaultSettings(), set, cmp.AllowUnexported(schema.Source{})); diff != "" {
		t.Errorf("Settings (-want +got):\n%s", diff)
	}
	hw, err := s.Hardware(nil)
	if err != nil || len(hw) != 0 {
		t.Errorf("Hardware: got %d machines, %v, want none", len(hw), err)
	}
	for _, table := range []string{TableHardware, TableTemplates, TableWorkflows, TableSettings, TableRevision} {
		if got, err := s.Index(table); err != nil || got != 0 {
			t.Errorf("Index(%s): got %d, %v, want 0, nil", table, got, err)
		}
	}
	for _, table := range []string{TableIndex, "machines"} {
		if got, err := s.Index(table); err == nil {
			t.Errorf("Index(%s): got %d, want an error", table, got)
		}
	}
}

func TestSettings(t *testing.T) {
	t.Parallel()
	custom := &schema.Settings{LeaseTime: 600, Domain: "lab.example.com"}
	s := TestStore(t, fleet(custom))
	if got, err := s.Settings(nil); err != nil || got != custom {
		t.Errorf("Settings: got %+v, %v, want the fleet's %+v", got, err, custom)
	}
	res := apply(t, s, "r2", fleet())
	if !res.Settings {
		t.Errorf("Apply without settings: got Settings %v, want true", res.Settings)
	}
	got, err := s.Settings(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.LeaseTime != schema.DefaultLeaseTime || got.Domain != "" {
		t.Errorf("Settings after removal: got %+v, want the defaults", got)
	}
}

func TestWorkflowsByHardware(t *testing.T) {
	t.Parallel()
	f := fleet(
		machine("a", iface("02:00:00:00:00:0a", "", "")),
		// "ab" has "a" as a prefix: its workflows must not show up for "a".
		machine("ab", iface("02:00:00:00:00:ab", "", "")),
		machine("c", iface("02:00:00:00:00:0c", "", "")),
		workflow("w3", "a"), workflow("w1", "a"), workflow("w2", "ab"),
	)
	s := TestStore(t, f)
	tests := []struct {
		hardware string
		want     []string
	}{
		{"a", []string{"w1", "w3"}},
		{"ab", []string{"w2"}},
		{"c", []string{}},
		{"missing", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.hardware, func(t *testing.T) {
			t.Parallel()
			for rname, r := range map[string]reader{"store": s, "snapshot": s.Snapshot()} {
				got, err := r.WorkflowsByHardware(nil, tt.hardware)
				if err != nil {
					t.Fatalf("%s: %v", rname, err)
				}
				if diff := cmp.Diff(tt.want, names(got, workflowName)); diff != "" {
					t.Errorf("%s: WorkflowsByHardware(%q) (-want +got):\n%s", rname, tt.hardware, diff)
				}
			}
		})
	}
}

func TestApplyRemoves(t *testing.T) {
	t.Parallel()
	f1 := lookupFleet()
	f1 = with(f1, template("install"), workflow("wa", "a"), workflow("wb", "b"))
	s := TestStore(t, f1)

	res := apply(t, s, "r2", without(f1, []string{"b"}, []string{"wb"}))
	want := ApplyResult{Index: 2, Hardware: Changes{Removed: 1}, Workflows: Changes{Removed: 1}}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("Apply (-want +got):\n%s", diff)
	}
	for _, tt := range []struct {
		name   string
		lookup func() (*schema.Hardware, error)
	}{
		{"name", func() (*schema.Hardware, error) { return s.HardwareByName(nil, "b") }},
		{"mac", func() (*schema.Hardware, error) { return s.HardwareByMAC(nil, "02:00:00:00:00:0b") }},
		{"ip", func() (*schema.Hardware, error) { return s.HardwareByIP(nil, "2001:db8::b") }},
		{"hostname", func() (*schema.Hardware, error) { return s.HardwareByHostname(nil, "b.example.com") }},
	} {
		if got, err := tt.lookup(); err != nil || got != nil {
			t.Errorf("removed machine by %s: got %v, %v, want nil, nil", tt.name, got, err)
		}
	}
	hw, err := s.Hardware(nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "c"}, names(hw, hardwareName)); diff != "" {
		t.Errorf("Hardware (-want +got):\n%s", diff)
	}
	wf, err := s.WorkflowsByHardware(nil, "b")
	if err != nil || len(wf) != 0 {
		t.Errorf("WorkflowsByHardware(b): got %d, %v, want none", len(wf), err)
	}
	if got, err := s.HardwareByMAC(nil, "02:00:00:00:00:0a"); err != nil || got != f1.Hardware["a"] {
		t.Errorf("kept machine by mac: got %v, %v, want a", got, err)
	}
}

// TestApplyMovesKeys checks that a MAC, IP and hostname can pass from one
// machine to another in one revision.
func TestApplyMovesKeys(t *testing.T) {
	t.Parallel()
	s := TestStore(t, fleet(
		machine("old", iface("02:00:00:00:00:01", "10.0.0.1/24", "host")),
		machine("new", iface("02:00:00:00:00:02", "", "")),
	))
	f2 := fleet(
		machine("old", iface("02:00:00:00:00:03", "", "")),
		machine("new", iface("02:00:00:00:00:01", "10.0.0.1/24", "host")),
	)
	res := apply(t, s, "r2", f2)
	if diff := cmp.Diff(ApplyResult{Index: 2, Hardware: Changes{Changed: 2}}, res); diff != "" {
		t.Errorf("Apply (-want +got):\n%s", diff)
	}
	for _, tt := range []struct {
		name string
		got  func() (*schema.Hardware, error)
		want *schema.Hardware
	}{
		{"moved mac", func() (*schema.Hardware, error) { return s.HardwareByMAC(nil, "02:00:00:00:00:01") }, f2.Hardware["new"]},
		{"moved ip", func() (*schema.Hardware, error) { return s.HardwareByIP(nil, "10.0.0.1") }, f2.Hardware["new"]},
		{"moved hostname", func() (*schema.Hardware, error) { return s.HardwareByHostname(nil, "host") }, f2.Hardware["new"]},
		{"freed mac", func() (*schema.Hardware, error) { return s.HardwareByMAC(nil, "02:00:00:00:00:02") }, nil},
		{"new mac", func() (*schema.Hardware, error) { return s.HardwareByMAC(nil, "02:00:00:00:00:03") }, f2.Hardware["old"]},
	} {
		got, err := tt.got()
		if err != nil || got != tt.want {
			t.Errorf("%s: got %p, %v, want %p", tt.name, got, err, tt.want)
		}
	}
}

func TestApplyConflict(t *testing.T) {
	t.Parallel()
	base := fleet(machine("a", iface("02:00:00:00:00:0a", "10.0.0.10/24", "a")))
	tests := []struct {
		name string
		add  []*schema.Hardware
		want ConflictError
	}{
		{
			name: "mac of unchanged machine",
			add:  []*schema.Hardware{machine("b", iface("02:00:00:00:00:0A", "", ""))},
			want: ConflictError{Index: IndexMAC, Key: "02:00:00:00:00:0A", Hardware: "b", Owner: "a"},
		},
		{
			name: "ip of unchanged machine",
			add:  []*schema.Hardware{machine("b", iface("02:00:00:00:00:0b", "10.0.0.10/16", ""))},
			want: ConflictError{Index: IndexIP, Key: "10.0.0.10", Hardware: "b", Owner: "a"},
		},
		{
			name: "hostname of unchanged machine",
			add:  []*schema.Hardware{machine("b", iface("02:00:00:00:00:0b", "", "A"))},
			want: ConflictError{Index: IndexHostname, Key: "A", Hardware: "b", Owner: "a"},
		},
		{
			name: "two new machines",
			add: []*schema.Hardware{
				machine("c", iface("02:00:00:00:00:0c", "10.0.0.12/24", "")),
				machine("b", iface("02:00:00:00:00:0b", "10.0.0.12/24", "")),
			},
			want: ConflictError{Index: IndexIP, Key: "10.0.0.12", Hardware: "c", Owner: "b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := TestStore(t, base)
			f := with(base)
			for _, h := range tt.add {
				f.Hardware[h.Name] = h
			}
			res, err := s.Apply("r2", f)
			var ce *ConflictError
			if !errors.As(err, &ce) {
				t.Fatalf("Apply: got %+v, %v, want a *ConflictError", res, err)
			}
			if diff := cmp.Diff(tt.want, *ce); diff != "" {
				t.Errorf("conflict (-want +got):\n%s", diff)
			}
			assertUnchanged(t, s, base)
		})
	}
}

// assertUnchanged fails t unless s still holds f at TestRevision.
func assertUnchanged(t *testing.T, s *Store, f *schema.Fleet) {
	t.Helper()
	rev, err := s.Revision(nil)
	if err != nil {
		t.Fatal(err)
	}
	if rev.ID != TestRevision || rev.Index != 1 {
		t.Errorf("after failed Apply: got revision %+v, want %q at index 1", rev, TestRevision)
	}
	hw, err := s.Hardware(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(hw) != len(f.Hardware) {
		t.Errorf("after failed Apply: got %d machines, want %d", len(hw), len(f.Hardware))
	}
	for _, h := range hw {
		if f.Hardware[h.Name] != h {
			t.Errorf("after failed Apply: machine %q is not the original", h.Name)
		}
	}
	if idx, err := s.Index(TableHardware); err != nil || idx != 1 {
		t.Errorf("after failed Apply: got hardware index %d, %v, want 1", idx, err)
	}
}

func TestApplyInvalid(t *testing.T) {
	t.Parallel()
	base := fleet(machine("a", iface("02:00:00:00:00:0a", "", "")), workflow("w", "a"))
	tests := []struct {
		name  string
		rev   string
		fleet func() *schema.Fleet
	}{
		{"empty revision", "", func() *schema.Fleet { return base }},
		{"nil fleet", "r2", func() *schema.Fleet { return nil }},
		{"name differs from key", "r2", func() *schema.Fleet {
			f := with(base)
			f.Hardware["b"] = machine("c", iface("02:00:00:00:00:0c", "", ""))
			return f
		}},
		{"nil new object", "r2", func() *schema.Fleet {
			f := with(base)
			f.Workflows["x"] = nil
			return f
		}},
		{"nil replacing object", "r2", func() *schema.Fleet {
			f := with(base)
			f.Hardware["a"] = nil
			return f
		}},
		{"invalid mac", "r2", func() *schema.Fleet {
			return with(base, machine("b", iface("02:00:00:00:00", "", "")))
		}},
		{"workflow without hardware", "r2", func() *schema.Fleet {
			return with(base, workflow("w2", ""))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := TestStore(t, base)
			if res, err := s.Apply(tt.rev, tt.fleet()); err == nil {
				t.Fatalf("Apply: got %+v, want an error", res)
			}
			assertUnchanged(t, s, base)
		})
	}
}

// TestApplyIndex follows the table indexes and results through a series of
// Applies.
func TestApplyIndex(t *testing.T) {
	t.Parallel()
	a := machine("a", iface("02:00:00:00:00:0a", "10.0.0.10/24", "a"))
	b := machine("b", iface("02:00:00:00:00:0b", "10.0.0.11/24", "b"))
	c := machine("c", iface("02:00:00:00:00:0c", "10.0.0.12/24", "c"))
	set := &schema.Settings{LeaseTime: 3600}
	f1 := fleet(a, b, template("install"), workflow("wa", "a"), set)
	f2 := with(f1, workflow("wa", "a")) // new pointer: changed
	f3 := with(without(f2, []string{"b"}, nil), c)
	f3.Settings = nil

	type indexes struct{ Hardware, Templates, Workflows, Settings, Revision uint64 }
	steps := []struct {
		name        string
		rev         string
		fleet       *schema.Fleet
		want        ApplyResult
		wantIndexes indexes
		wantRev     Revision
	}{
		{
			name:  "first",
			rev:   "r1",
			fleet: f1,
			want: ApplyResult{Index: 1, Hardware: Changes{Added: 2}, Templates: Changes{Added: 1},
				Workflows: Changes{Added: 1}, Settings: true},
			wantIndexes: indexes{1, 1, 1, 1, 1},
			wantRev:     Revision{ID: "r1", Index: 1, Hardware: 2, Templates: 1, Workflows: 1},
		},
		{
			name:        "one workflow changed",
			rev:         "r2",
			fleet:       f2,
			want:        ApplyResult{Index: 2, Workflows: Changes{Changed: 1}},
			wantIndexes: indexes{1, 1, 2, 1, 2},
			wantRev:     Revision{ID: "r2", Index: 2, Hardware: 2, Templates: 1, Workflows: 1},
		},
		{
			name:        "same revision, same objects",
			rev:         "r2",
			fleet:       with(f2),
			want:        ApplyResult{Index: 2},
			wantIndexes: indexes{1, 1, 2, 1, 2},
			wantRev:     Revision{ID: "r2", Index: 2, Hardware: 2, Templates: 1, Workflows: 1},
		},
		{
			name:        "new revision, same objects",
			rev:         "r3",
			fleet:       with(f2),
			want:        ApplyResult{Index: 3},
			wantIndexes: indexes{1, 1, 2, 1, 3},
			wantRev:     Revision{ID: "r3", Index: 3, Hardware: 2, Templates: 1, Workflows: 1},
		},
		{
			name:        "machine swapped, settings removed",
			rev:         "r4",
			fleet:       f3,
			want:        ApplyResult{Index: 4, Hardware: Changes{Added: 1, Removed: 1}, Settings: true},
			wantIndexes: indexes{4, 1, 2, 4, 4},
			wantRev:     Revision{ID: "r4", Index: 4, Hardware: 2, Templates: 1, Workflows: 1},
		},
	}
	s := TestStore(t, nil)
	// The steps build on each other: no subtests.
	for _, st := range steps {
		res, err := s.Apply(st.rev, st.fleet)
		if err != nil {
			t.Fatalf("%s: Apply: %v", st.name, err)
		}
		if diff := cmp.Diff(st.want, res); diff != "" {
			t.Errorf("%s: Apply (-want +got):\n%s", st.name, diff)
		}
		var got indexes
		for _, x := range []struct {
			table string
			dst   *uint64
		}{
			{TableHardware, &got.Hardware},
			{TableTemplates, &got.Templates},
			{TableWorkflows, &got.Workflows},
			{TableSettings, &got.Settings},
			{TableRevision, &got.Revision},
		} {
			if *x.dst, err = s.Index(x.table); err != nil {
				t.Fatalf("%s: Index(%s): %v", st.name, x.table, err)
			}
		}
		if diff := cmp.Diff(st.wantIndexes, got); diff != "" {
			t.Errorf("%s: indexes (-want +got):\n%s", st.name, diff)
		}
		rev, err := s.Revision(nil)
		if err != nil {
			t.Fatalf("%s: Revision: %v", st.name, err)
		}
		if diff := cmp.Diff(st.wantRev, rev); diff != "" {
			t.Errorf("%s: Revision (-want +got):\n%s", st.name, diff)
		}
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	a := machine("a", iface("02:00:00:00:00:0a", "10.0.0.10/24", "a"))
	b := machine("b", iface("02:00:00:00:00:0b", "10.0.0.11/24", "b"))
	set := &schema.Settings{LeaseTime: 3600}
	base := fleet(a, b, template("install"), workflow("wa", "a"), workflow("wb", "b"), set)

	type watch func(ws memdb.WatchSet, r reader) error
	byName := func(name string) watch {
		return func(ws memdb.WatchSet, r reader) error { _, err := r.HardwareByName(ws, name); return err }
	}
	byMAC := func(mac string) watch {
		return func(ws memdb.WatchSet, r reader) error { _, err := r.HardwareByMAC(ws, mac); return err }
	}
	byIP := func(ip string) watch {
		return func(ws memdb.WatchSet, r reader) error { _, err := r.HardwareByIP(ws, ip); return err }
	}
	byHostname := func(hostname string) watch {
		return func(ws memdb.WatchSet, r reader) error { _, err := r.HardwareByHostname(ws, hostname); return err }
	}
	allHardware := func(ws memdb.WatchSet, r reader) error { _, err := r.Hardware(ws); return err }
	workflowsOf := func(name string) watch {
		return func(ws memdb.WatchSet, r reader) error { _, err := r.WorkflowsByHardware(ws, name); return err }
	}
	settings := func(ws memdb.WatchSet, r reader) error { _, err := r.Settings(ws); return err }
	revision := func(ws memdb.WatchSet, r reader) error { _, err := r.Revision(ws); return err }

	tests := []struct {
		name  string
		watch watch
		rev   string // TestRevision when empty
		next  *schema.Fleet
		want  bool
	}{
		{"machine by mac, machine changed", byMAC("02:00:00:00:00:0a"), "", with(base, replaced(a)), true},
		{"machine by name, machine changed", byName("a"), "", with(base, replaced(a)), true},
		{"machine by ip, machine removed", byIP("10.0.0.10"), "", without(base, []string{"a"}, []string{"wa"}), true},
		{"machine by hostname, same pointers", byHostname("a"), "", with(base), false},
		{"machine by mac, same pointers at a new revision", byMAC("02:00:00:00:00:0a"), "r2", with(base), false},
		{"machine by mac, other machine changed", byMAC("02:00:00:00:00:0a"), "", with(base, replaced(b)), false},
		{"machine by name, other machine changed", byName("a"), "", with(base, replaced(b)), false},
		{"unknown mac, machine added with it", byMAC("02:00:00:00:00:0c"), "",
			with(base, machine("c", iface("02:00:00:00:00:0c", "", ""))), true},
		{"all hardware, one machine changed", allHardware, "", with(base, replaced(b)), true},
		{"all hardware, workflow changed", allHardware, "", with(base, workflow("wa", "a")), false},
		{"workflows of machine, workflow added", workflowsOf("a"), "", with(base, workflow("wa2", "a")), true},
		{"settings, replaced", settings, "", with(base, &schema.Settings{LeaseTime: 60}), true},
		{"settings, same pointer", settings, "r2", with(base, workflow("wa", "a")), false},
		{"revision, new revision", revision, "r2", with(base), true},
		{"revision, same revision and objects", revision, "", with(base), false},
	}
	for _, tt := range tests {
		for _, rname := range []string{"store", "snapshot"} {
			t.Run(rname+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				s := TestStore(t, base)
				var r reader = s
				if rname == "snapshot" {
					r = s.Snapshot()
				}
				ws := memdb.NewWatchSet()
				if err := tt.watch(ws, r); err != nil {
					t.Fatal(err)
				}
				if len(ws) == 0 {
					t.Fatal("accessor added no watch channel")
				}
				if fired(ws) {
					t.Fatal("watch fired before Apply")
				}
				rev := tt.rev
				if rev == "" {
					rev = TestRevision
				}
				apply(t, s, rev, tt.next)
				if got := fired(ws); got != tt.want {
					t.Errorf("watch fired: got %v, want %v", got, tt.want)
				}
			})
		}
	}
}

// TestSnapshotIsolation checks that an Apply is atomic: a snapshot taken
// before it sees all of the old revision, one taken after all of the new.
func TestSnapshotIsolation(t *testing.T) {
	t.Parallel()
	a := machine("a", iface("02:00:00:00:00:0a", "10.0.0.10/24", "a"))
	b := machine("b", iface("02:00:00:00:00:0b", "10.0.0.11/24", "b"))
	set1 := &schema.Settings{LeaseTime: 3600}
	f1 := fleet(a, b, template("install"), workflow("wa", "a"), set1)
	a2 := machine("a", iface("02:00:00:00:00:1a", "10.0.0.20/24", "a2"))
	c := machine("c", iface("02:00:00:00:00:0c", "10.0.0.12/24", "c"))
	set2 := &schema.Settings{LeaseTime: 60}
	f2 := with(without(f1, []string{"b"}, []string{"wa"}), a2, c, workflow("wc", "c"), set2)

	s := TestStore(t, f1)
	before := view(t, s.Snapshot())
	old := s.Snapshot()
	apply(t, s, "r2", f2)
	after := s.Snapshot()

	if diff := cmp.Diff(before, view(t, old)); diff != "" {
		t.Errorf("snapshot taken before Apply changed (-before +now):\n%s", diff)
	}
	want := snapshotView{
		Hardware:    []string{"a", "c"},
		ByMAC:       map[string]string{"02:00:00:00:00:0a": "", "02:00:00:00:00:1a": "a", "02:00:00:00:00:0b": "", "02:00:00:00:00:0c": "c"},
		Workflows:   []string{"wc"},
		LeaseTime:   60,
		Revision:    Revision{ID: "r2", Index: 2, Hardware: 2, Templates: 1, Workflows: 1},
		HardwareIdx: 2,
	}
	if diff := cmp.Diff(want, view(t, after)); diff != "" {
		t.Errorf("snapshot taken after Apply (-want +got):\n%s", diff)
	}
	wantBefore := snapshotView{
		Hardware:    []string{"a", "b"},
		ByMAC:       map[string]string{"02:00:00:00:00:0a": "a", "02:00:00:00:00:1a": "", "02:00:00:00:00:0b": "b", "02:00:00:00:00:0c": ""},
		Workflows:   []string{"wa"},
		LeaseTime:   3600,
		Revision:    Revision{ID: TestRevision, Index: 1, Hardware: 2, Templates: 1, Workflows: 1},
		HardwareIdx: 1,
	}
	if diff := cmp.Diff(wantBefore, before); diff != "" {
		t.Errorf("snapshot taken before Apply (-want +got):\n%s", diff)
	}
}

type snapshotView struct {
	Hardware    []string
	ByMAC       map[string]string // MAC to machine name, "" for none
	Workflows   []string
	LeaseTime   int
	Revision    Revision
	HardwareIdx uint64
}

func view(t *testing.T, s *Snapshot) snapshotView {
	t.Helper()
	var v snapshotView
	hw, err := s.Hardware(nil)
	if err != nil {
		t.Fatal(err)
	}
	v.Hardware = names(hw, hardwareName)
	v.ByMAC = map[string]string{}
	for _, mac := range []string{"02:00:00:00:00:0a", "02:00:00:00:00:1a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"} {
		h, err := s.HardwareByMAC(nil, mac)
		if err != nil {
			t.Fatal(err)
		}
		if h != nil {
			v.ByMAC[mac] = h.Name
		} else {
			v.ByMAC[mac] = ""
		}
	}
	wf, err := s.Workflows(nil)
	if err != nil {
		t.Fatal(err)
	}
	v.Workflows = names(wf, workflowName)
	set, err := s.Settings(nil)
	if err != nil {
		t.Fatal(err)
	}
	v.LeaseTime = set.LeaseTime
	if v.Revision, err = s.Revision(nil); err != nil {
		t.Fatal(err)
	}
	if v.HardwareIdx, err = s.Index(TableHardware); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestConcurrentReaders checks, under -race, that readers racing Applies
// always see one whole revision.
func TestConcurrentReaders(t *testing.T) {
	t.Parallel()
	small, large := benchFleet(10), benchFleet(50)
	s := TestStore(t, small)

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := checkConsistent(s.Snapshot()); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := range 200 {
		f := small
		if i%2 == 0 {
			f = large
		}
		apply(t, s, fmt.Sprintf("r%d", i), f)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// checkConsistent returns an error when snap's revision, hardware and
// indexes disagree.
func checkConsistent(snap *Snapshot) error {
	rev, err := snap.Revision(nil)
	if err != nil {
		return err
	}
	hw, err := snap.Hardware(nil)
	if err != nil {
		return err
	}
	if len(hw) != rev.Hardware {
		return fmt.Errorf("revision %s: got %d machines, want %d", rev.ID, len(hw), rev.Hardware)
	}
	wf, err := snap.Workflows(nil)
	if err != nil {
		return err
	}
	if len(wf) != rev.Workflows {
		return fmt.Errorf("revision %s: got %d workflows, want %d", rev.ID, len(wf), rev.Workflows)
	}
	for _, h := range hw {
		got, err := snap.HardwareByMAC(nil, h.Interfaces[0].MAC)
		if err != nil {
			return err
		}
		if got != h {
			return fmt.Errorf("revision %s: mac %s: got %p, want %p", rev.ID, h.Interfaces[0].MAC, got, h)
		}
	}
	idx, err := snap.Index(TableRevision)
	if err != nil {
		return err
	}
	if idx != rev.Index {
		return fmt.Errorf("revision %s: got revision table index %d, want %d", rev.ID, idx, rev.Index)
	}
	return nil
}

func TestBlockingQuery(t *testing.T) {
	t.Parallel()
	a := machine("a", iface("02:00:00:00:00:0a", "", ""))
	f1 := fleet(a, workflow("wa", "a"))
	s := TestStore(t, f1)

	query := func(ws memdb.WatchSet, snap *Snapshot) (*schema.Hardware, uint64, error) {
		h, err := snap.HardwareByName(ws, "a")
		if err != nil {
			return nil, 0, err
		}
		idx, err := snap.Index(TableHardware)
		return h, idx, err
	}

	type result struct {
		h   *schema.Hardware
		idx uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		h, idx, err := BlockingQuery(t.Context(), s, 1, query)
		done <- result{h, idx, err}
	}()

	// A change the query does not read must not end it, whether it lands
	// before or after the query starts waiting.
	apply(t, s, "r2", with(f1, workflow("wa", "a")))
	a3 := replaced(a)
	apply(t, s, "r3", with(f1, a3))

	select {
	case r := <-done:
		if r.err != nil || r.h != a3 || r.idx != 3 {
			t.Errorf("BlockingQuery: got %p, %d, %v, want %p, 3, nil", r.h, r.idx, r.err, a3)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("BlockingQuery did not return after the machine changed")
	}

	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		h, idx, err := BlockingQuery(ctx, s, 3, query)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("BlockingQuery: got error %v, want %v", err, context.DeadlineExceeded)
		}
		if h != a3 || idx != 3 {
			t.Errorf("BlockingQuery: got %p, %d, want the current %p, 3", h, idx, a3)
		}
	})
}

func TestBlockingQueryWithoutWatch(t *testing.T) {
	t.Parallel()
	s := TestStore(t, fleet())
	done := make(chan uint64, 1)
	go func() {
		_, idx, err := BlockingQuery(t.Context(), s, 1, func(_ memdb.WatchSet, snap *Snapshot) (struct{}, uint64, error) {
			idx, err := snap.Index(TableRevision)
			return struct{}{}, idx, err
		})
		if err != nil {
			t.Error(err)
		}
		done <- idx
	}()
	apply(t, s, "r2", fleet())
	select {
	case idx := <-done:
		if idx != 2 {
			t.Errorf("BlockingQuery: got index %d, want 2", idx)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("BlockingQuery without watch channels did not wake on Apply")
	}
}

// benchFleet returns a fleet of n machines, each with one addressed,
// named interface and one workflow, and one template.
func benchFleet(n int) *schema.Fleet {
	f := fleet(template("install"), &schema.Settings{LeaseTime: 3600})
	for i := range n {
		name := fmt.Sprintf("m%05d", i)
		f.Hardware[name] = machine(name, iface(
			fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff),
			fmt.Sprintf("10.%d.%d.%d/8", i>>16&0xff, i>>8&0xff, i&0xff),
			name+".lab.example.com",
		))
		f.Workflows[name] = workflow(name, name)
	}
	return f
}

func BenchmarkApplyCold(b *testing.B) {
	f := benchFleet(10_000)
	for b.Loop() {
		b.StopTimer()
		s, err := New()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := s.Apply("r1", f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApplyOneChanged(b *testing.B) {
	f1 := benchFleet(10_000)
	f2 := with(f1, replaced(f1.Hardware["m05000"]))
	s := TestStore(b, f1)
	fleets := [2]*schema.Fleet{f2, f1}
	revs := [2]string{"r2", "r1"}
	i := 0
	for b.Loop() {
		res, err := s.Apply(revs[i%2], fleets[i%2])
		if err != nil {
			b.Fatal(err)
		}
		if res.Hardware.Changed != 1 {
			b.Fatalf("Apply: got %+v, want one machine changed", res.Hardware)
		}
		i++
	}
}

func BenchmarkHardwareByMAC(b *testing.B) {
	f := benchFleet(10_000)
	s := TestStore(b, f)
	macs := make([]string, 0, len(f.Hardware))
	for _, h := range f.Hardware {
		macs = append(macs, h.Interfaces[0].MAC)
	}
	i := 0
	for b.Loop() {
		h, err := s.HardwareByMAC(nil, macs[i%len(macs)])
		if err != nil || h == nil {
			b.Fatalf("HardwareByMAC(%s): got %v, %v", macs[i%len(macs)], h, err)
		}
		i++
	}
}

// TestCanonicalMAC: the lookup's fast path takes only strings normMAC
// returns unchanged (so it finds what the slow path finds), and takes the
// six-octet form the DHCP server looks up.
func TestCanonicalMAC(t *testing.T) {
	t.Parallel()
	for _, mac := range []string{
		"aa:bb:cc:dd:ee:ff", "00:00:00:00:00:00", "02:00:0a:c8:00:01",
		"AA:BB:CC:DD:EE:FF", "aa-bb-cc-dd-ee-ff", "aabb.ccdd.eeff", "aa:bb:cc:dd:ee:f",
		"aa:bb:cc:dd:ee:fg", "aa:bb:cc:dd:ee:ff:", "aa:bb:cc:dd:ee;ff", "", "02:00:00:00:00:00:00:01",
		"0:bb:cc:dd:ee:fff",
	} {
		norm, err := normMAC(mac)
		same := err == nil && norm == mac
		fast := isCanonicalMAC(mac)
		if fast && !same {
			t.Errorf("isCanonicalMAC(%q) = true, but normMAC gives %q, %v", mac, norm, err)
		}
		if same && len(mac) == 17 && !fast {
			t.Errorf("isCanonicalMAC(%q) = false, want true", mac)
		}
	}
}

// TestGeneration: the generation changes with every Apply that changes
// the store, only with those, and is the index that Apply returned.
func TestGeneration(t *testing.T) {
	t.Parallel()
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if g := s.Generation(); g != 0 {
		t.Fatalf("empty store: generation %d, want 0", g)
	}
	f1 := lookupFleet()
	r1 := apply(t, s, "r1", f1)
	if g := s.Generation(); g != r1.Index || g == 0 {
		t.Errorf("after r1: generation %d, want the Apply's index %d (not 0)", g, r1.Index)
	}
	apply(t, s, "r1", f1)
	if g := s.Generation(); g != r1.Index {
		t.Errorf("after an Apply that changed nothing: generation %d, want %d", g, r1.Index)
	}
	r2 := apply(t, s, "r2", without(f1, []string{"b"}, nil))
	if g := s.Generation(); g != r2.Index || g == r1.Index {
		t.Errorf("after r2: generation %d, want %d, not %d", g, r2.Index, r1.Index)
	}
}

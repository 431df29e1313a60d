package plan

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gitmetal/gitmetal/schema"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// reviewFleets returns a base and head that exercise every section of the
// writers: a settings change, inherited-only machines, DHCP and metadata
// changes, runs that start, stop and are held back, a machine added and one
// removed, template and workflow changes.
func reviewFleets() (base, head *schema.Fleet) {
	base = testFleet()
	editHardware(base, "node-1", func(h *schema.Hardware) { h.UserData = "#cloud-config\nusers:\n- name: ops\n" })
	base.Hardware["node-6"] = machine(6) // no workflow

	head = next(base)
	head.Settings.LeaseTime = 3600
	for _, name := range []string{"node-1", "node-2", "node-3", "node-6"} {
		editHardware(head, name, func(h *schema.Hardware) { h.Interfaces[0].LeaseTime = 3600 })
	}
	editHardware(head, "node-1", func(h *schema.Hardware) {
		h.Interfaces[0].IP = "10.0.0.11/24"
		h.UserData = "#cloud-config\nusers:\n- name: admin\npackages:\n- curl\n"
		h.Labels["role"] = "db|primary"
	})
	editWorkflow(head, "prov-node-1", func(w *schema.Workflow) { w.Values["image"] = "ubuntu-24.04.img" })
	editWorkflow(head, "prov-node-2", func(w *schema.Workflow) { w.Suspend = true })
	editWorkflow(head, "prov-node-3", func(w *schema.Workflow) { w.Generation = 1 })
	editTemplate(head, "debian", func(t *schema.Template) { t.Actions[1].Args = []string{"--force"} })
	rescue := osTemplate("rescue")
	head.Templates[rescue.Name] = rescue

	delete(head.Hardware, "node-4")
	delete(head.Workflows, "prov-node-4")
	h := machine(5)
	head.Hardware[h.Name] = h
	w := workflow(5, "ubuntu", schema.PolicyOnChange, "ubuntu-24.04.img")
	head.Workflows[w.Name] = w
	return base, head
}

func TestWriteGolden(t *testing.T) {
	t.Parallel()
	review := func() *Plan { return Compute(reviewFleets()) }
	empty := func() *Plan { f := testFleet(); return Compute(f, next(f)) }
	writers := []struct {
		ext   string
		write func(*Plan, io.Writer) error
	}{
		{"txt", (*Plan).WriteText},
		{"json", (*Plan).WriteJSON},
		{"md", (*Plan).WriteMarkdown},
	}
	for _, plan := range []struct {
		name string
		make func() *Plan
	}{{"review", review}, {"empty", empty}} {
		for _, wr := range writers {
			name := plan.name + "." + wr.ext
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var got bytes.Buffer
				if err := wr.write(plan.make(), &got); err != nil {
					t.Fatalf("write: %v", err)
				}
				// Deterministic: a second plan of the same fleets writes
				// the same bytes (map order differs from run to run).
				var again bytes.Buffer
				if err := wr.write(plan.make(), &again); err != nil {
					t.Fatalf("write: %v", err)
				}
				if got.String() != again.String() {
					t.Fatalf("two writes of the same plan differ:\n%s\n---\n%s", got.String(), again.String())
				}
				path := filepath.Join("testdata", name)
				if *update {
					if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("read golden file (run with -update to create it): %v", err)
				}
				if diff := cmp.Diff(string(want), got.String()); diff != "" {
					t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
				}
			})
		}
	}
}

func TestWriteJSONRoundTrip(t *testing.T) {
	t.Parallel()
	p := Compute(reviewFleets())
	var b bytes.Buffer
	if err := p.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got Plan
	d := json.NewDecoder(&b)
	d.DisallowUnknownFields()
	if err := d.Decode(&got); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if diff := cmp.Diff(p, &got); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
}

package plan

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/gitmetal/gitmetal/schema"
)

// The test fleet: four machines, two templates, one workflow per machine.
//
//	node-1  prov-node-1  ubuntu  onChange
//	node-2  prov-node-2  ubuntu  once
//	node-3  prov-node-3  debian  manual
//	node-4  prov-node-4  ubuntu  onChange
//
// Interfaces carry the lease time the loader would default from settings.

func mac(n int) string { return fmt.Sprintf("52:54:00:00:00:%02x", n) }

func machine(n int) *schema.Hardware {
	return &schema.Hardware{
		Name:   fmt.Sprintf("node-%d", n),
		Labels: map[string]string{"rack": "a"},
		Interfaces: []schema.Interface{{
			MAC:         mac(n),
			IP:          fmt.Sprintf("10.0.0.%d/24", n),
			Gateway:     "10.0.0.254",
			Nameservers: []string{"10.0.0.53"},
			Hostname:    fmt.Sprintf("node-%d", n),
			LeaseTime:   schema.DefaultLeaseTime,
			Arch:        "x86_64",
			UEFI:        true,
			Netboot:     schema.Netboot{AllowPXE: true},
		}},
		Disks: []schema.Disk{{Device: "/dev/sda"}},
	}
}

func osTemplate(name string) *schema.Template {
	return &schema.Template{
		Name:    name,
		Timeout: schema.Duration(30 * time.Minute),
		Actions: []schema.Action{
			{Step: schema.Step{
				Name: "stream-image",
				Uses: "image2disk",
				Env: map[string]string{
					"IMG_URL":    "http://images.example/{{.values.image}}",
					"DEST_DISK":  "{{(index .disks 0).device}}",
					"COMPRESSED": "true",
				},
				Timeout: schema.Duration(20 * time.Minute),
			}},
			{Step: schema.Step{Name: "reboot", Uses: "reboot", Background: true}},
		},
	}
}

func workflow(n int, template string, policy schema.Policy, image string) *schema.Workflow {
	return &schema.Workflow{
		Name:     fmt.Sprintf("prov-node-%d", n),
		Hardware: fmt.Sprintf("node-%d", n),
		Template: template,
		Values:   map[string]any{"image": image},
		Policy:   policy,
	}
}

func testFleet() *schema.Fleet {
	f := &schema.Fleet{
		Settings:  schema.DefaultSettings(),
		Hardware:  map[string]*schema.Hardware{},
		Templates: map[string]*schema.Template{"ubuntu": osTemplate("ubuntu"), "debian": osTemplate("debian")},
		Workflows: map[string]*schema.Workflow{},
	}
	for n := 1; n <= 4; n++ {
		h := machine(n)
		f.Hardware[h.Name] = h
	}
	for _, w := range []*schema.Workflow{
		workflow(1, "ubuntu", schema.PolicyOnChange, "ubuntu-22.04.img"),
		workflow(2, "ubuntu", schema.PolicyOnce, "ubuntu-22.04.img"),
		workflow(3, "debian", schema.PolicyManual, "debian-12.img"),
		workflow(4, "ubuntu", schema.PolicyOnChange, "ubuntu-22.04.img"),
	} {
		f.Workflows[w.Name] = w
	}
	return f
}

// next returns a copy of f that shares every object with it, as the loader
// does for a revision where nothing changed.
func next(f *schema.Fleet) *schema.Fleet {
	s := *f.Settings
	return &schema.Fleet{
		Settings:  &s,
		Hardware:  maps.Clone(f.Hardware),
		Templates: maps.Clone(f.Templates),
		Workflows: maps.Clone(f.Workflows),
	}
}

// The edit helpers replace an object of f with an edited copy, as the
// loader does for a changed file; the copy shares nothing mutable with the
// original.

func editHardware(f *schema.Fleet, name string, edit func(*schema.Hardware)) {
	h := *f.Hardware[name]
	h.Labels = maps.Clone(h.Labels)
	h.Interfaces = slices.Clone(h.Interfaces)
	for n := range h.Interfaces {
		h.Interfaces[n].Nameservers = slices.Clone(h.Interfaces[n].Nameservers)
	}
	h.Disks = slices.Clone(h.Disks)
	h.Metadata = maps.Clone(h.Metadata)
	h.SSHKeys = slices.Clone(h.SSHKeys)
	edit(&h)
	f.Hardware[name] = &h
}

func editTemplate(f *schema.Fleet, name string, edit func(*schema.Template)) {
	t := *f.Templates[name]
	t.Env = maps.Clone(t.Env)
	t.Actions = slices.Clone(t.Actions)
	for n := range t.Actions {
		t.Actions[n].Env = maps.Clone(t.Actions[n].Env)
		t.Actions[n].Args = slices.Clone(t.Actions[n].Args)
	}
	edit(&t)
	f.Templates[name] = &t
}

func editWorkflow(f *schema.Fleet, name string, edit func(*schema.Workflow)) {
	w := *f.Workflows[name]
	w.Values = maps.Clone(w.Values)
	edit(&w)
	f.Workflows[name] = &w
}

// deepCopy returns f with every object copied: a fleet equal in content
// that shares no pointer with f, as two independent loads would give.
func deepCopy(f *schema.Fleet) *schema.Fleet {
	out := next(f)
	for name := range out.Hardware {
		editHardware(out, name, func(*schema.Hardware) {})
	}
	for name := range out.Templates {
		editTemplate(out, name, func(*schema.Template) {})
	}
	for name := range out.Workflows {
		editWorkflow(out, name, func(*schema.Workflow) {})
	}
	return out
}

package plan

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/gitmetal/gitmetal/schema"
)

const (
	imgOld = "http://images.example/ubuntu-22.04.img"
	imgNew = "http://images.example/ubuntu-24.04.img"
)

func TestCompute(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// edit turns a copy of the test fleet (sharing its objects) into head.
		edit func(head *schema.Fleet)
		// base, when set, edits the base fleet first.
		base          func(base *schema.Fleet)
		wantSummary   Summary
		wantSettings  []SettingChange
		wantTemplates []ObjectChange
		wantWorkflows []ObjectChange
		wantMachines  []Machine
	}{
		{
			name:        "no change",
			edit:        func(*schema.Fleet) {},
			wantSummary: Summary{Unchanged: 4},
		},
		{
			// Two loads share nothing; a plan must compare content.
			name: "no change, no shared objects",
			edit: func(head *schema.Fleet) {
				c := deepCopy(head)
				*head = *c
			},
			wantSummary: Summary{Unchanged: 4},
		},
		{
			name: "ip change is a DHCP change without a run",
			edit: func(head *schema.Fleet) {
				editHardware(head, "node-1", func(h *schema.Hardware) { h.Interfaces[0].IP = "10.0.0.11/24" })
			},
			wantSummary: Summary{Changed: 1, Unchanged: 3},
			wantMachines: []Machine{{
				Name: "node-1", Status: StatusChanged,
				DHCP: []FieldChange{{Field: "interfaces[52:54:00:00:00:01].ip", Old: "10.0.0.1/24", New: "10.0.0.11/24"}},
			}},
		},
		{
			name: "image value change re-provisions",
			edit: func(head *schema.Fleet) {
				editWorkflow(head, "prov-node-1", func(w *schema.Workflow) { w.Values["image"] = "ubuntu-24.04.img" })
			},
			wantSummary: Summary{Reprovisioned: 1, RunsStarting: 1, Unchanged: 3},
			wantWorkflows: []ObjectChange{{Name: "prov-node-1", Status: StatusChanged, Changes: []FieldChange{
				{Field: "values.image", Old: "ubuntu-22.04.img", New: "ubuntu-24.04.img"},
			}}},
			wantMachines: []Machine{{
				Name: "node-1", Status: StatusUnchanged,
				Runs: []Run{{
					Workflow: "prov-node-1", Template: "ubuntu", Policy: schema.PolicyOnChange,
					Action: RunStart, Reason: ReasonRenderedChanged,
					Changes: []FieldChange{{Field: "actions[stream-image].env.IMG_URL", Old: imgOld, New: imgNew}},
				}},
			}},
		},
		{
			name: "template env change re-provisions every onChange workflow using it",
			edit: func(head *schema.Fleet) {
				editTemplate(head, "ubuntu", func(t *schema.Template) { t.Actions[0].Env["COMPRESSED"] = "false" })
			},
			wantSummary: Summary{Reprovisioned: 2, RunsStarting: 2, Unchanged: 1},
			wantTemplates: []ObjectChange{{Name: "ubuntu", Status: StatusChanged, Changes: []FieldChange{
				{Field: "actions[stream-image].env.COMPRESSED", Old: "true", New: "false"},
			}}},
			wantMachines: []Machine{
				{Name: "node-1", Status: StatusUnchanged, Runs: []Run{{
					Workflow: "prov-node-1", Template: "ubuntu", Policy: schema.PolicyOnChange,
					Action: RunStart, Reason: ReasonRenderedChanged,
					Changes: []FieldChange{{Field: "actions[stream-image].env.COMPRESSED", Old: "true", New: "false"}},
				}}},
				{Name: "node-2", Status: StatusUnchanged, Runs: []Run{{
					Workflow: "prov-node-2", Template: "ubuntu", Policy: schema.PolicyOnce,
					Action: RunSkip, Reason: ReasonRenderedChanged, Note: "policy once: does not re-run after a success",
					Changes: []FieldChange{{Field: "actions[stream-image].env.COMPRESSED", Old: "true", New: "false"}},
				}}},
				{Name: "node-4", Status: StatusUnchanged, Runs: []Run{{
					Workflow: "prov-node-4", Template: "ubuntu", Policy: schema.PolicyOnChange,
					Action: RunStart, Reason: ReasonRenderedChanged,
					Changes: []FieldChange{{Field: "actions[stream-image].env.COMPRESSED", Old: "true", New: "false"}},
				}}},
			},
		},
		{
			name: "policy once and a rendered change starts no run",
			edit: func(head *schema.Fleet) {
				editWorkflow(head, "prov-node-2", func(w *schema.Workflow) { w.Values["image"] = "ubuntu-24.04.img" })
			},
			wantSummary: Summary{Unchanged: 3},
			wantWorkflows: []ObjectChange{{Name: "prov-node-2", Status: StatusChanged, Changes: []FieldChange{
				{Field: "values.image", Old: "ubuntu-22.04.img", New: "ubuntu-24.04.img"},
			}}},
			wantMachines: []Machine{{Name: "node-2", Status: StatusUnchanged, Runs: []Run{{
				Workflow: "prov-node-2", Template: "ubuntu", Policy: schema.PolicyOnce,
				Action: RunSkip, Reason: ReasonRenderedChanged, Note: "policy once: does not re-run after a success",
				Changes: []FieldChange{{Field: "actions[stream-image].env.IMG_URL", Old: imgOld, New: imgNew}},
			}}}},
		},
		{
			name: "policy manual and a template change starts no run",
			edit: func(head *schema.Fleet) {
				editTemplate(head, "debian", func(t *schema.Template) { t.Timeout = schema.Duration(3600e9) })
			},
			wantSummary: Summary{Unchanged: 3},
			wantTemplates: []ObjectChange{{Name: "debian", Status: StatusChanged, Changes: []FieldChange{
				{Field: "timeout", Old: "30m0s", New: "1h0m0s"},
			}}},
			wantMachines: []Machine{{Name: "node-3", Status: StatusUnchanged, Runs: []Run{{
				Workflow: "prov-node-3", Template: "debian", Policy: schema.PolicyManual,
				Action: RunSkip, Reason: ReasonRenderedChanged, Note: "policy manual: runs only when generation is bumped",
				Changes: []FieldChange{{Field: "timeout", Old: "30m0s", New: "1h0m0s"}},
			}}}},
		},
		{
			name: "policy manual and a generation bump starts a run",
			edit: func(head *schema.Fleet) {
				editWorkflow(head, "prov-node-3", func(w *schema.Workflow) { w.Generation = 1 })
			},
			wantSummary: Summary{Reprovisioned: 1, RunsStarting: 1, Unchanged: 3},
			wantWorkflows: []ObjectChange{{Name: "prov-node-3", Status: StatusChanged, Changes: []FieldChange{
				{Field: "generation", Old: "0", New: "1"},
			}}},
			wantMachines: []Machine{{Name: "node-3", Status: StatusUnchanged, Runs: []Run{{
				Workflow: "prov-node-3", Template: "debian", Policy: schema.PolicyManual,
				Action: RunStart, Reason: ReasonGenerationBumped, Detail: "0 → 1",
			}}}},
		},
		{
			name: "generation bump wins over a rendered change and keeps its changes",
			edit: func(head *schema.Fleet) {
				editWorkflow(head, "prov-node-1", func(w *schema.Workflow) {
					w.Generation = 2
					w.Values["image"] = "ubuntu-24.04.img"
				})
			},
			base: func(base *schema.Fleet) {
				editWorkflow(base, "prov-node-1", func(w *schema.Workflow) { w.Generation = 1 })
			},
			wantSummary: Summary{Reprovisioned: 1, RunsStarting: 1, Unchanged: 3},
			wantWorkflows: []ObjectChange{{Name: "prov-node-1", Status: StatusChanged, Changes: []FieldChange{
				{Field: "values.image", Old: "ubuntu-22.04.img", New: "ubuntu-24.04.img"},
				{Field: "generation", Old: "1", New: "2"},
			}}},
			wantMachines: []Machine{{Name: "node-1", Status: StatusUnchanged, Runs: []Run{{
				Workflow: "prov-node-1", Template: "ubuntu", Policy: schema.PolicyOnChange,
				Action: RunStart, Reason: ReasonGenerationBumped, Detail: "1 → 2",
				Changes: []FieldChange{{Field: "actions[stream-image].env.IMG_URL", Old: imgOld, New: imgNew}},
			}}}},
		},
		{
			name: "suspend stops the run",
			edit: func(head *schema.Fleet) {
				editWorkflow(head, "prov-node-1", func(w *schema.Workflow) { w.Suspend = true })
			},
			wantSummary: Summary{Stopped: 1, RunsStopping: 1, Unchanged: 3},
			wantWorkflows: []ObjectChange{{Name: "prov-node-1", Status: StatusChanged, Changes: []FieldChange{
				{Field: "suspend", Old: "false", New: "true"},
			}}},
			wantMachines: []Machine{{Name: "node-1", Status: StatusUnchanged, Runs: []Run{{
				Workflow: "prov-node-1", Template: "ubuntu", Policy: schema.PolicyOnChange,
				Action: RunStop, Reason: ReasonSuspended,
			}}}},
		},
		{
			name: "suspended workflow starts no run on a change",
			base: func(base *schema.Fleet) {
				editWorkflow(base, "prov-node-1", func(w *schema.Workflow) { w.Suspend = true })
			},
			edit: func(head *schema.Fleet) {
				editWorkflow(head, "prov-node-1", func(w *schema.Workflow) { w.Values["image"] = "ubuntu-24.04.img" })
			},
			wantSummary: Summary{Unchanged: 3},
			wantWorkflows: []ObjectChange{{Name: "prov-node-1", Status: StatusChanged, Changes: []FieldChange{
				{Field: "values.image", Old: "ubuntu-22.04.img", New: "ubuntu-24.04.img"},
			}}},
			wantMachines: []Machine{{Name: "node-1", Status: StatusUnchanged, Runs: []Run{{
				Workflow: "prov-node-1", Template: "ubuntu", Policy: schema.PolicyOnChange,
				Action: RunSkip, Reason: ReasonRenderedChanged, Note: "suspended",
				Changes: []FieldChange{{Field: "actions[stream-image].env.IMG_URL", Old: imgOld, New: imgNew}},
			}}}},
		},
		{
			name: "resume",
			base: func(base *schema.Fleet) {
				editWorkflow(base, "prov-node-1", func(w *schema.Workflow) { w.Suspend = true })
			},
			edit: func(head *schema.Fleet) {
				editWorkflow(head, "prov-node-1", func(w *schema.Workflow) { w.Suspend = false })
			},
			wantSummary: Summary{Unchanged: 3},
			wantWorkflows: []ObjectChange{{Name: "prov-node-1", Status: StatusChanged, Changes: []FieldChange{
				{Field: "suspend", Old: "true", New: "false"},
			}}},
			wantMachines: []Machine{{Name: "node-1", Status: StatusUnchanged, Runs: []Run{{
				Workflow: "prov-node-1", Template: "ubuntu", Policy: schema.PolicyOnChange,
				Action: RunResume, Reason: ReasonResumed,
				Note: "runs if the rendered workflow differs from its last successful run",
			}}}},
		},
		{
			name: "machine added with its workflow",
			edit: func(head *schema.Fleet) {
				h := machine(5)
				h.Interfaces[0].Netboot.AllowPXE = false
				head.Hardware[h.Name] = h
				w := workflow(5, "ubuntu", schema.PolicyOnce, "ubuntu-24.04.img")
				head.Workflows[w.Name] = w
			},
			wantSummary:   Summary{Added: 1, RunsStarting: 1, Unchanged: 4},
			wantWorkflows: []ObjectChange{{Name: "prov-node-5", Status: StatusAdded}},
			wantMachines: []Machine{{
				Name: "node-5", Status: StatusAdded,
				DHCP: []FieldChange{{
					Field: "interfaces[52:54:00:00:00:05]",
					New:   `{"mac":"52:54:00:00:00:05","ip":"10.0.0.5/24","gateway":"10.0.0.254","nameservers":["10.0.0.53"],"hostname":"node-5","leaseTime":86400,"arch":"x86_64","uefi":true,"disableDHCP":false,"netboot":{"allowPXE":false}}`,
				}},
				Metadata: []FieldChange{
					{Field: "labels.rack", New: "a"},
					{Field: "disks", New: `["/dev/sda"]`},
				},
				Runs: []Run{{
					Workflow: "prov-node-5", Template: "ubuntu", Policy: schema.PolicyOnce,
					Action: RunStart, Reason: ReasonNewWorkflow,
				}},
			}},
		},
		{
			name: "machine removed with its workflow",
			edit: func(head *schema.Fleet) {
				delete(head.Hardware, "node-4")
				delete(head.Workflows, "prov-node-4")
			},
			wantSummary:   Summary{Removed: 1, RunsStopping: 1, Unchanged: 3},
			wantWorkflows: []ObjectChange{{Name: "prov-node-4", Status: StatusRemoved}},
			wantMachines: []Machine{{
				Name: "node-4", Status: StatusRemoved,
				DHCP: []FieldChange{{
					Field: "interfaces[52:54:00:00:00:04]",
					Old:   `{"mac":"52:54:00:00:00:04","ip":"10.0.0.4/24","gateway":"10.0.0.254","nameservers":["10.0.0.53"],"hostname":"node-4","leaseTime":86400,"arch":"x86_64","uefi":true,"disableDHCP":false,"netboot":{"allowPXE":true}}`,
				}},
				Metadata: []FieldChange{
					{Field: "labels.rack", Old: "a"},
					{Field: "disks", Old: `["/dev/sda"]`},
				},
				Runs: []Run{{
					Workflow: "prov-node-4", Template: "ubuntu", Policy: schema.PolicyOnChange,
					Action: RunStop, Reason: ReasonWorkflowRemoved,
				}},
			}},
		},
		{
			name: "interfaces matched by MAC across reordering",
			base: func(base *schema.Fleet) {
				editHardware(base, "node-1", func(h *schema.Hardware) {
					second := h.Interfaces[0]
					second.MAC, second.IP, second.Hostname = "52:54:00:00:01:01", "10.0.1.1/24", ""
					h.Interfaces = append(h.Interfaces, second)
				})
			},
			edit: func(head *schema.Fleet) {
				editHardware(head, "node-1", func(h *schema.Hardware) {
					h.Interfaces[0], h.Interfaces[1] = h.Interfaces[1], h.Interfaces[0]
					h.Interfaces[0].IP = "10.0.1.2/24"
				})
			},
			wantSummary: Summary{Changed: 1, Unchanged: 3},
			wantMachines: []Machine{{
				Name: "node-1", Status: StatusChanged,
				DHCP: []FieldChange{{Field: "interfaces[52:54:00:00:01:01].ip", Old: "10.0.1.1/24", New: "10.0.1.2/24"}},
			}},
		},
		{
			name: "settings lease change is listed once and marks inherited fields",
			edit: func(head *schema.Fleet) {
				head.Settings.LeaseTime = 3600
				// The loader applies the default to interfaces without
				// their own lease time; node-2 has its own.
				for _, name := range []string{"node-1", "node-3", "node-4"} {
					editHardware(head, name, func(h *schema.Hardware) { h.Interfaces[0].LeaseTime = 3600 })
				}
			},
			base: func(base *schema.Fleet) {
				editHardware(base, "node-2", func(h *schema.Hardware) { h.Interfaces[0].LeaseTime = 600 })
			},
			wantSummary:  Summary{Changed: 3, Unchanged: 1},
			wantSettings: []SettingChange{{Field: "leaseTime", Old: "86400", New: "3600", Machines: 3}},
			wantMachines: []Machine{
				{Name: "node-1", Status: StatusChanged, DHCP: []FieldChange{{
					Field: "interfaces[52:54:00:00:00:01].leaseTime", Old: "86400", New: "3600", FromSettings: true}}},
				{Name: "node-3", Status: StatusChanged, DHCP: []FieldChange{{
					Field: "interfaces[52:54:00:00:00:03].leaseTime", Old: "86400", New: "3600", FromSettings: true}}},
				{Name: "node-4", Status: StatusChanged, DHCP: []FieldChange{{
					Field: "interfaces[52:54:00:00:00:04].leaseTime", Old: "86400", New: "3600", FromSettings: true}}},
			},
		},
		{
			name: "own change equal to neither setting is not inherited",
			edit: func(head *schema.Fleet) {
				head.Settings.LeaseTime = 3600
				editHardware(head, "node-1", func(h *schema.Hardware) { h.Interfaces[0].LeaseTime = 7200 })
			},
			wantSummary:  Summary{Changed: 1, Unchanged: 3},
			wantSettings: []SettingChange{{Field: "leaseTime", Old: "86400", New: "3600"}},
			wantMachines: []Machine{{Name: "node-1", Status: StatusChanged, DHCP: []FieldChange{{
				Field: "interfaces[52:54:00:00:00:01].leaseTime", Old: "86400", New: "7200"}}}},
		},
		{
			name: "netboot and metadata groups",
			edit: func(head *schema.Fleet) {
				editHardware(head, "node-1", func(h *schema.Hardware) {
					h.Interfaces[0].Netboot.AllowPXE = false
					h.Interfaces[0].Netboot.Installer = &schema.Installer{Args: "console=ttyS0"}
					h.Labels["k8s.io/zone"] = "z1"
					h.SSHKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm9aBcDeFgHiJkLmNoP ops@example"}
				})
			},
			wantSummary: Summary{Changed: 1, Unchanged: 3},
			wantMachines: []Machine{{
				Name: "node-1", Status: StatusChanged,
				Netboot: []FieldChange{
					{Field: "interfaces[52:54:00:00:00:01].netboot.allowPXE", Old: "true", New: "false"},
					{Field: "interfaces[52:54:00:00:00:01].netboot.installer.args", New: "console=ttyS0"},
				},
				Metadata: []FieldChange{
					{Field: "sshKeys", New: "ssh-ed25519 …iJkLmNoP ops@example"},
					{Field: `labels["k8s.io/zone"]`, New: "z1"},
				},
			}},
		},
		{
			name: "long user data is a digest with line counts",
			base: func(base *schema.Fleet) {
				editHardware(base, "node-1", func(h *schema.Hardware) { h.UserData = "#cloud-config\nusers:\n- name: ops\n" })
			},
			edit: func(head *schema.Fleet) {
				editHardware(head, "node-1", func(h *schema.Hardware) {
					h.UserData = "#cloud-config\nusers:\n- name: admin\npackages:\n- curl\n"
				})
			},
			wantSummary: Summary{Changed: 1, Unchanged: 3},
			wantMachines: []Machine{{Name: "node-1", Status: StatusChanged, Metadata: []FieldChange{{
				Field:  "userData",
				Old:    digest("#cloud-config\nusers:\n- name: ops\n") + ", 3 lines",
				New:    digest("#cloud-config\nusers:\n- name: admin\npackages:\n- curl\n") + ", 5 lines",
				Detail: "+3 -1 lines",
			}}}},
		},
		{
			name: "workflow switched to an added template",
			edit: func(head *schema.Fleet) {
				t := osTemplate("ubuntu-24")
				t.Actions[0].Env["COMPRESSED"] = "false"
				head.Templates[t.Name] = t
				editWorkflow(head, "prov-node-4", func(w *schema.Workflow) { w.Template = "ubuntu-24" })
			},
			wantSummary:   Summary{Reprovisioned: 1, RunsStarting: 1, Unchanged: 3},
			wantTemplates: []ObjectChange{{Name: "ubuntu-24", Status: StatusAdded}},
			wantWorkflows: []ObjectChange{{Name: "prov-node-4", Status: StatusChanged, Changes: []FieldChange{
				{Field: "template", Old: "ubuntu", New: "ubuntu-24"},
			}}},
			wantMachines: []Machine{{Name: "node-4", Status: StatusUnchanged, Runs: []Run{{
				Workflow: "prov-node-4", Template: "ubuntu-24", Policy: schema.PolicyOnChange,
				Action: RunStart, Reason: ReasonTemplateAdded, Detail: "ubuntu-24",
				Changes: []FieldChange{
					{Field: "template", Old: "ubuntu", New: "ubuntu-24"},
					{Field: "actions[stream-image].env.COMPRESSED", Old: "true", New: "false"},
				},
			}}}},
		},
		{
			name: "workflow moved to an added machine",
			edit: func(head *schema.Fleet) {
				h := machine(5)
				head.Hardware[h.Name] = h
				delete(head.Hardware, "node-4")
				editWorkflow(head, "prov-node-4", func(w *schema.Workflow) { w.Hardware = "node-5" })
			},
			wantSummary: Summary{Added: 1, Removed: 1, RunsStarting: 1, RunsStopping: 1, Unchanged: 3},
			wantWorkflows: []ObjectChange{{Name: "prov-node-4", Status: StatusChanged, Changes: []FieldChange{
				{Field: "hardware", Old: "node-4", New: "node-5"},
			}}},
			wantMachines: []Machine{
				{
					Name: "node-4", Status: StatusRemoved,
					DHCP: []FieldChange{{
						Field: "interfaces[52:54:00:00:00:04]",
						Old:   `{"mac":"52:54:00:00:00:04","ip":"10.0.0.4/24","gateway":"10.0.0.254","nameservers":["10.0.0.53"],"hostname":"node-4","leaseTime":86400,"arch":"x86_64","uefi":true,"disableDHCP":false,"netboot":{"allowPXE":true}}`,
					}},
					Metadata: []FieldChange{{Field: "labels.rack", Old: "a"}, {Field: "disks", Old: `["/dev/sda"]`}},
					Runs: []Run{{
						Workflow: "prov-node-4", Template: "ubuntu", Policy: schema.PolicyOnChange,
						Action: RunStop, Reason: ReasonHardwareChanged, Detail: "node-4 → node-5",
					}},
				},
				{
					Name: "node-5", Status: StatusAdded,
					DHCP: []FieldChange{{
						Field: "interfaces[52:54:00:00:00:05]",
						New:   `{"mac":"52:54:00:00:00:05","ip":"10.0.0.5/24","gateway":"10.0.0.254","nameservers":["10.0.0.53"],"hostname":"node-5","leaseTime":86400,"arch":"x86_64","uefi":true,"disableDHCP":false,"netboot":{"allowPXE":true}}`,
					}},
					Metadata: []FieldChange{{Field: "labels.rack", New: "a"}, {Field: "disks", New: `["/dev/sda"]`}},
					Runs: []Run{{
						Workflow: "prov-node-4", Template: "ubuntu", Policy: schema.PolicyOnChange,
						Action: RunStart, Reason: ReasonHardwareAdded, Detail: "node-4 → node-5",
					}},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base := testFleet()
			if tt.base != nil {
				tt.base(base)
			}
			head := next(base)
			tt.edit(head)
			got := Compute(base, head)
			want := &Plan{
				Version:   FormatVersion,
				Summary:   tt.wantSummary,
				Settings:  tt.wantSettings,
				Templates: tt.wantTemplates,
				Workflows: tt.wantWorkflows,
				Machines:  tt.wantMachines,
			}
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Compute() mismatch (-want +got):\n%s", diff)
			}
			wantEmpty := tt.wantSettings == nil && tt.wantTemplates == nil && tt.wantWorkflows == nil && tt.wantMachines == nil
			if got.Empty() != wantEmpty {
				t.Errorf("Empty() = %v, want %v", got.Empty(), wantEmpty)
			}
		})
	}
}

func TestComputeNewRepository(t *testing.T) {
	t.Parallel()
	head := testFleet()
	for _, base := range []*schema.Fleet{nil, {}} {
		got := Compute(base, head)
		// onChange and once start when new; manual waits for a bump.
		want := Summary{Added: 4, RunsStarting: 3}
		if diff := cmp.Diff(want, got.Summary); diff != "" {
			t.Errorf("summary mismatch (-want +got):\n%s", diff)
		}
		var names []string
		for _, m := range got.Machines {
			names = append(names, m.Name+"="+string(m.Status))
			for _, r := range m.Runs {
				names = append(names, string(r.Action)+":"+r.Workflow+":"+string(r.Reason))
			}
		}
		wantNames := []string{
			"node-1=added", "start:prov-node-1:new workflow",
			"node-2=added", "start:prov-node-2:new workflow",
			// A new manual workflow waits for a generation bump.
			"node-3=added", "skip:prov-node-3:new workflow",
			"node-4=added", "start:prov-node-4:new workflow",
		}
		if diff := cmp.Diff(wantNames, names); diff != "" {
			t.Errorf("machines mismatch (-want +got):\n%s", diff)
		}
		if len(got.Templates) != 2 || len(got.Workflows) != 4 {
			t.Errorf("got %d templates and %d workflows added, want 2 and 4", len(got.Templates), len(got.Workflows))
		}
	}
}

func TestComputeDoesNotRenderUntouchedWorkflows(t *testing.T) {
	t.Parallel()
	// A template that does not render would make any render of it fail;
	// with every object shared, the plan must not try.
	base := testFleet()
	editTemplate(base, "ubuntu", func(tp *schema.Template) { tp.Actions[0].Env["X"] = "{{.values.missing}}" })
	got := Compute(base, next(base))
	if !got.Empty() {
		t.Errorf("plan of shared fleets is not empty: %+v", got)
	}
}

func TestComputeHeadDoesNotRender(t *testing.T) {
	t.Parallel()
	base := testFleet()
	head := next(base)
	editTemplate(head, "ubuntu", func(tp *schema.Template) { tp.Actions[0].Env["X"] = "{{.values.missing}}" })
	got := Compute(base, head)
	for _, m := range got.Machines {
		for _, r := range m.Runs {
			if r.Action != RunSkip || !strings.HasPrefix(r.Note, "does not render: ") {
				t.Errorf("%s: run %s %s note %q, want skip with a render note", m.Name, r.Action, r.Workflow, r.Note)
			}
		}
	}
	if got.Summary.RunsStarting != 0 {
		t.Errorf("RunsStarting = %d, want 0", got.Summary.RunsStarting)
	}
}

func TestComputeDoesNotModifyFleets(t *testing.T) {
	t.Parallel()
	base, head := reviewFleets()
	wantBase, wantHead := deepCopy(base), deepCopy(head)
	Compute(base, head)
	opts := cmpopts.IgnoreUnexported(schema.Source{})
	if diff := cmp.Diff(wantBase, base, opts); diff != "" {
		t.Errorf("base modified (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantHead, head, opts); diff != "" {
		t.Errorf("head modified (-want +got):\n%s", diff)
	}
}

// BenchmarkCompute measures plans of a 10k-machine fleet: a one-machine
// change, where the loader shares every other object and only the touched
// workflow renders, and a settings change, which gives every machine a new
// object so every workflow renders twice (the worst case for a one-line
// change).
func BenchmarkCompute(b *testing.B) {
	base := testFleet()
	for n := 5; n < 10005; n++ {
		h := machine(n % 250)
		h.Name = fmt.Sprintf("node-%d", n)
		h.Interfaces[0].MAC = fmt.Sprintf("52:54:00:00:%02x:%02x", n/256, n%256)
		base.Hardware[h.Name] = h
		w := workflow(n, "ubuntu", schema.PolicyOnChange, "ubuntu-22.04.img")
		base.Workflows[w.Name] = w
	}
	one := next(base)
	editWorkflow(one, "prov-node-42", func(w *schema.Workflow) { w.Values["image"] = "ubuntu-24.04.img" })
	settings := next(base)
	settings.Settings.LeaseTime = 3600
	for name := range settings.Hardware {
		editHardware(settings, name, func(h *schema.Hardware) { h.Interfaces[0].LeaseTime = 3600 })
	}
	for _, bc := range []struct {
		name string
		head *schema.Fleet
		want Summary
	}{
		{"one workflow", one, Summary{Reprovisioned: 1, RunsStarting: 1, Unchanged: 10003}},
		{"settings", settings, Summary{Changed: 10004}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if got := Compute(base, bc.head).Summary; got != bc.want {
					b.Fatalf("summary %+v, want %+v", got, bc.want)
				}
			}
		})
	}
}

func TestSummaryString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		s    Summary
		want string
	}{
		{"brief example", Summary{Reprovisioned: 2, Changed: 5, Added: 1, Removed: 1}, "2 machines re-provisioned, 5 changed, 1 added, 1 removed"},
		{"one machine", Summary{Reprovisioned: 1}, "1 machine re-provisioned, 0 changed, 0 added, 0 removed"},
		{"stopped", Summary{Stopped: 3}, "0 machines re-provisioned, 0 changed, 0 added, 0 removed, 3 stopped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.s.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValue(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", maxText+1)
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"short string", "10.0.0.1/24", "10.0.0.1/24"},
		{"empty string", "", ""},
		{"long string", long, digest(long) + ", 1 line"},
		{"multi-line string", "a\nb\n", digest("a\nb\n") + ", 2 lines"},
		{"int", 86400, "86400"},
		{"bool", false, "false"},
		{"nil slice", []string(nil), ""},
		{"empty map", map[string]any{}, ""},
		{"nil pointer", (*schema.BMC)(nil), ""},
		{"list", []string{"10.0.0.53", "10.0.0.54"}, `["10.0.0.53","10.0.0.54"]`},
		{"map keys sorted", map[string]any{"b": 1, "a": "x"}, `{"a":"x","b":1}`},
		{"struct", &schema.BMC{Address: "10.1.0.1", Protocol: "ipmi"}, `{"address":"10.1.0.1","protocol":"ipmi"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := value(tt.v); got != tt.want {
				t.Errorf("value(%v) = %q, want %q", tt.v, got, tt.want)
			}
		})
	}
}

func TestCode(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", "*none*"},
		{"a", "`a`"},
		{"a`b", "``a`b``"},
		{"`a", "`` `a ``"},
	}
	for _, tt := range tests {
		if got := code(tt.in); got != tt.want {
			t.Errorf("code(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

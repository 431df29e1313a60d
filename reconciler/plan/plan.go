// Package plan computes what a change to the repository would do to the
// fleet: the review view of a pull request (`gitmetal plan`). Given the
// validated fleets of two revisions it lists, per machine, the DHCP, netboot
// and metadata fields that change, the workflow runs that would start or
// stop and why, and a blast-radius summary; and it writes that as text, JSON
// or Markdown for a PR comment.
//
// The package is pure: it reads two Fleets and nothing else. It must not
// touch the store, the runner's runtime state or the clock, so a plan says
// what the desired state asks for, not what a daemon happens to be doing
// (a "stop" means a run of that workflow, if one is in flight, stops).
//
// # Run decisions
//
// For every workflow of head, the triggers that may start a run are, in order
// of precedence: the workflow is new; it moved to another machine; its
// generation changed; its rendered digest (schema.Render) changed, which is
// labelled "template added" when it switched to a template new in head. The
// policy says which triggers count: onChange all of them, once only a new
// workflow, a move and a generation change, manual only a generation change.
// A trigger that does not count, or a suspended workflow, gives a "skip"
// entry that says why nothing starts. A workflow removed, suspended or moved
// away gives a "stop" entry on the machine it ran on.
//
// # Settings
//
// The loader applies the repository settings (site, lease time,
// nameservers, timeservers, domain) to every machine as defaults, so a
// settings change also changes machines' effective values. Such a field
// change is kept on the machine with fromSettings set, counted in the blast
// radius, and listed once under the settings; the writers do not repeat it
// per machine.
//
// # JSON
//
// WriteJSON writes a Plan with these field names, which are stable:
//
//	version     format version, 1
//	summary     {reprovisioned, changed, added, removed, stopped,
//	             runsStarting, runsStopping, unchanged}: machines per blast-radius
//	             category (disjoint: added, removed, re-provisioned — an existing
//	             machine where a run starts — changed — field changes and no run
//	             — stopped — only a run stops) and run counts
//	settings    [{field, old, new, machines}]: machines is how many machines'
//	            effective values the change alters
//	templates   [{name, status, changes}]
//	workflows   [{name, status, changes}]
//	machines    [{name, status, dhcp, netboot, metadata, runs}], only machines
//	            the plan touches; dhcp/netboot/metadata are field changes
//	            [{field, old, new, detail, fromSettings}]; runs are
//	            [{workflow, template, policy, action, reason, detail, note,
//	            changes}] with action start|stop|skip|resume
//
// Old and new are compact strings: JSON for structures, plain text for
// scalars, "" for unset; long or multi-line text is shown as a short sha256
// digest with its line count, and detail then says how many lines changed.
// Every list is sorted (machines, templates and workflows by name, fields in
// schema order with interfaces by MAC).
package plan

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/gitmetal/gitmetal/schema"
)

// FormatVersion is the version of the JSON format WriteJSON writes.
const FormatVersion = 1

// Status says how an object differs between base and head.
type Status string

// The statuses.
const (
	StatusAdded     Status = "added"
	StatusRemoved   Status = "removed"
	StatusChanged   Status = "changed"
	StatusUnchanged Status = "unchanged"
)

// Plan is the difference between two fleets. Build it with Compute.
type Plan struct {
	Version   int             `json:"version"`
	Summary   Summary         `json:"summary"`
	Settings  []SettingChange `json:"settings"`
	Templates []ObjectChange  `json:"templates"`
	Workflows []ObjectChange  `json:"workflows"`
	// Machines holds the machines the plan touches: added, removed, with a
	// field change or with a run entry, sorted by name.
	Machines []Machine `json:"machines"`
}

// Summary is the blast radius. The machine counts are disjoint.
type Summary struct {
	// Reprovisioned counts existing machines where a run would start.
	Reprovisioned int `json:"reprovisioned"`
	// Changed counts existing machines with a field change and no run start.
	Changed int `json:"changed"`
	Added   int `json:"added"`
	Removed int `json:"removed"`
	// Stopped counts existing machines whose only change is a run stopping.
	Stopped int `json:"stopped"`
	// RunsStarting and RunsStopping count run entries of those actions over
	// all machines, added and removed ones included.
	RunsStarting int `json:"runsStarting"`
	RunsStopping int `json:"runsStopping"`
	// Unchanged counts machines of head the plan does not touch.
	Unchanged int `json:"unchanged"`
}

// String returns the blast radius as one line, e.g. "2 machines
// re-provisioned, 5 changed, 1 added, 1 removed".
func (s Summary) String() string {
	noun := "machines"
	if s.Reprovisioned == 1 {
		noun = "machine"
	}
	out := fmt.Sprintf("%d %s re-provisioned, %d changed, %d added, %d removed",
		s.Reprovisioned, noun, s.Changed, s.Added, s.Removed)
	if s.Stopped > 0 {
		out += fmt.Sprintf(", %d stopped", s.Stopped)
	}
	return out
}

// SettingChange is a change of a repository setting (gitmetal.cue).
type SettingChange struct {
	Field string `json:"field"`
	Old   string `json:"old"`
	New   string `json:"new"`
	// Machines is how many machines present in both fleets have an
	// effective value changed by this setting.
	Machines int `json:"machines"`
}

// ObjectChange is a template or workflow added, removed or changed.
type ObjectChange struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Changes lists the changed fields of a changed object.
	Changes []FieldChange `json:"changes,omitempty"`
}

// FieldChange is one field that differs.
type FieldChange struct {
	// Field is the path of the field, e.g. "interfaces[52:54:00:00:00:01].ip",
	// "labels.rack" or "actions[stream-image].env.IMG_URL".
	Field string `json:"field"`
	// Old and New are compact renderings of the values; "" is unset.
	Old string `json:"old"`
	New string `json:"new"`
	// Detail adds what the values cannot show, e.g. "+3 -1 lines".
	Detail string `json:"detail,omitempty"`
	// FromSettings is set when the change comes from a repository setting
	// the machine inherits rather than from the machine's own file.
	FromSettings bool `json:"fromSettings,omitempty"`
}

// Machine is what the plan does to one machine.
type Machine struct {
	Name     string        `json:"name"`
	Status   Status        `json:"status"`
	DHCP     []FieldChange `json:"dhcp,omitempty"`
	Netboot  []FieldChange `json:"netboot,omitempty"`
	Metadata []FieldChange `json:"metadata,omitempty"`
	Runs     []Run         `json:"runs,omitempty"`
}

// fields returns every field change of m, in group order.
func (m *Machine) fields() []FieldChange {
	out := make([]FieldChange, 0, len(m.DHCP)+len(m.Netboot)+len(m.Metadata))
	out = append(out, m.DHCP...)
	out = append(out, m.Netboot...)
	return append(out, m.Metadata...)
}

// settingsOnly reports whether everything the plan does to m comes from
// settings, so the writers can fold it into the settings section.
func (m *Machine) settingsOnly() bool {
	if m.Status != StatusChanged || len(m.Runs) > 0 {
		return false
	}
	for _, c := range m.fields() {
		if !c.FromSettings {
			return false
		}
	}
	return true
}

func (m *Machine) count(a RunAction) int {
	n := 0
	for _, r := range m.Runs {
		if r.Action == a {
			n++
		}
	}
	return n
}

// RunAction is what happens to a workflow run.
type RunAction string

// The run actions.
const (
	// RunStart: a run of the workflow starts.
	RunStart RunAction = "start"
	// RunStop: a run of the workflow, if one is in flight, stops.
	RunStop RunAction = "stop"
	// RunSkip: a trigger is present but no run starts; Note says why.
	RunSkip RunAction = "skip"
	// RunResume: the workflow is no longer suspended; whether it runs
	// depends on its last run, which a plan does not know (see Note).
	RunResume RunAction = "resume"
)

// Reason says why a run starts, stops or would have started.
type Reason string

// The reasons.
const (
	ReasonNewWorkflow      Reason = "new workflow"
	ReasonHardwareAdded    Reason = "hardware added"   // moved to a machine new in head
	ReasonHardwareChanged  Reason = "hardware changed" // moved between existing machines
	ReasonGenerationBumped Reason = "generation bumped"
	ReasonTemplateAdded    Reason = "template added" // switched to a template new in head
	ReasonRenderedChanged  Reason = "rendered workflow changed"
	ReasonWorkflowRemoved  Reason = "workflow removed"
	ReasonSuspended        Reason = "suspended"
	ReasonResumed          Reason = "resumed"
)

// Run is a workflow run that starts, stops, or is held back.
type Run struct {
	Workflow string        `json:"workflow"`
	Template string        `json:"template"`
	Policy   schema.Policy `json:"policy"`
	Action   RunAction     `json:"action"`
	Reason   Reason        `json:"reason"`
	// Detail completes the reason: "1 → 2" for a generation, "node-1 →
	// node-2" for a move.
	Detail string `json:"detail,omitempty"`
	// Note says why a skip does not start, or what a resume depends on.
	Note string `json:"note,omitempty"`
	// Changes lists what differs in the rendered workflow, when its digest
	// changed on the same machine.
	Changes []FieldChange `json:"changes,omitempty"`
}

// why returns the reason with its detail, e.g. "generation bumped 1 → 2".
func (r *Run) why() string {
	if r.Detail == "" {
		return string(r.Reason)
	}
	return string(r.Reason) + " " + r.Detail
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool {
	return len(p.Settings) == 0 && len(p.Templates) == 0 && len(p.Workflows) == 0 && len(p.Machines) == 0
}

// Compute returns the plan that takes the fleet from base to head. Either
// may be nil or empty (a new repository). Both are read, never modified.
// The fleets are expected to be validated (schema.Loader); a workflow of
// head that does not render gets a skip entry saying so.
func Compute(base, head *schema.Fleet) *Plan {
	base, head = orEmpty(base), orEmpty(head)
	p := &Plan{
		Version:   FormatVersion,
		Settings:  []SettingChange{},
		Templates: []ObjectChange{},
		Workflows: []ObjectChange{},
		Machines:  []Machine{},
	}
	settings := diffSettings(base.Settings, head.Settings)
	p.Templates = diffTemplates(base.Templates, head.Templates)
	p.Workflows = diffWorkflows(base.Workflows, head.Workflows)
	runs := computeRuns(base, head)

	inherited := map[string]int{}
	for _, name := range unionKeys(base.Hardware, head.Hardware) {
		old, cur := base.Hardware[name], head.Hardware[name]
		m := Machine{Name: name, Runs: runs[name]}
		switch {
		case old == nil:
			m.Status = StatusAdded
		case cur == nil:
			m.Status = StatusRemoved
		}
		if old != cur {
			d := hardwareDiffer{base: base.Settings, head: head.Settings, settings: settings}
			d.diff(old, cur, &m)
			if m.Status == "" && len(m.fields()) > 0 {
				m.Status = StatusChanged
			}
			for _, f := range d.inherited {
				inherited[f]++
			}
		}
		if m.Status == "" {
			m.Status = StatusUnchanged
		}
		if m.Status == StatusUnchanged && len(m.Runs) == 0 {
			p.Summary.Unchanged++
			continue
		}
		p.Machines = append(p.Machines, m)
	}
	for _, s := range settings {
		s.Machines = inherited[s.Field]
		p.Settings = append(p.Settings, s)
	}
	p.Summary = summarize(p.Machines, p.Summary.Unchanged)
	return p
}

func summarize(machines []Machine, unchanged int) Summary {
	s := Summary{Unchanged: unchanged}
	for n := range machines {
		m := &machines[n]
		starts, stops := m.count(RunStart), m.count(RunStop)
		s.RunsStarting += starts
		s.RunsStopping += stops
		switch {
		case m.Status == StatusAdded:
			s.Added++
		case m.Status == StatusRemoved:
			s.Removed++
		case starts > 0:
			s.Reprovisioned++
		case m.Status == StatusChanged:
			s.Changed++
		case stops > 0:
			s.Stopped++
		}
	}
	return s
}

func orEmpty(f *schema.Fleet) *schema.Fleet {
	out := schema.Fleet{}
	if f != nil {
		out = *f
	}
	if out.Settings == nil {
		out.Settings = schema.DefaultSettings()
	}
	return &out
}

// unionKeys returns the keys of a and b, sorted.
func unionKeys[V any](a, b map[string]V) []string {
	keys := make([]string, 0, max(len(a), len(b)))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// sortedKeys returns the keys of m, sorted.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// quoteKey returns a map key as a path element: ".key" for a plain
// identifier, `["a.b/c"]` otherwise.
func quoteKey(k string) string {
	plain := k != ""
	for i, r := range k {
		switch {
		case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
		case i > 0 && (r == '-' || r >= '0' && r <= '9'):
		default:
			plain = false
		}
	}
	if plain {
		return "." + k
	}
	return "[" + strconv.Quote(k) + "]"
}

// join is strings.Join for the short lists the writers print.
func join(s []string) string { return strings.Join(s, ", ") }

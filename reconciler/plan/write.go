package plan

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// maxFolded is how many settings-only machines the text and Markdown name
// before "and N more"; JSON lists them all.
const maxFolded = 20

// view splits the plan's machines into those the writers show and the
// names of those whose only change comes from settings.
func (p *Plan) view() (shown []*Machine, folded []string) {
	for n := range p.Machines {
		m := &p.Machines[n]
		if m.settingsOnly() {
			folded = append(folded, m.Name)
			continue
		}
		shown = append(shown, m)
	}
	return shown, folded
}

// foldedLine says which machines change only through settings.
func foldedLine(names []string, quote func(string) string) string {
	list := make([]string, 0, min(len(names), maxFolded))
	for _, n := range names[:min(len(names), maxFolded)] {
		list = append(list, quote(n))
	}
	out := plural(len(names), "machine") + verb(len(names), " changes", " change") + " only through settings: " + join(list)
	if len(names) > maxFolded {
		out += fmt.Sprintf(" and %d more", len(names)-maxFolded)
	}
	return out
}

// inheritedFields returns the settings a shown machine inherited changes
// from, in order and without repeats.
func inheritedFields(m *Machine) []string {
	var out []string
	for _, c := range m.fields() {
		if !c.FromSettings {
			continue
		}
		f := c.Field
		if i := strings.LastIndexByte(f, '.'); i >= 0 && strings.HasPrefix(f, "interfaces[") {
			f = f[i+1:]
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// verb picks the singular or plural form of a verb for n subjects.
func verb(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func marker(s Status) string {
	switch s {
	case StatusAdded:
		return "+"
	case StatusRemoved:
		return "-"
	case StatusChanged:
		return "~"
	}
	return " "
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// String renders a field change as "field: old → new (detail)".
func (c FieldChange) String() string {
	out := c.Field + ": " + orNone(c.Old) + " → " + orNone(c.New)
	if c.Detail != "" {
		out += " (" + c.Detail + ")"
	}
	return out
}

// String renders a run as "start wf (template t, policy p): reason —
// note".
func (r *Run) String() string {
	out := fmt.Sprintf("%s %s (template %s, policy %s): %s", r.Action, r.Workflow, r.Template, r.Policy, r.why())
	if r.Note != "" {
		out += " — " + r.Note
	}
	return out
}

// WriteText writes the plan for a terminal.
func (p *Plan) WriteText(w io.Writer) error {
	b := bufio.NewWriter(w)
	if p.Empty() {
		fmt.Fprintln(b, "gitmetal plan: no changes")
		return b.Flush()
	}
	fmt.Fprintf(b, "gitmetal plan: %s\n", p.Summary)
	if len(p.Settings) > 0 {
		fmt.Fprintln(b, "\nSettings (defaults of every machine):")
		for _, s := range p.Settings {
			fmt.Fprintf(b, "  %s: %s → %s", s.Field, orNone(s.Old), orNone(s.New))
			if s.Machines > 0 {
				fmt.Fprintf(b, " (%s)", plural(s.Machines, "machine"))
			}
			fmt.Fprintln(b)
		}
	}
	for _, sec := range []struct {
		title string
		objs  []ObjectChange
	}{{"Templates", p.Templates}, {"Workflows", p.Workflows}} {
		if len(sec.objs) == 0 {
			continue
		}
		fmt.Fprintf(b, "\n%s:\n", sec.title)
		for _, o := range sec.objs {
			fmt.Fprintf(b, "  %s %s\n", marker(o.Status), o.Name)
			for _, c := range o.Changes {
				fmt.Fprintf(b, "      %s\n", c.String())
			}
		}
	}
	shown, folded := p.view()
	if len(shown) > 0 {
		fmt.Fprintln(b, "\nMachines:")
	}
	for _, m := range shown {
		fmt.Fprintf(b, "  %s %s (%s)\n", marker(m.Status), m.Name, m.Status)
		for _, g := range []struct {
			name string
			cs   []FieldChange
		}{{"dhcp", m.DHCP}, {"netboot", m.Netboot}, {"metadata", m.Metadata}} {
			for _, c := range g.cs {
				if !c.FromSettings {
					fmt.Fprintf(b, "      %-9s %s\n", g.name, c.String())
				}
			}
		}
		if f := inheritedFields(m); len(f) > 0 {
			fmt.Fprintf(b, "      %-9s %s (see Settings)\n", "settings", join(f))
		}
		for _, r := range m.Runs {
			fmt.Fprintf(b, "      %-9s %s\n", "run", r.String())
			for _, c := range r.Changes {
				fmt.Fprintf(b, "                  %s\n", c.String())
			}
		}
	}
	if len(folded) > 0 {
		fmt.Fprintf(b, "\n%s\n", foldedLine(folded, func(s string) string { return s }))
	}
	return b.Flush()
}

// WriteJSON writes the plan as indented JSON with the field names
// documented in the package comment.
func (p *Plan) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	e.SetEscapeHTML(false)
	return e.Encode(p)
}

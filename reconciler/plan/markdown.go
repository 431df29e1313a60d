package plan

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
)

// WriteMarkdown writes the plan as GitHub-flavoured Markdown to post as a
// pull-request comment: the blast radius, the settings, template and
// workflow changes, a table of machines, and a collapsible section per
// machine with every change old → new.
func (p *Plan) WriteMarkdown(w io.Writer) error {
	b := bufio.NewWriter(w)
	fmt.Fprint(b, "## gitmetal plan\n\n")
	if p.Empty() {
		fmt.Fprint(b, "No changes.\n")
		return b.Flush()
	}
	fmt.Fprintf(b, "**%s**\n", p.Summary)
	if len(p.Settings) > 0 {
		fmt.Fprint(b, "\n### Settings\n\nRepository defaults; the machines they change are counted here and not repeated below.\n\n")
		fmt.Fprint(b, "| Setting | Old | New | Machines |\n|---|---|---|---:|\n")
		for _, s := range p.Settings {
			fmt.Fprintf(b, "| %s | %s | %s | %d |\n", cell(code(s.Field)), cell(code(s.Old)), cell(code(s.New)), s.Machines)
		}
	}
	for _, sec := range []struct {
		title string
		objs  []ObjectChange
	}{{"Templates", p.Templates}, {"Workflows", p.Workflows}} {
		if len(sec.objs) == 0 {
			continue
		}
		fmt.Fprintf(b, "\n### %s\n\n", sec.title)
		for _, o := range sec.objs {
			fmt.Fprintf(b, "- %s %s\n", code(o.Name), o.Status)
			for _, c := range o.Changes {
				fmt.Fprintf(b, "  - %s\n", mdChange(c))
			}
		}
	}
	shown, folded := p.view()
	if len(shown) > 0 {
		fmt.Fprint(b, "\n### Machines\n\n| Machine | Status | DHCP | Netboot | Metadata | Runs |\n|---|---|---|---|---|---|\n")
		for _, m := range shown {
			runs := make([]string, len(m.Runs))
			for n, r := range m.Runs {
				runs[n] = fmt.Sprintf("%s %s: %s", r.Action, code(r.Workflow), r.why())
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", cell(code(m.Name)), m.Status,
				cell(short(m.DHCP)), cell(short(m.Netboot)), cell(short(m.Metadata)), cell(strings.Join(runs, "<br>")))
		}
		for _, m := range shown {
			writeDetails(b, m)
		}
	}
	if len(folded) > 0 {
		fmt.Fprintf(b, "\n_%s_\n", foldedLine(folded, code))
	}
	return b.Flush()
}

func writeDetails(b *bufio.Writer, m *Machine) {
	fmt.Fprintf(b, "\n<details>\n<summary><code>%s</code> %s", html.EscapeString(m.Name), m.Status)
	var parts []string
	if n := m.count(RunStart); n > 0 {
		parts = append(parts, plural(n, "run")+verb(n, " starts", " start"))
	}
	if n := m.count(RunStop); n > 0 {
		parts = append(parts, plural(n, "run")+verb(n, " stops", " stop"))
	}
	if len(parts) > 0 {
		fmt.Fprintf(b, ", %s", join(parts))
	}
	fmt.Fprint(b, "</summary>\n\n")
	for _, g := range []struct {
		name string
		cs   []FieldChange
	}{{"DHCP", m.DHCP}, {"netboot", m.Netboot}, {"metadata", m.Metadata}} {
		for _, c := range g.cs {
			if !c.FromSettings {
				fmt.Fprintf(b, "- %s %s\n", g.name, mdChange(c))
			}
		}
	}
	if f := inheritedFields(m); len(f) > 0 {
		fmt.Fprintf(b, "- settings: %s (see Settings)\n", join(f))
	}
	for _, r := range m.Runs {
		fmt.Fprintf(b, "- **%s** %s (template %s, policy %s): %s", r.Action, code(r.Workflow), code(r.Template), r.Policy, r.why())
		if r.Note != "" {
			fmt.Fprintf(b, " — %s", r.Note)
		}
		fmt.Fprintln(b)
		for _, c := range r.Changes {
			fmt.Fprintf(b, "  - %s\n", mdChange(c))
		}
	}
	fmt.Fprint(b, "\n</details>\n")
}

// mdChange renders a field change as "`field`: `old` → `new` (detail)".
func mdChange(c FieldChange) string {
	out := code(c.Field) + ": " + code(c.Old) + " → " + code(c.New)
	if c.Detail != "" {
		out += " (" + c.Detail + ")"
	}
	return out
}

// short names a machine's own changed fields of one group for a table
// cell: the field without its interface, once each.
func short(cs []FieldChange) string {
	var out []string
	for _, c := range cs {
		if c.FromSettings {
			continue
		}
		f := c.Field
		if strings.HasPrefix(f, "interfaces[") {
			i := strings.IndexByte(f, ']')
			switch {
			case i+1 < len(f):
				f = f[i+2:]
			case c.Old == "":
				f = "interface added"
			default:
				f = "interface removed"
			}
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return join(out)
}

// code returns s as a Markdown code span, or an italic "none" for "".
func code(s string) string {
	if s == "" {
		return "*none*"
	}
	// A span is fenced by more backticks than it holds in a row.
	run, longest := 0, 0
	for _, r := range s {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	fence := strings.Repeat("`", longest+1)
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		s = " " + s + " "
	}
	return fence + s + fence
}

// cell escapes text for a table cell: GFM splits cells at "|" even inside
// code spans.
func cell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}

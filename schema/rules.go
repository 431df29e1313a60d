package schema

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Builtins are the actions the agent runs without a container runtime.
var Builtins = [...]string{"image2disk", "archive2disk", "oci2disk", "writefile", "exec", "kexec", "reboot"}

// IsBuiltin reports whether uses names a built-in action.
func IsBuiltin(uses string) bool { return slices.Contains(Builtins[:], uses) }

// ociRefRE matches an OCI image reference with at least one '/' (a bare
// word is far more likely a misspelt built-in than an image on Docker Hub's
// library namespace): registry or namespace, path, optional tag and digest.
var ociRefRE = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$`)

type renderEntry struct {
	w   *Workflow
	t   *Template
	h   *Hardware
	err error
}

// checkFleet checks the rules that span files or that CUE states badly. It
// runs on the objects whose files passed the schema; broken names the
// objects, by kind, whose files did not.
func (l *Loader) checkFleet(f *Fleet, broken map[Kind]map[string]bool) []Issue {
	var issues []Issue
	issues = append(issues, checkAddresses(f)...)
	for _, name := range sortedKeys(f.Templates) {
		issues = append(issues, checkUses(f.Templates[name])...)
	}
	live := make(map[string]struct{}, len(f.Workflows))
	for _, name := range sortedKeys(f.Workflows) {
		w := f.Workflows[name]
		live[name] = struct{}{}
		h, t := f.Hardware[w.Hardware], f.Templates[w.Template]
		if h == nil && !broken[KindHardware][w.Hardware] {
			issues = append(issues, Issue{Position: w.Source.Pos("hardware"), Field: "workflow.hardware",
				Message: fmt.Sprintf("no hardware named %q", w.Hardware)})
		}
		if t == nil && !broken[KindTemplate][w.Template] {
			issues = append(issues, Issue{Position: w.Source.Pos("template"), Field: "workflow.template",
				Message: fmt.Sprintf("no template named %q", w.Template)})
		}
		if h == nil || t == nil {
			continue
		}
		// Rendering is the slowest rule: reuse the last verdict while the
		// workflow, template and machine are the same objects.
		e, ok := l.rendered[name]
		if !ok || e.w != w || e.t != t || e.h != h {
			_, err := Render(t, w, h)
			e = renderEntry{w: w, t: t, h: h, err: err}
			l.rendered[name] = e
		}
		if e.err != nil {
			msg := e.err.Error()
			var re *RenderError
			if errors.As(e.err, &re) {
				msg = fmt.Sprintf("template %q (%s) does not render: action %q %s: %v",
					t.Name, t.Source.Pos("name"), re.Action, re.Field, re.Err)
			}
			pos := w.Source.Pos("values")
			if pos.Line == 0 {
				pos = w.Source.Pos("template")
			}
			issues = append(issues, Issue{Position: pos, Field: "workflow.values", Message: msg})
		}
	}
	for name := range l.rendered {
		if _, ok := live[name]; !ok {
			delete(l.rendered, name)
		}
	}
	return issues
}

// checkAddresses reports a MAC, IP address or hostname that two interfaces
// share, naming both places. The first in path order keeps it.
func checkAddresses(f *Fleet) []Issue {
	type owner struct {
		h     *Hardware
		field string
	}
	hw := make([]*Hardware, 0, len(f.Hardware))
	for _, h := range f.Hardware {
		hw = append(hw, h)
	}
	slices.SortFunc(hw, func(a, b *Hardware) int { return cmp.Compare(a.Source.Path, b.Source.Path) })
	var (
		issues []Issue
		macs   = make(map[string]owner, len(hw))
		ips    = make(map[string]owner, len(hw))
		hosts  = make(map[string]owner, len(hw))
	)
	claim := func(m map[string]owner, what, key string, h *Hardware, field string) {
		if key == "" {
			return
		}
		if o, ok := m[key]; ok {
			issues = append(issues, Issue{
				Position: h.Source.Pos(field),
				Field:    "hardware." + field,
				Message:  fmt.Sprintf("%s %s is already used by hardware %q (%s)", what, key, o.h.Name, o.h.Source.Pos(o.field)),
			})
			return
		}
		m[key] = owner{h, field}
	}
	for _, h := range hw {
		for n := range h.Interfaces {
			i := &h.Interfaces[n]
			prefix := "interfaces." + strconv.Itoa(n) + "."
			claim(macs, "MAC", i.MAC, h, prefix+"mac")
			claim(ips, "IP address", i.Addr(), h, prefix+"ip")
			claim(hosts, "hostname", i.Hostname, h, prefix+"hostname")
		}
	}
	return issues
}

func checkUses(t *Template) []Issue {
	var issues []Issue
	check := func(uses, field string) {
		if IsBuiltin(uses) || ociRefRE.MatchString(uses) {
			return
		}
		issues = append(issues, Issue{
			Position: t.Source.Pos(field),
			Field:    "template." + field,
			Message: fmt.Sprintf("unknown action %q (allowed: %s, or an OCI image reference such as ghcr.io/org/action:v1)",
				uses, strings.Join(Builtins[:], ", ")),
		})
	}
	for n, a := range t.Actions {
		check(a.Uses, "actions."+strconv.Itoa(n)+".uses")
		for m, s := range a.OnFailure {
			check(s.Uses, "actions."+strconv.Itoa(n)+".onFailure."+strconv.Itoa(m)+".uses")
		}
	}
	return issues
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

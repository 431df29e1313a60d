package schema

import (
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
	issues := l.claims.issues()
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

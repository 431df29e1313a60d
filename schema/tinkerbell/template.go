package tinkerbell

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The workflow YAML inside a Tinkerbell Template's spec.data.
type tplData struct {
	Version       yaml.Node `yaml:"version"`
	Name          string    `yaml:"name"`
	GlobalTimeout yaml.Node `yaml:"global_timeout"`
	Tasks         []tplTask `yaml:"tasks"`
}

type tplTask struct {
	Name        string            `yaml:"name"`
	Worker      string            `yaml:"worker"`
	Volumes     []string          `yaml:"volumes"`
	Environment map[string]string `yaml:"environment"`
	Actions     []tplAction       `yaml:"actions"`
}

type tplAction struct {
	Name        string            `yaml:"name"`
	Image       string            `yaml:"image"`
	Timeout     yaml.Node         `yaml:"timeout"`
	Command     []string          `yaml:"command"`
	Volumes     []string          `yaml:"volumes"`
	Environment map[string]string `yaml:"environment"`
	Pid         string            `yaml:"pid"`
}

// The gitmetal template file.
type tplOut struct {
	Name    string    `json:"name"`
	Timeout int64     `json:"timeout,omitempty"`
	Actions []stepOut `json:"actions"`
}

type stepOut struct {
	Name       string            `json:"name"`
	Uses       string            `json:"uses"`
	Env        map[string]string `json:"env,omitempty"`
	Args       []string          `json:"args,omitempty"`
	Timeout    int64             `json:"timeout,omitempty"`
	Background bool              `json:"background,omitempty"`
}

var (
	actionNameRE = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9_. ]{0,62}$`)
	envNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// tplText is a template's spec.data with its actions ({{...}}) swapped for
// placeholders, so that it parses as YAML before it is rendered, as
// Tinkerbell renders it, and the actions can be put back rewritten into
// the strings they landed in.
type tplText struct {
	c    *converter
	o    *object
	node *yaml.Node // spec.data
	// base is the line of spec.data in the file when it is a literal
	// block (|), so that line n of the data is line base+n of the file.
	base    int
	prefix  string
	tokenRE *regexp.Regexp
	orig    []string // the actions as written
	actions []string // the actions rewritten
	notes   [][]string
	root    *yaml.Node // the parsed data
}

// line returns the file line of line n of the data.
func (t *tplText) line(n int) int {
	if t.base > 0 && n > 0 {
		return t.base + n
	}
	return t.node.Line
}

func (t *tplText) errorf(line int, field, format string, args ...any) error {
	if t.base == 0 && line > 0 {
		format = "line " + strconv.Itoa(line) + " of spec.data: " + format
	}
	f := "spec.data"
	if field != "" {
		f += " " + field
	}
	return &Error{File: t.c.path, Line: t.line(line), Doc: t.o.doc, Object: t.o.label(), Field: t.o.prefix + f, Err: fmt.Errorf(format, args...)}
}

// fieldError is errorf at a field of the data.
func (t *tplText) fieldError(field, format string, args ...any) error {
	return t.errorf(lineOf(t.root, field), field, format, args...)
}

func (t *tplText) warnf(field, format string, args ...any) {
	t.c.warnAt(t.line(lineOf(t.root, field)), t.o, "spec.data "+field, fmt.Sprintf(format, args...))
}

func (t *tplText) hasAction(s string) bool { return strings.Contains(s, t.prefix) }

// expand puts the rewritten actions back into s, warning at field about
// what could not be rewritten.
func (t *tplText) expand(s, field string) string {
	return t.tokenRE.ReplaceAllStringFunc(s, func(tok string) string {
		k, _ := strconv.Atoi(t.tokenRE.FindStringSubmatch(tok)[1])
		for _, n := range t.notes[k] {
			t.warnf(field, "%s", n)
		}
		return t.actions[k]
	})
}

// original puts the actions back into s as written.
func (t *tplText) original(s string) string {
	return t.tokenRE.ReplaceAllStringFunc(s, func(tok string) string {
		k, _ := strconv.Atoi(t.tokenRE.FindStringSubmatch(tok)[1])
		return t.orig[k]
	})
}

func (c *converter) template(o *object) (outFile, error) {
	name, err := c.objectName(o)
	if err != nil {
		return outFile{}, err
	}
	spec := lookup(o.root, "spec")
	var s struct {
		Data string `yaml:"data"`
	}
	if err := c.decode(o, "spec", spec, &s); err != nil {
		return outFile{}, err
	}
	if strings.TrimSpace(s.Data) == "" {
		return outFile{}, c.errorf(o, "spec.data", "required: the template's workflow YAML")
	}
	t := &tplText{c: c, o: o, node: lookup(spec, "data")}
	if t.node.Style&yaml.LiteralStyle != 0 {
		t.base = t.node.Line
	}
	data, err := t.placehold(s.Data)
	if err != nil {
		return outFile{}, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(data), &doc); err != nil {
		line, yerr := splitYAMLError(err)
		return outFile{}, t.errorf(line, "", "invalid yaml: %w", yerr)
	}
	if len(doc.Content) == 0 {
		return outFile{}, t.errorf(0, "", "empty")
	}
	t.root = doc.Content[0]
	var td tplData
	if err := doc.Decode(&td); err != nil {
		line, yerr := splitYAMLError(err)
		return outFile{}, t.errorf(line, "", "%w", yerr)
	}
	unknownFields(t.root, reflect.TypeFor[tplData](), "", func(line int, path string) {
		c.warnAt(t.line(line), o, "spec.data "+t.original(path), "not imported: gitmetal has no equivalent")
	})

	out := tplOut{Name: name}
	if out.Timeout, err = t.seconds(&td.GlobalTimeout, "global_timeout"); err != nil {
		return outFile{}, err
	}
	workers := map[string]bool{}
	names := map[string]bool{}
	for ti := range td.Tasks {
		task := &td.Tasks[ti]
		tp := "tasks[" + strconv.Itoa(ti) + "]"
		// gitmetal binds the machine in the workflow: a template has no
		// worker.
		workers[t.original(task.Worker)] = true
		taskEnv, err := t.env(task.Environment, tp+".environment")
		if err != nil {
			return outFile{}, err
		}
		for ai := range task.Actions {
			step, err := t.action(&task.Actions[ai], task, taskEnv, tp, ai, names)
			if err != nil {
				return outFile{}, err
			}
			out.Actions = append(out.Actions, step)
		}
	}
	if len(out.Actions) == 0 {
		return outFile{}, t.fieldError("tasks", "no actions: a gitmetal template needs at least one")
	}
	if len(workers) > 1 {
		ws := make([]string, 0, len(workers))
		for w := range workers {
			ws = append(ws, strconv.Quote(w))
		}
		sort.Strings(ws)
		t.warnf("tasks", "the tasks name different workers (%s): gitmetal runs every action on the workflow's one machine", strings.Join(ws, ", "))
	}
	return outFile{kind: "template", path: "templates/" + name + ".cue", value: out}, nil
}

// placehold swaps each action of text for a placeholder and rewrites it.
func (t *tplText) placehold(text string) (string, error) {
	spans, err := findActions(text)
	if oe := (*offsetError)(nil); errors.As(err, &oe) {
		return "", t.errorf(1+strings.Count(text[:oe.off], "\n"), "", "%w", oe.err)
	}
	// A placeholder is letters and digits only, so YAML reads it as part
	// of whatever scalar the action stood in; its prefix is one the text
	// does not contain.
	t.prefix = "GITMETALACTION"
	for strings.Contains(text, t.prefix) {
		t.prefix += "X"
	}
	t.tokenRE = regexp.MustCompile(t.prefix + `([0-9]+)Z`)
	var b strings.Builder
	last := 0
	for k, sp := range spans {
		src := text[sp.start:sp.end]
		rw, notes, err := rewriteAction(src)
		if err != nil {
			return "", t.errorf(1+strings.Count(text[:sp.start], "\n"), "", "%w", err)
		}
		t.orig = append(t.orig, src)
		t.actions = append(t.actions, rw)
		t.notes = append(t.notes, notes)
		b.WriteString(text[last:sp.start])
		b.WriteString(t.prefix + strconv.Itoa(k) + "Z")
		last = sp.end
	}
	b.WriteString(text[last:])
	return b.String(), nil
}

// seconds reads a timeout in whole seconds; 0 or absent is none.
func (t *tplText) seconds(n *yaml.Node, field string) (int64, error) {
	if n.Kind == 0 || n.Tag == "!!null" {
		return 0, nil
	}
	if t.hasAction(n.Value) {
		return 0, t.fieldError(field, "%s: template actions in timeouts cannot be converted (gitmetal renders only env and args)", t.original(n.Value))
	}
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if n.Kind != yaml.ScalarNode || err != nil || v < 0 {
		return 0, t.fieldError(field, "%q is not a number of seconds", n.Value)
	}
	return v, nil
}

// env returns an environment with its actions rewritten.
func (t *tplText) env(env map[string]string, field string) (map[string]string, error) {
	if len(env) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make(map[string]string, len(env))
	for _, k := range keys {
		if t.hasAction(k) || !envNameRE.MatchString(k) {
			return nil, t.fieldError(field+"."+t.original(k), "%q is not an environment variable name (letters, digits and '_', not starting with a digit)", t.original(k))
		}
		out[k] = t.expand(env[k], field+"."+k)
	}
	return out, nil
}

// action converts one Tinkerbell action.
func (t *tplText) action(a *tplAction, task *tplTask, taskEnv map[string]string, tp string, ai int, names map[string]bool) (stepOut, error) {
	p := tp + ".actions[" + strconv.Itoa(ai) + "]"
	if t.hasAction(a.Name) {
		return stepOut{}, t.fieldError(p+".name", "%s: template actions in names cannot be converted", t.original(a.Name))
	}
	name := a.Name
	if !actionNameRE.MatchString(name) {
		name = actionName(a.Name)
		if name == "" {
			name = "action"
		}
		t.warnf(p+".name", "renamed to %q: gitmetal action names are letters, digits, '-', '_', '.' and ' ', at most 63", name)
	}
	if names[name] {
		base := name
		for n := 2; names[name]; n++ {
			suffix := "-" + strconv.Itoa(n)
			name = strings.TrimRight(base[:min(len(base), 63-len(suffix))], " ") + suffix
		}
		t.warnf(p+".name", "renamed to %q: another action has the name %q", name, base)
	}
	names[name] = true

	if a.Image == "" {
		return stepOut{}, t.fieldError(p+".image", "required")
	}
	if t.hasAction(a.Image) {
		return stepOut{}, t.fieldError(p+".image", "%s: template actions in images cannot be converted (gitmetal renders only env and args)", t.original(a.Image))
	}
	step := stepOut{Name: name}
	env, err := t.env(a.Environment, p+".environment")
	if err != nil {
		return stepOut{}, err
	}
	// The task's environment sits under each of its actions' own.
	for k, v := range taskEnv {
		if _, ok := env[k]; !ok {
			if env == nil {
				env = map[string]string{}
			}
			env[k] = v
		}
	}
	for i, arg := range a.Command {
		step.Args = append(step.Args, t.expand(arg, p+".command["+strconv.Itoa(i)+"]"))
	}
	if step.Timeout, err = t.seconds(&a.Timeout, p+".timeout"); err != nil {
		return stepOut{}, err
	}

	uses, background, builtin := builtinAction(a.Image)
	if uses == "waitdaemon" {
		// Tinkerbell's waitdaemon runs IMAGE's command after reporting
		// success, so that a last reboot or kexec does not leave the
		// workflow running; gitmetal's background actions do the same.
		inner, _, innerBuiltin := builtinAction(env["IMAGE"])
		switch {
		case len(step.Args) > 0 && (step.Args[0] == "reboot" || strings.HasSuffix(step.Args[0], "/reboot")):
			uses, background, builtin, step.Args = "reboot", true, true, nil
		case innerBuiltin && (inner == "reboot" || inner == "kexec"):
			uses, background, builtin = inner, true, true
		default:
			uses, builtin = imageRef(a.Image), false
		}
		if builtin {
			delete(env, "IMAGE")
			delete(env, "WAIT_SECONDS")
			t.warnf(p+".image", "the waitdaemon wrapper became the built-in %s action with background: true, which reports before it ends the installer", uses)
		}
	}
	step.Uses, step.Background = uses, background
	if !builtin {
		if vols := slices.Concat(task.Volumes, a.Volumes); len(vols) > 0 {
			field := p + ".volumes"
			if len(a.Volumes) == 0 {
				field = tp + ".volumes"
			}
			t.warnf(field, "not imported for action %q: gitmetal mounts nothing into container actions (%s)", name, strings.Join(vols, ", "))
		}
		if a.Pid != "" {
			t.warnf(p+".pid", "not imported: gitmetal does not share namespaces with container actions")
		}
	}
	if len(env) > 0 {
		step.Env = env
	}
	return step, nil
}

// builtinAction returns the gitmetal action for a Tinkerbell action image:
// a built-in for the images of tinkerbell/actions (whatever the registry,
// as they are often mirrored), "waitdaemon" for that wrapper, or else the
// image reference itself.
func builtinAction(image string) (uses string, background, builtin bool) {
	ref, _, _ := strings.Cut(image, "@")
	base := ref[strings.LastIndex(ref, "/")+1:]
	base, _, _ = strings.Cut(base, ":")
	switch base {
	case "image2disk", "oci2disk", "archive2disk", "writefile":
		return base, false, true
	case "cexec":
		return "exec", false, true
	case "kexec", "reboot":
		// They end the installer, so they could never report success.
		return base, true, true
	case "waitdaemon":
		return "waitdaemon", false, false
	}
	return imageRef(image), false, false
}

// imageRef spells out a Docker Hub library image ("alpine:3" is
// docker.io/library/alpine:3): gitmetal takes a bare word for a misspelt
// built-in.
func imageRef(image string) string {
	if image != "" && !strings.Contains(image, "/") {
		return "docker.io/library/" + image
	}
	return image
}

// actionName makes a gitmetal action name of s: characters it does not
// allow become '-', or go when they are at either end.
func actionName(s string) string {
	const bad = 0
	b := []rune(s)
	for i, r := range b {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case i > 0 && (r == '-' || r == '_' || r == '.' || r == ' '):
		default:
			b[i] = bad
		}
	}
	out := strings.Trim(string(b), "\x00")
	out = strings.ReplaceAll(out, "\x00", "-")
	if len(out) > 63 {
		out = strings.TrimRight(out[:63], " ")
	}
	return out
}

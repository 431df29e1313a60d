package schema

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/template"
)

// Rendered is a workflow's template rendered for its machine: what the
// runner hands to the agent.
type Rendered struct {
	Workflow string   `json:"workflow"`
	Template string   `json:"template"`
	Hardware string   `json:"hardware"`
	Timeout  Duration `json:"timeout,omitempty"`
	Actions  []Action `json:"actions"`
	// Digest is the sha256 of the rendered actions and timeout: it changes
	// exactly when what the machine would run changes, whatever in the
	// template, values or hardware caused it.
	Digest string `json:"digest"`
}

// RenderError says which action field of a template failed to render.
type RenderError struct {
	Template string
	Action   string
	Field    string // "env.IMG_URL", "args.0", ...
	Err      error
}

func (e *RenderError) Error() string {
	return fmt.Sprintf("template %q action %q %s: %v", e.Template, e.Action, e.Field, e.Err)
}

func (e *RenderError) Unwrap() error { return e.Err }

// Render renders t for workflow w on machine h. Text in env values and args
// is a Go text/template with missingkey=error over
//
//	.hardware  the machine (JSON field names of Hardware)
//	.disks     the machine's disks, each with .device
//	.values    the workflow's values
//
// and the function formatPartition DEVICE N ("/dev/nvme0n1" 1 →
// "/dev/nvme0n1p1", "/dev/sda" 1 → "/dev/sda1", "/dev/disk/by-id/X" 1 →
// "/dev/disk/by-id/X-part1").
func Render(t *Template, w *Workflow, h *Hardware) (*Rendered, error) {
	data, err := renderData(w, h)
	if err != nil {
		return nil, err
	}
	r := &Rendered{
		Workflow: w.Name,
		Template: t.Name,
		Hardware: h.Name,
		Timeout:  t.Timeout,
		Actions:  make([]Action, len(t.Actions)),
	}
	for n, a := range t.Actions {
		step, err := renderStep(t, a.Step, data)
		if err != nil {
			return nil, err
		}
		r.Actions[n] = Action{Step: step}
		// Template-wide env sits under each action's own.
		for k, v := range t.Env {
			if _, ok := r.Actions[n].Env[k]; ok {
				continue
			}
			s, err := execute(v, data)
			if err != nil {
				return nil, &RenderError{Template: t.Name, Action: a.Name, Field: "env." + k, Err: err}
			}
			if r.Actions[n].Env == nil {
				r.Actions[n].Env = map[string]string{}
			}
			r.Actions[n].Env[k] = s
		}
		for _, f := range a.OnFailure {
			fs, err := renderStep(t, f, data)
			if err != nil {
				return nil, err
			}
			r.Actions[n].OnFailure = append(r.Actions[n].OnFailure, fs)
		}
	}
	b, err := json.Marshal(struct {
		Timeout Duration
		Actions []Action
	}{r.Timeout, r.Actions})
	if err != nil {
		return nil, fmt.Errorf("digest: %w", err)
	}
	sum := sha256.Sum256(b)
	r.Digest = hex.EncodeToString(sum[:])
	return r, nil
}

func renderStep(t *Template, s Step, data map[string]any) (Step, error) {
	out := s
	if len(s.Env) > 0 {
		out.Env = make(map[string]string, len(s.Env))
		for k, v := range s.Env {
			r, err := execute(v, data)
			if err != nil {
				return Step{}, &RenderError{Template: t.Name, Action: s.Name, Field: "env." + k, Err: err}
			}
			out.Env[k] = r
		}
	}
	if len(s.Args) > 0 {
		out.Args = make([]string, len(s.Args))
		for n, v := range s.Args {
			r, err := execute(v, data)
			if err != nil {
				return Step{}, &RenderError{Template: t.Name, Action: s.Name, Field: "args." + strconv.Itoa(n), Err: err}
			}
			out.Args[n] = r
		}
	}
	return out, nil
}

func renderData(w *Workflow, h *Hardware) (map[string]any, error) {
	b, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("render data: %w", err)
	}
	var hw map[string]any
	if err := json.Unmarshal(b, &hw); err != nil {
		return nil, fmt.Errorf("render data: %w", err)
	}
	disks, _ := hw["disks"].([]any)
	if disks == nil {
		disks = []any{}
	}
	values := w.Values
	if values == nil {
		values = map[string]any{}
	}
	return map[string]any{"hardware": hw, "disks": disks, "values": values}, nil
}

func execute(text string, data map[string]any) (string, error) {
	if !strings.Contains(text, "{{") {
		return text, nil
	}
	tpl, err := template.New("").Option("missingkey=error").Funcs(template.FuncMap{
		"formatPartition": formatPartition,
	}).Parse(text)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := tpl.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// formatPartition names partition n of a disk: stable names under
// /dev/disk/by-* take "-part", devices whose name ends in a digit (nvme0n1,
// mmcblk0, loop0) take a "p" before the number.
func formatPartition(dev string, n int) string {
	if strings.HasPrefix(dev, "/dev/disk/by-") {
		return dev + "-part" + strconv.Itoa(n)
	}
	if dev != "" && dev[len(dev)-1] >= '0' && dev[len(dev)-1] <= '9' {
		return dev + "p" + strconv.Itoa(n)
	}
	return dev + strconv.Itoa(n)
}

package tinkerbell

import (
	"strings"
)

type wfSpec struct {
	TemplateRef string            `yaml:"templateRef"`
	HardwareRef string            `yaml:"hardwareRef"`
	HardwareMap map[string]string `yaml:"hardwareMap"`
	BootOptions struct {
		ToggleAllowNetboot bool   `yaml:"toggleAllowNetboot"`
		BootMode           string `yaml:"bootMode"`
	} `yaml:"bootOptions"`
}

// The gitmetal workflow file.
type wfOut struct {
	Name     string            `json:"name"`
	Hardware string            `json:"hardware"`
	Template string            `json:"template"`
	Values   map[string]string `json:"values,omitempty"`
	Suspend  bool              `json:"suspend,omitempty"`
}

func (c *converter) workflow(o *object) (outFile, error) {
	name, err := c.objectName(o)
	if err != nil {
		return outFile{}, err
	}
	var spec wfSpec
	if err := c.decode(o, "spec", lookup(o.root, "spec"), &spec); err != nil {
		return outFile{}, err
	}
	w := wfOut{Name: name}
	var notes []string

	// References go through the same renaming as the objects they name.
	if spec.HardwareRef == "" {
		return outFile{}, c.errorf(o, "spec.hardwareRef", "required: gitmetal binds a workflow to a machine by name")
	}
	if w.Hardware = gitmetalName(spec.HardwareRef); w.Hardware == "" {
		return outFile{}, c.errorf(o, "spec.hardwareRef", "%q has no letters or digits to make a gitmetal name of", spec.HardwareRef)
	}
	if spec.TemplateRef == "" {
		return outFile{}, c.errorf(o, "spec.templateRef", "required")
	}
	if w.Template = gitmetalName(spec.TemplateRef); w.Template == "" {
		return outFile{}, c.errorf(o, "spec.templateRef", "%q has no letters or digits to make a gitmetal name of", spec.TemplateRef)
	}
	if w.Hardware != spec.HardwareRef {
		c.warnf(o, "spec.hardwareRef", "refers to %q, the gitmetal name of %q", w.Hardware, spec.HardwareRef)
	}
	if w.Template != spec.TemplateRef {
		c.warnf(o, "spec.templateRef", "refers to %q, the gitmetal name of %q", w.Template, spec.TemplateRef)
	}
	// The template's {{.key}} became {{.values.key}}.
	if len(spec.HardwareMap) > 0 {
		w.Values = spec.HardwareMap
	}

	if spec.BootOptions.ToggleAllowNetboot {
		notes = append(notes, "bootOptions.toggleAllowNetboot is not carried over: gitmetal always does it. "+
			"It netboots a machine into the installer only while the machine has a run pending, and tells it to boot its local disk otherwise.")
	}
	switch m := spec.BootOptions.BootMode; m {
	case "":
	case "netboot":
		c.warnf(o, "spec.bootOptions.bootMode", "not imported: gitmetal does not power-cycle machines (bmc is reserved for that); reboot the machine into PXE to start the run")
	default:
		c.warnf(o, "spec.bootOptions.bootMode", "not imported: gitmetal boots its installer over the network only, not %q", m)
	}

	// A Workflow runs once in Tinkerbell; gitmetal converges, and would
	// run an imported workflow again on a machine that is already
	// provisioned.
	if state := strings.ToUpper(scalar(lookup(lookup(o.root, "status"), "state"))); strings.HasSuffix(state, "SUCCESS") {
		w.Suspend = true
		notes = append(notes, "suspend: this workflow had already succeeded in Tinkerbell, so it is imported suspended, "+
			"or gitmetal would provision the machine again. Set suspend to false to let gitmetal manage the machine from now on.")
		c.warnf(o, "status.state", "imported with suspend: true: the workflow already succeeded in Tinkerbell, and gitmetal would run it again")
	}
	return outFile{kind: "workflow", path: "workflows/" + name + ".cue", value: w, notes: notes}, nil
}

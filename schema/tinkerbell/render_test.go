package tinkerbell

import (
	"bytes"
	"fmt"
	"maps"
	"strings"
	"testing"
	"text/template"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"

	"github.com/gitmetal/gitmetal/schema"
)

// The part of Tinkerbell's template data that the fixture template uses,
// with Tinkerbell's Go field names: .Hardware is a struct, not a map.
type tinkHardware struct {
	Disks    []string
	UserData string
	Metadata struct {
		Instance struct {
			ID       string `yaml:"id"`
			Hostname string `yaml:"hostname"`
		} `yaml:"instance"`
		Facility struct {
			FacilityCode string `yaml:"facility_code"`
			PlanSlug     string `yaml:"plan_slug"`
		} `yaml:"facility"`
	}
}

// tinkFormatPartition is Tinkerbell's template function of that name.
func tinkFormatPartition(dev string, partition int) string {
	if strings.HasPrefix(dev, "/dev/disk/") {
		return fmt.Sprintf("%v-part%v", dev, partition)
	}
	if dev != "" && dev[len(dev)-1] >= '0' && dev[len(dev)-1] <= '9' {
		return fmt.Sprintf("%vp%v", dev, partition)
	}
	return fmt.Sprintf("%v%v", dev, partition)
}

type renderedAction struct {
	Name string
	Env  map[string]string
	Args []string
}

// renderTinkerbell renders the fixture template as Tinkerbell does, for
// the fixture workflow on the fixture machine, and returns what each
// action gets: the task's environment under the action's own, and the
// command.
func renderTinkerbell(t *testing.T) []renderedAction {
	t.Helper()
	var hw struct {
		Spec struct {
			Disks    []struct{ Device string }
			UserData string    `yaml:"userData"`
			Metadata yaml.Node `yaml:"metadata"`
		}
	}
	var hwObject map[string]any // .hardware: the whole object
	var wf struct {
		Spec struct {
			HardwareMap map[string]string `yaml:"hardwareMap"`
		}
	}
	var tpl struct {
		Spec struct{ Data string }
	}
	for _, d := range []struct {
		file string
		v    any
	}{{"hardware.yaml", &hw}, {"hardware.yaml", &hwObject}, {"workflow.yaml", &wf}, {"template.yaml", &tpl}} {
		if err := yaml.Unmarshal(readFixture(t, d.file), d.v); err != nil {
			t.Fatalf("%s: %v", d.file, err)
		}
	}
	th := tinkHardware{UserData: hw.Spec.UserData}
	for _, d := range hw.Spec.Disks {
		th.Disks = append(th.Disks, d.Device)
	}
	if err := hw.Spec.Metadata.Decode(&th.Metadata); err != nil {
		t.Fatal(err)
	}
	data := map[string]any{"Hardware": th, "hardware": hwObject}
	for k, v := range wf.Spec.HardwareMap {
		data[k] = v
	}

	tmpl, err := template.New("tinkerbell").Option("missingkey=error").
		Funcs(template.FuncMap{"formatPartition": tinkFormatPartition}).Parse(tpl.Spec.Data)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, data); err != nil {
		t.Fatal(err)
	}
	var rendered tplData
	if err := yaml.Unmarshal(b.Bytes(), &rendered); err != nil {
		t.Fatalf("rendered template: %v\n%s", err, b.Bytes())
	}
	var out []renderedAction
	for _, task := range rendered.Tasks {
		for _, a := range task.Actions {
			env := maps.Clone(task.Environment)
			if env == nil {
				env = map[string]string{}
			}
			maps.Copy(env, a.Environment)
			out = append(out, renderedAction{Name: a.Name, Env: env, Args: a.Command})
		}
	}
	return out
}

// TestRenderMatchesTinkerbell checks that the conversion keeps the
// template's meaning: gitmetal renders the converted template, workflow
// and machine into the same environment and arguments for every action as
// Tinkerbell renders the originals.
func TestRenderMatchesTinkerbell(t *testing.T) {
	t.Parallel()
	want := renderTinkerbell(t)
	fleet := loadFleet(t, "hardware.yaml", "template.yaml", "workflow.yaml")
	w := fleet.Workflows["sm01-jammy"]
	r, err := schema.Render(fleet.Templates[w.Template], w, fleet.Hardware[w.Hardware])
	if err != nil {
		t.Fatal(err)
	}
	var got []renderedAction
	for _, a := range r.Actions {
		got = append(got, renderedAction{Name: a.Name, Env: a.Env, Args: a.Args})
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("gitmetal's rendering differs from Tinkerbell's (-tinkerbell +gitmetal):\n%s", diff)
	}
	// A test that compares two empty lists would prove nothing.
	if len(got) != 5 || got[0].Env["DEST_DISK"] != "/dev/nvme0n1" {
		t.Errorf("got %d actions, DEST_DISK %q; want 5 and /dev/nvme0n1", len(got), got[0].Env["DEST_DISK"])
	}
}

package tinkerbell

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/parser"
	"github.com/google/go-cmp/cmp"

	"github.com/gitmetal/gitmetal/schema"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current output")

// fixtures returns the names of the hand-written Tinkerbell manifests
// under testdata that convert.
func fixtures() []string {
	return []string{"hardware.yaml", "template.yaml", "workflow.yaml", "multi.yaml"}
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func convertFixture(t *testing.T, name string) Result {
	t.Helper()
	r, err := Convert("testdata/"+name, readFixture(t, name))
	if err != nil {
		t.Fatalf("Convert(%s): %v", name, err)
	}
	return r
}

// TestConvertGolden compares the files and warnings of each fixture with
// testdata/golden/<fixture>/; -update rewrites them.
func TestConvertGolden(t *testing.T) {
	for _, name := range fixtures() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := convertFixture(t, name)
			got := map[string]string{"warnings.txt": ""}
			if len(r.Warnings) > 0 {
				got["warnings.txt"] = strings.Join(r.Warnings, "\n") + "\n"
			}
			for _, f := range r.Files {
				if _, dup := got[f.Path]; dup {
					t.Fatalf("two files at %s", f.Path)
				}
				got[f.Path] = string(f.Data)
			}
			dir := filepath.Join("testdata", "golden", strings.TrimSuffix(name, ".yaml"))
			if *update {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
				for p, data := range got {
					full := filepath.Join(dir, filepath.FromSlash(p))
					if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			want := map[string]string{}
			err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				data, err := os.ReadFile(p)
				rel, _ := filepath.Rel(dir, p)
				want[filepath.ToSlash(rel)] = string(data)
				return err
			})
			if err != nil {
				t.Fatalf("read golden files (run with -update to write them): %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Convert(%s) differs from %s (-want +got):\n%s", name, dir, diff)
			}
		})
	}
}

// loadFleet converts fixtures and loads the result with gitmetal's loader,
// which validates every file against the CUE schema and checks the rules
// across files, among them that every workflow renders.
func loadFleet(t *testing.T, names ...string) *schema.Fleet {
	t.Helper()
	var files []schema.File
	for _, name := range names {
		for _, f := range convertFixture(t, name).Files {
			files = append(files, schema.File{Path: f.Path, Data: f.Data})
		}
	}
	l, err := schema.NewLoader(schema.Config{})
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := l.Load(context.Background(), files)
	if err != nil {
		t.Fatalf("the converted files of %v are not a valid fleet:\n%v", names, err)
	}
	if h, tp, w := fleet.Counts(); h+tp+w != len(files) {
		t.Fatalf("loaded %d hardware, %d templates and %d workflows from %d files", h, tp, w, len(files))
	}
	return fleet
}

func TestConvertedFilesLoad(t *testing.T) {
	tests := []struct {
		name   string
		inputs []string
	}{
		{"one object per file", []string{"hardware.yaml", "template.yaml", "workflow.yaml"}},
		{"multi-document file", []string{"multi.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fleet := loadFleet(t, tt.inputs...)
			for name, w := range fleet.Workflows {
				if _, err := schema.Render(fleet.Templates[w.Template], w, fleet.Hardware[w.Hardware]); err != nil {
					t.Errorf("workflow %s does not render: %v", name, err)
				}
			}
		})
	}
}

// cueValue evaluates a converted file and returns its one top-level value
// as JSON data.
func cueValue(t *testing.T, data []byte, kind string) map[string]any {
	t.Helper()
	v := cuecontext.New().CompileBytes(data)
	if err := v.Err(); err != nil {
		t.Fatalf("output is not CUE: %v\n%s", err, data)
	}
	b, err := v.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || m[kind] == nil {
		t.Fatalf("got top-level fields %v, want only %s", keys(m), kind)
	}
	return m[kind]
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func fromJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("bad want: %v", err)
	}
	return m
}

const hwHead = `apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata:
  name: m1
spec:
`

func TestConvertHardware(t *testing.T) {
	tests := []struct {
		name string
		spec string // under spec:, indented by two
		want string // the hardware value, as JSON
		// warning is a part of the one warning wanted; "" wants none.
		warning string
	}{
		{
			name: "lease_time 0 is left out",
			spec: `
  interfaces:
    - dhcp: {mac: "52:54:00:00:00:01", lease_time: 0}
      netboot: {allowPXE: true}`,
			want: `{"name": "m1", "interfaces": [{"mac": "52:54:00:00:00:01", "netboot": {"allowPXE": true}}]}`,
		},
		{
			name: "missing lease_time is left out",
			spec: `
  interfaces:
    - dhcp: {mac: "52:54:00:00:00:01"}
      netboot: {allowPXE: true}`,
			want: `{"name": "m1", "interfaces": [{"mac": "52:54:00:00:00:01", "netboot": {"allowPXE": true}}]}`,
		},
		{
			name: "lease_time is kept",
			spec: `
  interfaces:
    - dhcp: {mac: "52:54:00:00:00:01", lease_time: 7200}
      netboot: {allowPXE: true}`,
			want: `{"name": "m1", "interfaces": [{"mac": "52:54:00:00:00:01", "leaseTime": 7200, "netboot": {"allowPXE": true}}]}`,
		},
		{
			name: "MAC is lower-cased with colons",
			spec: `
  interfaces:
    - dhcp: {mac: "52-54-00-AB-CD-EF"}
      netboot: {allowPXE: true}`,
			want: `{"name": "m1", "interfaces": [{"mac": "52:54:00:ab:cd:ef", "netboot": {"allowPXE": true}}]}`,
		},
		{
			name: "address and netmask become a prefix, vlan_id a number",
			spec: `
  interfaces:
    - dhcp:
        mac: "52:54:00:00:00:01"
        ip: {address: 10.0.0.5, netmask: 255.255.252.0, gateway: 10.0.0.1}
        vlan_id: "42"
        arch: arm64
        uefi: true
      netboot: {allowPXE: true}`,
			want: `{"name": "m1", "interfaces": [{"mac": "52:54:00:00:00:01", "ip": "10.0.0.5/22", "gateway": "10.0.0.1", "vlan": 42, "arch": "aarch64", "uefi": true, "netboot": {"allowPXE": true}}]}`,
		},
		{
			name: "vlan_id 0 is no VLAN",
			spec: `
  interfaces:
    - dhcp: {mac: "52:54:00:00:00:01", vlan_id: "0"}
      netboot: {allowPXE: true}`,
			want: `{"name": "m1", "interfaces": [{"mac": "52:54:00:00:00:01", "netboot": {"allowPXE": true}}]}`,
		},
		{
			name: "unset allowPXE is Tinkerbell's false",
			spec: `
  interfaces:
    - dhcp: {mac: "52:54:00:00:00:01"}
      disableDhcp: true`,
			want:    `{"name": "m1", "interfaces": [{"mac": "52:54:00:00:00:01", "disableDHCP": true, "netboot": {"allowPXE": false}}]}`,
			warning: "no interface has netboot.allowPXE true",
		},
		{
			name: "ipxe url wins over contents, as in smee",
			spec: `
  interfaces:
    - dhcp: {mac: "52:54:00:00:00:01"}
      netboot:
        allowPXE: true
        ipxe: {url: "http://boot.example/x.ipxe", contents: "#!ipxe", binary: snp.efi}`,
			want:    `{"name": "m1", "interfaces": [{"mac": "52:54:00:00:00:01", "netboot": {"allowPXE": true, "ipxe": {"url": "http://boot.example/x.ipxe", "binary": "snp.efi"}}}]}`,
			warning: "ipxe.url is set too",
		},
		{
			name: "instance hostname names the first interface, ssh_keys become sshKeys",
			spec: `
  metadata:
    instance:
      hostname: M1.Example.NET
      ssh_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKhTi7+Jiwfb3ygtGor8HTu3UucO0JTqeMX22WPt9d9e a@b"]
  interfaces:
    - dhcp: {mac: "52:54:00:00:00:01"}
      netboot: {allowPXE: true}
    - dhcp: {mac: "52:54:00:00:00:02"}`,
			want: `{"name": "m1", "interfaces": [
				{"mac": "52:54:00:00:00:01", "hostname": "m1.example.net", "netboot": {"allowPXE": true}},
				{"mac": "52:54:00:00:00:02", "netboot": {"allowPXE": false}}],
				"metadata": {"instance": {"hostname": "M1.Example.NET", "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKhTi7+Jiwfb3ygtGor8HTu3UucO0JTqeMX22WPt9d9e a@b"]}},
				"sshKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKhTi7+Jiwfb3ygtGor8HTu3UucO0JTqeMX22WPt9d9e a@b"]}`,
		},
		{
			name: "a hostname names one interface",
			spec: `
  interfaces:
    - dhcp: {mac: "52:54:00:00:00:01", hostname: m1}
      netboot: {allowPXE: true}
    - dhcp: {mac: "52:54:00:00:00:02", hostname: M1}`,
			want: `{"name": "m1", "interfaces": [
				{"mac": "52:54:00:00:00:01", "hostname": "m1", "netboot": {"allowPXE": true}},
				{"mac": "52:54:00:00:00:02", "netboot": {"allowPXE": false}}]}`,
			warning: "spec.interfaces[1].dhcp.hostname: not imported: spec.interfaces[0] has the same hostname",
		},
		{
			name: "an interface without a MAC is skipped",
			spec: `
  interfaces:
    - netboot: {allowPXE: true}
    - dhcp: {mac: "52:54:00:00:00:02"}
      netboot: {allowPXE: true}`,
			want:    `{"name": "m1", "interfaces": [{"mac": "52:54:00:00:00:02", "netboot": {"allowPXE": true}}]}`,
			warning: "spec.interfaces[0]: not imported: no dhcp.mac",
		},
		{
			name: "metadata keeps its scalars as written",
			spec: `
  metadata: {custom: {since: 2024-01-02, big: 123456789012345678901, ratio: 0.5, "on": yes, none: null}}
  interfaces:
    - dhcp: {mac: "52:54:00:00:00:01"}
      netboot: {allowPXE: true}`,
			want: `{"name": "m1", "interfaces": [{"mac": "52:54:00:00:00:01", "netboot": {"allowPXE": true}}],
				"metadata": {"custom": {"since": "2024-01-02", "big": 123456789012345678901, "ratio": 0.5, "on": "yes", "none": null}}}`,
			warning: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := Convert("m1.yaml", []byte(hwHead+strings.TrimPrefix(tt.spec, "\n")+"\n"))
			if err != nil {
				t.Fatalf("Convert: %v", err)
			}
			if len(r.Files) != 1 {
				t.Fatalf("got %d files, want 1", len(r.Files))
			}
			if got, want := r.Files[0].Path, "hardware/imported/m1.cue"; got != want {
				t.Errorf("got path %s, want %s", got, want)
			}
			got := cueValue(t, r.Files[0].Data, "hardware")
			if diff := cmp.Diff(fromJSON(t, tt.want), got); diff != "" {
				t.Errorf("hardware (-want +got):\n%s\n%s", diff, r.Files[0].Data)
			}
			checkWarning(t, r.Warnings, tt.warning)
		})
	}
}

const tplHead = `apiVersion: tinkerbell.org/v1alpha1
kind: Template
metadata:
  name: t
spec:
  data: |
`

func TestConvertTemplate(t *testing.T) {
	tests := []struct {
		name string
		data string // spec.data, indented by four
		want string // the template value, as JSON
		// warning is a part of the one warning wanted; "" wants none.
		warning string
	}{
		{
			name: "an action's environment wins over its task's",
			data: `
    tasks:
      - environment: {A: task, B: task}
        actions:
          - {name: one, image: quay.io/tinkerbell/actions/archive2disk:v1, environment: {B: action}}
          - {name: two, image: quay.io/tinkerbell/actions/oci2disk:v1}`,
			want: `{"name": "t", "actions": [
				{"name": "one", "uses": "archive2disk", "env": {"A": "task", "B": "action"}},
				{"name": "two", "uses": "oci2disk", "env": {"A": "task", "B": "task"}}]}`,
		},
		{
			name: "global_timeout and timeouts are seconds, 0 is none",
			data: `
    global_timeout: 3600
    tasks:
      - actions:
          - {name: one, image: quay.io/tinkerbell/actions/cexec:v1, timeout: 0}
          - {name: two, image: quay.io/tinkerbell/actions/reboot:v1, timeout: 30}`,
			want: `{"name": "t", "timeout": 3600, "actions": [
				{"name": "one", "uses": "exec"},
				{"name": "two", "uses": "reboot", "timeout": 30, "background": true}]}`,
		},
		{
			name: "other images stay images, with Docker Hub's spelt out",
			data: `
    tasks:
      - actions:
          - {name: one, image: "busybox", command: [sh, -c, "echo {{ .device_1 }}"]}
          - {name: two, image: "registry.local:5000/team/grub2disk@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}`,
			want: `{"name": "t", "actions": [
				{"name": "one", "uses": "docker.io/library/busybox", "args": ["sh", "-c", "echo {{ .values.device_1 }}"]},
				{"name": "two", "uses": "registry.local:5000/team/grub2disk@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}]}`,
		},
		{
			name: "flattened actions keep unique names",
			data: `
    tasks:
      - actions: [{name: wipe, image: quay.io/tinkerbell/actions/writefile:v1}]
      - actions: [{name: wipe, image: quay.io/tinkerbell/actions/writefile:v1}]`,
			want: `{"name": "t", "actions": [
				{"name": "wipe", "uses": "writefile"},
				{"name": "wipe-2", "uses": "writefile"}]}`,
			warning: `renamed to "wipe-2": another action has the name "wipe"`,
		},
		{
			name: "tasks on different workers",
			data: `
    tasks:
      - {worker: "{{.device_1}}", actions: [{name: a, image: quay.io/tinkerbell/actions/writefile:v1}]}
      - {worker: "{{.device_2}}", actions: [{name: b, image: quay.io/tinkerbell/actions/writefile:v1}]}`,
			want: `{"name": "t", "actions": [
				{"name": "a", "uses": "writefile"},
				{"name": "b", "uses": "writefile"}]}`,
			warning: `the tasks name different workers ("{{.device_1}}", "{{.device_2}}")`,
		},
		{
			name: "what has no equivalent is kept, with a warning",
			data: `
    tasks:
      - actions:
          - name: a
            image: quay.io/tinkerbell/actions/writefile:v1
            environment: {CONTENTS: "{{ (index .Hardware.Interfaces 0).DHCP.MAC }}"}`,
			want: `{"name": "t", "actions": [
				{"name": "a", "uses": "writefile", "env": {"CONTENTS": "{{ (index .Hardware.Interfaces 0).DHCP.MAC }}"}}]}`,
			warning: "t.yaml:11: Template t: spec.data tasks[0].actions[0].environment.CONTENTS: {{ (index .Hardware.Interfaces 0).DHCP.MAC }} kept as written",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := Convert("t.yaml", []byte(tplHead+strings.TrimPrefix(tt.data, "\n")+"\n"))
			if err != nil {
				t.Fatalf("Convert: %v", err)
			}
			if len(r.Files) != 1 || r.Files[0].Path != "templates/t.cue" {
				t.Fatalf("got files %+v, want templates/t.cue", r.Files)
			}
			got := cueValue(t, r.Files[0].Data, "template")
			if diff := cmp.Diff(fromJSON(t, tt.want), got); diff != "" {
				t.Errorf("template (-want +got):\n%s\n%s", diff, r.Files[0].Data)
			}
			checkWarning(t, r.Warnings, tt.warning)
		})
	}
}

// checkWarning wants exactly one warning containing want, or none when
// want is "".
func checkWarning(t *testing.T, warnings []string, want string) {
	t.Helper()
	switch {
	case want == "" && len(warnings) > 0:
		t.Errorf("got warnings %q, want none", warnings)
	case want != "" && (len(warnings) != 1 || !strings.Contains(warnings[0], want)):
		t.Errorf("got warnings %q, want one containing %q", warnings, want)
	}
}

// TestLeaseTimeAndMACInFixture checks the two Tinkerbell habits gitmetal
// must not carry over on the text of a golden output, not only on its
// value: the fixture's first interface has lease_time 0 and an upper-case
// MAC.
func TestLeaseTimeAndMACInFixture(t *testing.T) {
	t.Parallel()
	r := convertFixture(t, "hardware.yaml")
	hw := cueValue(t, r.Files[0].Data, "hardware")
	ifaces := hw["interfaces"].([]any)
	first, second := ifaces[0].(map[string]any), ifaces[1].(map[string]any)
	if lt, ok := first["leaseTime"]; ok {
		t.Errorf("interface 0 has leaseTime %v, want none (Tinkerbell's lease_time: 0)", lt)
	}
	if got, want := second["leaseTime"], 3600.0; got != want {
		t.Errorf("interface 1 has leaseTime %v, want %v", got, want)
	}
	if got, want := first["mac"], "3c:ec:ef:4c:4f:54"; got != want {
		t.Errorf("interface 0 has mac %v, want %v", got, want)
	}
	if got, want := second["mac"], "3c:ec:ef:4c:4f:55"; got != want {
		t.Errorf("interface 1 has mac %v, want %v", got, want)
	}
	// The loader must then give the interface the repository default.
	fleet := loadFleet(t, "hardware.yaml")
	if got := fleet.Hardware["sm01"].Interfaces[0].LeaseTime; got != schema.DefaultLeaseTime {
		t.Errorf("loaded lease time %d, want the default %d", got, schema.DefaultLeaseTime)
	}
}

func TestConvertErrors(t *testing.T) {
	tests := []struct {
		name  string
		path  string
		input string // "" reads path
		line  int
		// want are parts of the error message.
		want []string
	}{
		{
			name: "invalid yaml",
			path: "testdata/invalid.yaml",
			line: 7,
			want: []string{"testdata/invalid.yaml:7: ", "invalid yaml"},
		},
		{
			name:  "unknown apiVersion",
			path:  "v2.yaml",
			input: "---\n" + strings.Replace(hwHead, "v1alpha1", "v1alpha2", 1) + "  interfaces: []\n",
			line:  2,
			want:  []string{"v2.yaml:2: Hardware m1: apiVersion: unsupported apiVersion \"tinkerbell.org/v1alpha2\" (want tinkerbell.org/v1alpha1)"},
		},
		{
			name:  "Tinkerbell kind of another group",
			path:  "other.yaml",
			input: "apiVersion: example.com/v1\nkind: Workflow\nmetadata: {name: w}\n",
			line:  1,
			want:  []string{"other.yaml:1: Workflow w: apiVersion: unsupported apiVersion"},
		},
		{
			name:  "not an object",
			path:  "scalar.yaml",
			input: "kind: Hardware\n---\njust text\n",
			line:  1,
			want:  []string{"scalar.yaml:1: ", "apiVersion and kind are required"},
		},
		{
			name:  "bad MAC",
			path:  "mac.yaml",
			input: hwHead + "  interfaces:\n    - dhcp:\n        mac: 52:54:00:00:01\n",
			line:  8,
			want:  []string{"mac.yaml:8: Hardware m1: spec.interfaces[0].dhcp.mac: \"52:54:00:00:01\" is not a MAC address"},
		},
		{
			name:  "type error names the line",
			path:  "type.yaml",
			input: hwHead + "  interfaces:\n    - dhcp:\n        mac: 52:54:00:00:00:01\n        lease_time: forever\n",
			line:  9,
			want:  []string{"type.yaml:9: Hardware m1: spec: cannot unmarshal !!str `forever` into int64"},
		},
		{
			name:  "lease time out of range",
			path:  "lease.yaml",
			input: hwHead + "  interfaces:\n    - dhcp:\n        mac: 52:54:00:00:00:01\n        lease_time: 30\n",
			line:  9,
			want:  []string{"lease.yaml:9: ", "spec.interfaces[0].dhcp.lease_time: 30 is out of range (want 60 to 31536000 seconds, or 0"},
		},
		{
			name:  "VLAN out of range",
			path:  "vlan.yaml",
			input: hwHead + "  interfaces:\n    - dhcp:\n        mac: 52:54:00:00:00:01\n        vlan_id: \"4095\"\n",
			line:  9,
			want:  []string{"vlan.yaml:9: ", "spec.interfaces[0].dhcp.vlan_id: \"4095\" is not a VLAN ID (want one number from 1 to 4094)"},
		},
		{
			name:  "IPv6 address",
			path:  "v6.yaml",
			input: hwHead + "  interfaces:\n    - dhcp:\n        mac: 52:54:00:00:00:01\n        ip: {address: \"fd00::5\", netmask: \"ffff::\"}\n",
			line:  9,
			want:  []string{"v6.yaml:9: ", "spec.interfaces[0].dhcp.ip.address: \"fd00::5\" is not an IPv4 address"},
		},
		{
			name:  "address without netmask",
			path:  "mask.yaml",
			input: hwHead + "  interfaces:\n    - dhcp:\n        mac: 52:54:00:00:00:01\n        ip:\n          address: 10.0.0.5\n",
			line:  9,
			want:  []string{"mask.yaml:9: ", "spec.interfaces[0].dhcp.ip.netmask: required with ip.address"},
		},
		{
			name:  "no interfaces",
			path:  "none.yaml",
			input: hwHead + "  disks: [{device: /dev/sda}]\n",
			line:  5,
			want:  []string{"none.yaml:5: Hardware m1: spec.interfaces: no interface with a dhcp.mac"},
		},
		{
			name: "template control structure",
			path: "if.yaml",
			input: `apiVersion: tinkerbell.org/v1alpha1
kind: Template
metadata: {name: t}
spec:
  data: |
    tasks:
      - actions:
          - name: a
            image: quay.io/tinkerbell/actions/image2disk:v1.0.0
            environment:
              {{- if .device_1 }}
              X: "1"
              {{- end }}
`,
			line: 11,
			want: []string{"if.yaml:11: Template t: spec.data: {{- if .device_1 }}: template control structures ({{if}}) cannot be converted"},
		},
		{
			name: "template action in an image",
			path: "image.yaml",
			input: `apiVersion: tinkerbell.org/v1alpha1
kind: Template
metadata: {name: t}
spec:
  data: |
    tasks:
      - actions:
          - name: a
            image: "{{ .image }}"
`,
			line: 9,
			want: []string{"image.yaml:9: Template t: spec.data tasks[0].actions[0].image: {{ .image }}: template actions in images cannot be converted"},
		},
		{
			name: "unclosed template action",
			path: "open.yaml",
			input: `apiVersion: tinkerbell.org/v1alpha1
kind: Template
metadata: {name: t}
spec:
  data: "tasks: [{actions: [{name: a, image: x/y, environment: {A: '{{ .a'}}]}]"
`,
			line: 5,
			want: []string{"open.yaml:5: Template t: spec.data: line 1 of spec.data: unclosed template action"},
		},
		{
			name:  "workflow without hardwareRef",
			path:  "wf.yaml",
			input: "apiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  templateRef: t\n",
			line:  4,
			want:  []string{"wf.yaml:4: Workflow w: spec.hardwareRef: required"},
		},
		{
			name:  "two objects with one gitmetal name",
			path:  "dup.yaml",
			input: hwHead + "  interfaces: [{dhcp: {mac: '52:54:00:00:00:01'}}]\n---\n" + strings.Replace(hwHead, "m1", "M1", 1) + "  interfaces: [{dhcp: {mac: '52:54:00:00:00:02'}}]\n",
			line:  11,
			want:  []string{"dup.yaml:11: Hardware M1: metadata.name: converts to hardware/imported/m1.cue, which document 1 also writes"},
		},
		{
			name:  "List item",
			path:  "list.yaml",
			input: "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: tinkerbell.org/v1alpha1\n    kind: Workflow\n    metadata: {name: w}\n    spec: {hardwareRef: h}\n",
			line:  7,
			want:  []string{"list.yaml:7: Workflow w: items[0].spec.templateRef: required"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			input := []byte(tt.input)
			if tt.input == "" {
				input = readFixture(t, strings.TrimPrefix(tt.path, "testdata/"))
			}
			r, err := Convert(tt.path, input)
			if err == nil {
				t.Fatalf("Convert succeeded with %d files, want an error", len(r.Files))
			}
			if len(r.Files) != 0 || len(r.Warnings) != 0 {
				t.Errorf("got a result with the error: %+v", r)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %T %v, want an *Error", err, err)
			}
			if e.File != tt.path || e.Line != tt.line {
				t.Errorf("error at %s:%d, want %s:%d (%v)", e.File, e.Line, tt.path, tt.line, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestConvertSkipsAndEmpty(t *testing.T) {
	tests := []struct {
		name, input, warning string
	}{
		{"other kinds", "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: bmc}\n", "in.yaml:1: Machine bmc: skipped: only tinkerbell.org/v1alpha1 Hardware, Template and Workflow are imported"},
		{"empty file", "", "in.yaml: no Tinkerbell objects found"},
		{"empty documents", "---\n---\n# nothing\n", "in.yaml: no Tinkerbell objects found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := Convert("in.yaml", []byte(tt.input))
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Files) != 0 {
				t.Errorf("got %d files, want none", len(r.Files))
			}
			if diff := cmp.Diff([]string{tt.warning}, r.Warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOptionsSite(t *testing.T) {
	t.Parallel()
	r, err := Options{Site: "ams1"}.Convert("testdata/hardware.yaml", readFixture(t, "hardware.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Files[0].Path, "hardware/ams1/sm01.cue"; got != want {
		t.Errorf("got path %s, want %s", got, want)
	}
	if got := cueValue(t, r.Files[0].Data, "hardware")["site"]; got != "ams1" {
		t.Errorf("got site %v, want ams1", got)
	}
	if _, err := (Options{Site: "Rack A"}).Convert("x.yaml", nil); err == nil {
		t.Error("site \"Rack A\" was accepted, want an error")
	}
}

func TestConvertIsDeterministic(t *testing.T) {
	t.Parallel()
	first := convertFixture(t, "multi.yaml")
	for range 20 {
		if diff := cmp.Diff(first, convertFixture(t, "multi.yaml")); diff != "" {
			t.Fatalf("two conversions differ (-first +later):\n%s", diff)
		}
	}
}

// FuzzConvert checks that any input converts to CUE files that parse, or
// fails with an *Error.
func FuzzConvert(f *testing.F) {
	for _, name := range append(fixtures(), "invalid.yaml") {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Convert("fuzz.yaml", data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %T %v, want an *Error", err, err)
			}
			return
		}
		for _, file := range r.Files {
			if _, err := parser.ParseFile(file.Path, file.Data); err != nil {
				t.Fatalf("%s does not parse: %v\n%s", file.Path, err, file.Data)
			}
		}
	})
}

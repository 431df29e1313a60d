package tinkerbell

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRewriteAction(t *testing.T) {
	tests := []struct {
		src, want string
		// note is a part of the one note wanted; "" wants none.
		note string
	}{
		{src: "{{.device_1}}", want: "{{.values.device_1}}"},
		{src: "{{ .device_1 }}", want: "{{ .values.device_1 }}"},
		{src: "{{- .device_1 -}}", want: "{{- .values.device_1 -}}"},
		{src: "{{ $.device_1 }}", want: "{{ $.values.device_1 }}"},
		{src: `{{ printf "%s-%d" .device_1 3 }}`, want: `{{ printf "%s-%d" .values.device_1 3 }}`},
		{src: "{{ index .Hardware.Disks 0 }}", want: "{{ (index .disks 0).device }}"},
		{src: "{{ index $.Hardware.Disks 1 }}", want: "{{ (index $.disks 1).device }}"},
		{src: "{{ formatPartition ( index .Hardware.Disks 0 ) 1 }}", want: "{{ formatPartition (index .disks 0).device 1 }}"},
		{src: "{{ index .Hardware.Disks 0 | printf \"%s\" }}", want: "{{ (index .disks 0).device | printf \"%s\" }}"},
		{src: "{{ len .Hardware.Disks }}", want: "{{ len .disks }}"},
		{src: "{{ .Hardware.Disks }}", want: "{{ .disks }}"},
		{src: "{{ .Hardware.UserData }}", want: "{{ .hardware.userData }}"},
		{src: "{{ .Hardware.VendorData }}", want: "{{ .hardware.vendorData }}"},
		{src: "{{ .Hardware.Metadata.Instance.OperatingSystem.Distro }}", want: "{{ .hardware.metadata.instance.operating_system.distro }}"},
		{src: "{{ .Hardware.Metadata.Facility.FacilityCode }}", want: "{{ .hardware.metadata.facility.facility_code }}"},
		{src: "{{ .hardware.spec.metadata.instance.id }}", want: "{{ .hardware.metadata.instance.id }}"},
		{src: "{{ .hardware.spec.userData }}", want: "{{ .hardware.userData }}"},
		{src: "{{ (index .hardware.spec.disks 0).device }}", want: "{{ (index .disks 0).device }}"},
		{src: "{{ .hardware.metadata.name }}", want: "{{ .hardware.name }}"},
		{src: "{{ .hardware.metadata.labels.rack }}", want: "{{ .hardware.labels.rack }}"},
		{src: "{{/* a comment */}}", want: "{{/* a comment */}}"},
		{src: "{{ 3 }}", want: "{{ 3 }}"},
		{src: "{{ .Hardware.Interfaces }}", want: "{{ .Hardware.Interfaces }}", note: "no clear equivalent of .Hardware.Interfaces"},
		{src: "{{ .Hardware.Metadata.Nonsense }}", want: "{{ .Hardware.Metadata.Nonsense }}", note: "no clear equivalent of .Hardware.Metadata.Nonsense"},
		{src: "{{ .hardware.spec.interfaces }}", want: "{{ .hardware.spec.interfaces }}", note: "no clear equivalent"},
		{src: "{{ .references.lvm }}", want: "{{ .references.lvm }}", note: "no clear equivalent of .references.lvm"},
		{src: "{{ . }}", want: "{{ . }}", note: ". is all of Tinkerbell's render data"},
		{src: "{{ toYaml .device_1 }}", want: "{{ toYaml .values.device_1 }}", note: "function toYaml does not exist in gitmetal templates"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			t.Parallel()
			got, notes, err := rewriteAction(tt.src)
			if err != nil {
				t.Fatalf("rewriteAction(%s): %v", tt.src, err)
			}
			if got != tt.want {
				t.Errorf("rewriteAction(%s) = %s, want %s", tt.src, got, tt.want)
			}
			checkWarning(t, notes, tt.note)
		})
	}
}

func TestRewriteActionErrors(t *testing.T) {
	tests := []struct{ src, want string }{
		{"{{ if .x }}", "template control structures ({{if}}) cannot be converted"},
		{"{{- range .Hardware.Disks }}", "({{range}}) cannot be converted"},
		{"{{ end }}", "({{end}}) cannot be converted"},
		{`{{ template "x" }}`, "({{template}}) cannot be converted"},
		{"{{ .x) }}", "invalid template action"},
		{"{{ }}", "empty template action"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			t.Parallel()
			_, _, err := rewriteAction(tt.src)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("rewriteAction(%s) error = %v, want one containing %q", tt.src, err, tt.want)
			}
		})
	}
}

func TestFindActions(t *testing.T) {
	tests := []struct {
		text string
		want []string
	}{
		{"no actions", nil},
		{"a {{.x}} b {{ .y }}", []string{"{{.x}}", "{{ .y }}"}},
		{`{{ printf "}}" .x }}`, []string{`{{ printf "}}" .x }}`}},
		{"{{ printf `}}` }}{{'}'}}", []string{"{{ printf `}}` }}", "{{'}'}}"}},
		{"{{- /* }} */ -}}x", []string{"{{- /* }} */ -}}"}},
		{"{{.a}}{{.b}}", []string{"{{.a}}", "{{.b}}"}},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			t.Parallel()
			spans, err := findActions(tt.text)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range spans {
				got = append(got, tt.text[s.start:s.end])
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("findActions (-want +got):\n%s", diff)
			}
		})
	}
	for _, bad := range []string{"{{ .x", "{{/* x }}", `{{ "}} }}`} {
		if _, err := findActions(bad); err == nil {
			t.Errorf("findActions(%q) succeeded, want an error", bad)
		}
	}
}

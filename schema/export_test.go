package schema

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildCue builds the cue command at the version in go.mod (a tool
// dependency of this module), so the comparison is with the same CUE.
func buildCue(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("go is not on PATH: cannot build the cue command")
		}
		t.Skip("go is not on PATH: cannot build the cue command")
	}
	dir := t.TempDir()
	cmd := exec.Command(goBin, "build", "-o", filepath.Join(dir, "cue"), "cuelang.org/go/cmd/cue")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cue: %v\n%s", err, out)
	}
	return dir
}

func writeFleet(t *testing.T, m map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range m {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestCueVetAgrees proves that plain `cue vet` with the exported schema
// gives the loader's verdict, file by file: on the examples, and on every
// per-file case of TestRules. (Rules across files and action names are the
// loader's alone; the export's vet.sh says so.)
func TestCueVetAgrees(t *testing.T) {
	t.Parallel()
	cueDir := buildCue(t)
	schemaDir := t.TempDir()
	if err := Export(schemaDir); err != nil {
		t.Fatal(err)
	}

	vet := func(t *testing.T, fleet string) (bool, string) {
		cmd := exec.Command("sh", filepath.Join(schemaDir, "vet.sh"), fleet)
		cmd.Env = append(os.Environ(), "PATH="+cueDir+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("vet.sh: %v", err)
		}
		return err == nil, string(out)
	}
	load := func(t *testing.T, fleet string) (bool, string) {
		_, err := newTestLoader(t).LoadDir(context.Background(), fleet)
		var es Errors
		if err != nil && !errors.As(err, &es) {
			t.Fatal(err)
		}
		return err == nil, es.Error()
	}

	cases := map[string]string{"examples": exampleFleet}
	for _, c := range []struct{ name, path, content string }{
		{"bad mac", "hardware/r/c.cue", "hardware: {name: \"c\", interfaces: [{mac: \"52:54:00:zz:00:01\"}]}\n"},
		{"missing name", "hardware/r/c.cue", "hardware: {interfaces: [{mac: \"52:54:00:00:00:01\"}]}\n"},
		{"unknown field", "hardware/r/c.cue", "hardware: {name: \"c\", interfaces: [{mac: \"52:54:00:00:00:01\"}], colour: 1}\n"},
		{"unknown top-level field", "hardware/r/c.cue", "hardware: {name: \"c\", interfaces: [{mac: \"52:54:00:00:00:01\"}]}\nhardwre: 1\n"},
		{"bad arch", "hardware/r/c.cue", "hardware: {name: \"c\", interfaces: [{mac: \"52:54:00:00:00:01\", arch: \"arm\"}]}\n"},
		{"lease zero", "hardware/r/c.cue", "hardware: {name: \"c\", interfaces: [{mac: \"52:54:00:00:00:01\", leaseTime: 0}]}\n"},
		{"ip without netmask", "hardware/r/c.cue", "hardware: {name: \"c\", interfaces: [{mac: \"52:54:00:00:00:01\", ip: \"10.0.0.1\"}]}\n"},
		{"ip with prefix and netmask", "hardware/r/c.cue", "hardware: {name: \"c\", interfaces: [{mac: \"52:54:00:00:00:01\", ip: \"10.0.0.1/24\", netmask: \"255.255.255.0\"}]}\n"},
		{"ip with netmask", "hardware/r/c.cue", "hardware: {name: \"c\", interfaces: [{mac: \"52:54:00:00:00:01\", ip: \"10.0.0.1\", netmask: \"255.255.255.0\"}]}\n"},
		{"url and script", "hardware/r/c.cue", "hardware: {name: \"c\", interfaces: [{mac: \"52:54:00:00:00:01\", netboot: ipxe: {url: \"http://x/y\", script: \"#!ipxe\"}}]}\n"},
		{"bad duration", "templates/t.cue", "template: {name: \"t\", timeout: \"soon\", actions: [{name: \"x\", uses: \"reboot\"}]}\n"},
		{"no actions", "templates/t.cue", "template: {name: \"t\", actions: []}\n"},
		{"bad policy", "workflows/w.cue", "workflow: {name: \"w\", hardware: \"h\", template: \"t\", policy: \"always\"}\n"},
		{"bad settings lease", "gitmetal.cue", "settings: {leaseTime: 0}\n"},
		{"syntax error", "hardware/r/c.cue", "hardware: {name: \"c\n"},
		{"yaml bad ip", "hardware/r/c.yaml", "hardware:\n  name: c\n  interfaces:\n    - mac: \"52:54:00:00:00:01\"\n      ip: 10.1.1.1/33\n"},
		{"yaml valid", "hardware/r/c.yaml", "hardware:\n  name: c\n  interfaces:\n    - mac: \"52:54:00:00:00:01\"\n"},
		{"json bad uefi", "hardware/r/c.json", `{"hardware": {"name": "c", "interfaces": [{"mac": "52:54:00:00:00:01", "uefi": "yes"}]}}`},
		{"json valid", "hardware/r/c.json", `{"hardware": {"name": "c", "interfaces": [{"mac": "52:54:00:00:00:01"}]}}`},
	} {
		cases[c.name] = writeFleet(t, map[string]string{c.path: c.content})
	}
	for name, fleet := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cueOK, cueOut := vet(t, fleet)
			loadOK, loadOut := load(t, fleet)
			if cueOK != loadOK {
				t.Errorf("cue vet valid=%v, gitmetal valid=%v\ncue vet:\n%s\ngitmetal:\n%s", cueOK, loadOK, cueOut, loadOut)
			}
		})
	}
	// The examples must pass both, not merely agree.
	if ok, out := vet(t, exampleFleet); !ok {
		t.Errorf("cue vet rejects the examples:\n%s", out)
	}
	if !strings.Contains(vetScript, "cue vet -c") {
		t.Error("vet.sh does not run cue vet -c")
	}
}

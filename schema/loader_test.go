package schema

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const exampleFleet = "../examples/fleet"

func newTestLoader(t testing.TB) *Loader {
	t.Helper()
	l, err := NewLoader(Config{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// files builds loader input from path → content pairs.
func files(m map[string]string) []File {
	var fs []File
	for p, c := range m {
		fs = append(fs, File{Path: p, Data: []byte(c)})
	}
	return fs
}

// issueStrings returns the issues of err as "file:line:col: field: message".
func issueStrings(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("got error %v (%T), want schema.Errors", err, err)
	}
	var out []string
	for _, i := range es {
		out = append(out, i.String())
	}
	return out
}

func TestExampleFleetIsValid(t *testing.T) {
	t.Parallel()
	f, err := newTestLoader(t).LoadDir(context.Background(), exampleFleet)
	if err != nil {
		t.Fatalf("examples/fleet: %v", err)
	}
	h, tp, w := f.Counts()
	if h < 4 || tp < 2 || w < 2 {
		t.Errorf("got %d hardware, %d templates, %d workflows; want at least 4, 2, 2", h, tp, w)
	}
	// What the examples promise a newcomer: each of these machines exists.
	arches := map[string]bool{}
	twoNICs := false
	for _, hw := range f.Hardware {
		for _, i := range hw.Interfaces {
			arches[i.Arch+"/"+map[bool]string{true: "uefi", false: "bios"}[i.UEFI]] = true
			if i.LeaseTime == 0 {
				t.Errorf("%s: interface %s has lease time 0", hw.Source.Path, i.MAC)
			}
		}
		twoNICs = twoNICs || len(hw.Interfaces) >= 2
	}
	for _, want := range []string{"x86_64/bios", "x86_64/uefi", "aarch64/uefi"} {
		if !arches[want] {
			t.Errorf("no example machine is %s", want)
		}
	}
	if !twoNICs {
		t.Error("no example machine has two NICs")
	}
	for name, w := range f.Workflows {
		if _, err := Render(f.Templates[w.Template], w, f.Hardware[w.Hardware]); err != nil {
			t.Errorf("workflow %s: %v", name, err)
		}
	}
}

// A minimal valid fleet the rule tests start from.
var baseFleet = map[string]string{
	"gitmetal.cue": `settings: {site: "dc1", leaseTime: 7200}`,
	"hardware/r1/a.cue": `hardware: {
	name: "a"
	interfaces: [{
		mac:      "52:54:00:00:00:0A"
		ip:       "10.0.0.10"
		netmask:  "255.255.255.0"
		hostname: "a"
	}]
	disks: [{device: "/dev/sda"}]
}
`,
	"hardware/r1/b.cue": `hardware: {
	name: "b"
	interfaces: [{mac: "52:54:00:00:00:0b", ip: "10.0.0.11/24", hostname: "b", leaseTime: 600}]
	disks: [{device: "/dev/nvme0n1"}]
}
`,
	"templates/os.cue": `template: {
	name: "os"
	actions: [{
		name: "stream"
		uses: "image2disk"
		env: {IMG_URL: "{{.values.image}}", DEST_DISK: "{{(index .disks 0).device}}"}
	}, {
		name: "reboot"
		uses: "reboot"
		background: true
	}]
}
`,
	"workflows/a.cue": `workflow: {
	name:     "a"
	hardware: "a"
	template: "os"
	values: image: "http://images/os.raw.gz"
}
`,
}

func withFiles(over map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range baseFleet {
		m[k] = v
	}
	for k, v := range over {
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

func TestLoadNormalisesAndDefaults(t *testing.T) {
	t.Parallel()
	f, err := newTestLoader(t).Load(context.Background(), files(baseFleet))
	if err != nil {
		t.Fatal(err)
	}
	a := f.Hardware["a"]
	got := a.Interfaces[0]
	if got.MAC != "52:54:00:00:00:0a" || got.IP != "10.0.0.10/24" || got.Netmask != "" {
		t.Errorf("got mac %q ip %q netmask %q, want 52:54:00:00:00:0a 10.0.0.10/24 and no netmask", got.MAC, got.IP, got.Netmask)
	}
	if got.LeaseTime != 7200 || a.Site != "dc1" {
		t.Errorf("got lease %d site %q, want the settings' 7200 and dc1", got.LeaseTime, a.Site)
	}
	if lt := f.Hardware["b"].Interfaces[0].LeaseTime; lt != 600 {
		t.Errorf("got lease %d for b, want its own 600", lt)
	}
	if !got.Netboot.AllowPXE || got.Arch != "x86_64" || got.UEFI {
		t.Errorf("got allowPXE %v arch %q uefi %v, want the defaults true, x86_64, false", got.Netboot.AllowPXE, got.Arch, got.UEFI)
	}
	if w := f.Workflows["a"]; w.Policy != PolicyOnChange {
		t.Errorf("got policy %q, want the default onChange", w.Policy)
	}
	if pos := a.Source.Pos("interfaces.0.mac"); pos.String() != "hardware/r1/a.cue:4:13" {
		t.Errorf("got mac position %s, want hardware/r1/a.cue:4:13", pos)
	}
}

func TestLoadWithoutSettingsUsesDefaultLease(t *testing.T) {
	t.Parallel()
	f, err := newTestLoader(t).Load(context.Background(), files(withFiles(map[string]string{"gitmetal.cue": ""})))
	if err != nil {
		t.Fatal(err)
	}
	if lt := f.Hardware["a"].Interfaces[0].LeaseTime; lt != DefaultLeaseTime {
		t.Errorf("got lease %d, want %d", lt, DefaultLeaseTime)
	}
}

// TestRules checks each validation rule's exact message and position.
func TestRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{{
		name:  "bad mac",
		files: map[string]string{"hardware/r1/c.cue": "hardware: {\n\tname: \"c\"\n\tinterfaces: [{mac: \"52:54:00:zz:00:01\"}]\n}\n"},
		want:  []string{`hardware/r1/c.cue:3:21: hardware.interfaces.0.mac: invalid value "52:54:00:zz:00:01" (want a MAC address of 6 hex octets such as 52:54:00:12:34:56)`},
	}, {
		name:  "missing required fields",
		files: map[string]string{"hardware/r1/c.cue": "hardware: {\n\tinterfaces: [{ip: \"10.0.0.99/24\"}]\n}\n"},
		want: []string{
			`hardware/r1/c.cue:1:11: hardware.name: field is required but not present`,
			`hardware/r1/c.cue:2:15: hardware.interfaces.0.mac: field is required but not present`,
		},
	}, {
		name:  "unknown field",
		files: map[string]string{"hardware/r1/c.cue": "hardware: {\n\tname: \"c\"\n\tinterfaces: [{mac: \"52:54:00:00:00:0c\"}]\n\tcolour: \"red\"\n}\n"},
		want:  []string{`hardware/r1/c.cue:4:2: hardware.colour: field not allowed`},
	}, {
		name:  "unknown top-level field",
		files: map[string]string{"hardware/r1/c.cue": "hardware: {\n\tname: \"c\"\n\tinterfaces: [{mac: \"52:54:00:00:00:0c\"}]\n}\nhardwre: {}\n"},
		want:  []string{`hardware/r1/c.cue:5:1: hardwre: unknown top-level field (allowed: hardware)`},
	}, {
		name:  "wrong kind for directory",
		files: map[string]string{"hardware/r1/c.cue": "template: {name: \"c\", actions: [{name: \"x\", uses: \"reboot\"}]}\n"},
		want: []string{
			`hardware/r1/c.cue:1:1: missing top-level field "hardware": a file under hardware/ holds hardware: {...}`,
			`hardware/r1/c.cue:1:1: template: unknown top-level field (allowed: hardware)`,
		},
	}, {
		name:  "disjunction lists allowed values",
		files: map[string]string{"hardware/r1/c.cue": "hardware: {\n\tname: \"c\"\n\tinterfaces: [{mac: \"52:54:00:00:00:0c\", arch: \"arm\"}]\n}\n"},
		want:  []string{`hardware/r1/c.cue:3:48: hardware.interfaces.0.arch: invalid value "arm" (allowed: "aarch64" | "x86_64")`},
	}, {
		name:  "lease time zero",
		files: map[string]string{"hardware/r1/c.cue": "hardware: {\n\tname: \"c\"\n\tinterfaces: [{mac: \"52:54:00:00:00:0c\", leaseTime: 0}]\n}\n"},
		want:  []string{`hardware/r1/c.cue:3:53: hardware.interfaces.0.leaseTime: invalid value 0 (out of bound >=60)`},
	}, {
		name:  "ip without netmask",
		files: map[string]string{"hardware/r1/c.cue": "hardware: {\n\tname: \"c\"\n\tinterfaces: [{mac: \"52:54:00:00:00:0c\", ip: \"10.0.0.12\"}]\n}\n"},
		want:  []string{`hardware/r1/c.cue:3:15: hardware.interfaces.0.netmask: field is required but not present`},
	}, {
		name:  "ip prefix and netmask",
		files: map[string]string{"hardware/r1/c.cue": "hardware: {\n\tname: \"c\"\n\tinterfaces: [{mac: \"52:54:00:00:00:0c\", ip: \"10.0.0.12/24\", netmask: \"255.255.255.0\"}]\n}\n"},
		want:  []string{`hardware/r1/c.cue:3:71: hardware.interfaces.0.netmask: netmask: not allowed when ip has a /prefix`},
	}, {
		name:  "bad netmask",
		files: map[string]string{"hardware/r1/c.cue": "hardware: {\n\tname: \"c\"\n\tinterfaces: [{mac: \"52:54:00:00:00:0c\", ip: \"10.0.0.12\", netmask: \"255.0.255.0\"}]\n}\n"},
		want:  []string{`hardware/r1/c.cue:3:68: hardware.interfaces.0.netmask: invalid value "255.0.255.0" (want a contiguous IPv4 netmask such as 255.255.255.0)`},
	}, {
		name:  "duplicate mac names both files",
		files: map[string]string{"hardware/r2/c.cue": "hardware: {\n\tname: \"c\"\n\tinterfaces: [{mac: \"52-54-00-00-00-0B\"}]\n}\n"},
		want:  []string{`hardware/r2/c.cue:3:21: hardware.interfaces.0.mac: MAC 52:54:00:00:00:0b is already used by hardware "b" (hardware/r1/b.cue:3:21)`},
	}, {
		name:  "duplicate ip",
		files: map[string]string{"hardware/r2/c.cue": "hardware: {\n\tname: \"c\"\n\tinterfaces: [{mac: \"52:54:00:00:00:0c\", ip: \"10.0.0.11/16\"}]\n}\n"},
		want:  []string{`hardware/r2/c.cue:3:46: hardware.interfaces.0.ip: IP address 10.0.0.11 is already used by hardware "b" (hardware/r1/b.cue:3:46)`},
	}, {
		name:  "duplicate hostname",
		files: map[string]string{"hardware/r2/c.cue": "hardware: {\n\tname: \"c\"\n\tinterfaces: [{mac: \"52:54:00:00:00:0c\", hostname: \"a\"}]\n}\n"},
		want:  []string{`hardware/r2/c.cue:3:52: hardware.interfaces.0.hostname: hostname a is already used by hardware "a" (hardware/r1/a.cue:7:13)`},
	}, {
		name:  "duplicate name",
		files: map[string]string{"hardware/r2/a.cue": "hardware: {\n\tname: \"a\"\n\tinterfaces: [{mac: \"52:54:00:00:00:0c\"}]\n}\n"},
		want:  []string{`hardware/r2/a.cue:2:8: hardware.name: hardware name "a" is already used by hardware/r1/a.cue:2:8`},
	}, {
		name:  "workflow names missing hardware and template",
		files: map[string]string{"workflows/a.cue": "workflow: {\n\tname: \"a\"\n\thardware: \"zz\"\n\ttemplate: \"nope\"\n}\n"},
		want: []string{
			`workflows/a.cue:3:12: workflow.hardware: no hardware named "zz"`,
			`workflows/a.cue:4:12: workflow.template: no template named "nope"`,
		},
	}, {
		name:  "unknown action",
		files: map[string]string{"templates/os.cue": "template: {\n\tname: \"os\"\n\tactions: [{name: \"x\", uses: \"imag2disk\"}]\n}\n"},
		want: []string{
			`templates/os.cue:3:30: template.actions.0.uses: unknown action "imag2disk" (allowed: image2disk, archive2disk, oci2disk, writefile, exec, kexec, reboot, or an OCI image reference such as ghcr.io/org/action:v1)`,
		},
	}, {
		name:  "oci image action is allowed",
		files: map[string]string{"templates/os.cue": "template: {\n\tname: \"os\"\n\tactions: [{name: \"x\", uses: \"quay.io/tinkerbell/actions/image2disk:v1.0.0\"}]\n}\n"},
	}, {
		name:  "template does not render with values",
		files: map[string]string{"workflows/a.cue": "workflow: {\n\tname: \"a\"\n\thardware: \"a\"\n\ttemplate: \"os\"\n\tvalues: img: \"x\"\n}\n"},
		want: []string{
			`workflows/a.cue:5:10: workflow.values: template "os" (templates/os.cue:2:8) does not render: action "stream" env.IMG_URL: template: :1:9: executing "" at <.values.image>: map has no entry for key "image"`,
		},
	}, {
		name: "bad duration and policy",
		files: map[string]string{
			"templates/t.cue": "template: {\n\tname: \"t\"\n\ttimeout: \"ten minutes\"\n\tactions: [{name: \"x\", uses: \"reboot\"}]\n}\n",
			"workflows/b.cue": "workflow: {\n\tname: \"b\"\n\thardware: \"b\"\n\ttemplate: \"t\"\n\tpolicy: \"always\"\n}\n",
		},
		want: []string{
			`templates/t.cue:3:11: template.timeout: invalid value "ten minutes" (allowed: int | whole seconds or a duration such as "90s", "10m", "1h30m")`,
			`workflows/b.cue:5:10: workflow.policy: invalid value "always" (allowed: "manual" | "onChange" | "once")`,
		},
	}, {
		name:  "syntax error",
		files: map[string]string{"hardware/r1/c.cue": "hardware: {\n\tname: \"c\n}\n"},
		want:  []string{`hardware/r1/c.cue:2:8: string literal not terminated`},
	}, {
		name:  "not utf-8",
		files: map[string]string{"hardware/r1/c.cue": "hardware: {\n\tname: \"\xff\"\n}\n"},
		want:  []string{`hardware/r1/c.cue:2:9: file is not valid UTF-8`},
	}, {
		name:  "yaml file",
		files: map[string]string{"hardware/r1/c.yaml": "hardware:\n  name: c\n  interfaces:\n    - mac: \"52:54:00:00:00:0c\"\n      ip: 10.1.1.1/33\n"},
		want:  []string{`hardware/r1/c.yaml:5:11: hardware.interfaces.0.ip: invalid value "10.1.1.1/33" (does not satisfy net.IPCIDR); invalid value "10.1.1.1/33" (want an IPv4 address with a prefix length such as 10.0.0.5/24)`},
	}, {
		name:  "json file",
		files: map[string]string{"hardware/r1/c.json": `{"hardware": {"name": "c", "interfaces": [{"mac": "52:54:00:00:00:0c", "uefi": "yes"}]}}`},
		want:  []string{`hardware/r1/c.json:1:80: hardware.interfaces.0.uefi: invalid value "yes" (allowed: bool)`},
	}, {
		name:  "valid yaml and json files",
		files: map[string]string{"hardware/r1/c.yaml": "hardware:\n  name: c\n  interfaces:\n    - mac: \"52:54:00:00:00:0c\"\n", "hardware/r1/d.json": `{"hardware": {"name": "d", "interfaces": [{"mac": "52:54:00:00:00:0d"}]}}`},
	}, {
		name:  "unsupported extension is ignored",
		files: map[string]string{"hardware/r1/README.md": "# not a machine"},
	}, {
		name:  "file too large",
		files: map[string]string{"hardware/r1/c.cue": "hardware: {name: \"c\"}\n//" + strings.Repeat("x", 1<<20) + "\n"},
		want:  []string{`hardware/r1/c.cue: file is 1048601 bytes, more than the limit of 1048576 bytes`},
	}, {
		name: "every bad file in one pass",
		files: map[string]string{
			"hardware/r1/c.cue": "hardware: {name: \"C\", interfaces: [{mac: \"52:54:00:00:00:0c\"}]}\n",
			"hardware/r1/d.cue": "hardware: {name: \"d\", interfaces: [{mac: \"52:54:00:00:00:0d\", vlan: 5000}]}\n",
		},
		want: []string{
			`hardware/r1/c.cue:1:18: hardware.name: invalid value "C" (want a name of lower-case letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most 63 characters)`,
			`hardware/r1/d.cue:1:69: hardware.interfaces.0.vlan: invalid value 5000 (out of bound <=4094)`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := newTestLoader(t).Load(context.Background(), files(withFiles(tt.files)))
			if diff := cmp.Diff(tt.want, issueStrings(t, err)); diff != "" {
				t.Errorf("issues (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCacheSkipsUnchangedFiles(t *testing.T) {
	t.Parallel()
	l := newTestLoader(t)
	ctx := context.Background()
	f1, err := l.Load(ctx, files(baseFleet))
	if err != nil {
		t.Fatal(err)
	}
	n := len(baseFleet)
	if s := l.Stats(); s.Evaluated != n {
		t.Fatalf("first load: evaluated %d files, want %d", s.Evaluated, n)
	}

	// The same content again: nothing is evaluated, every object is shared.
	f2, err := l.Load(ctx, files(baseFleet))
	if err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Evaluated != n || s.Cached != n {
		t.Errorf("second load: got %+v, want %d evaluated and %d cached", s, n, n)
	}
	if f1.Hardware["a"] != f2.Hardware["a"] || f1.Templates["os"] != f2.Templates["os"] {
		t.Error("unchanged objects were rebuilt, want them shared")
	}

	// One file changes: one evaluation, one new object.
	changed := withFiles(map[string]string{"hardware/r1/b.cue": strings.Replace(baseFleet["hardware/r1/b.cue"], "leaseTime: 600", "leaseTime: 900", 1)})
	f3, err := l.Load(ctx, files(changed))
	if err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Evaluated != n+1 {
		t.Errorf("third load: evaluated %d files in all, want %d", s.Evaluated, n+1)
	}
	if f3.Hardware["a"] != f2.Hardware["a"] {
		t.Error("hardware a did not change but was rebuilt")
	}
	if f3.Hardware["b"] == f2.Hardware["b"] || f3.Hardware["b"].Interfaces[0].LeaseTime != 900 {
		t.Error("hardware b changed but the old object was kept")
	}

	// Settings change: every machine is finished again, nothing re-evaluated.
	f4, err := l.Load(ctx, files(withFiles(map[string]string{"gitmetal.cue": `settings: {site: "dc2"}`})))
	if err != nil {
		t.Fatal(err)
	}
	if f4.Hardware["a"] == f3.Hardware["a"] || f4.Hardware["a"].Site != "dc2" {
		t.Errorf("got site %q, want dc2 on a rebuilt object", f4.Hardware["a"].Site)
	}

	// A file read through Open is read only when its blob is unknown.
	opened := 0
	fs := files(baseFleet)
	for i := range fs {
		data := fs[i].Data
		fs[i].Blob, fs[i].Data = BlobHash(data), nil
		fs[i].Open = func() ([]byte, error) { opened++; return data, nil }
	}
	if _, err := l.Load(ctx, fs); err != nil {
		t.Fatal(err)
	}
	if opened != 0 {
		t.Errorf("opened %d cached files, want 0", opened)
	}
}

func TestBlobHashMatchesGit(t *testing.T) {
	t.Parallel()
	// `printf 'hello\n' | git hash-object --stdin`
	if got, want := BlobHash([]byte("hello\n")), "ce013625030ba8dba906f756967f9e9ca394464a"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestKindOf(t *testing.T) {
	t.Parallel()
	for p, want := range map[string]Kind{
		"gitmetal.cue":               KindSettings,
		"hardware/r1/a.cue":          KindHardware,
		"hardware/a.yaml":            KindHardware,
		"templates/x.json":           KindTemplate,
		"workflows/deep/x.yml":       KindWorkflow,
		"hardware.cue":               KindUnknown,
		"hardware/README.md":         KindUnknown,
		"hardware/.hidden/a.cue":     KindUnknown,
		"cue.mod/module.cue":         KindUnknown,
		"templates/cue.mod/x.cue":    KindUnknown,
		"other/a.cue":                KindUnknown,
		filepath.ToSlash("hardware"): KindUnknown,
	} {
		if got := KindOf(p); got != want {
			t.Errorf("KindOf(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestRender(t *testing.T) {
	t.Parallel()
	f, err := newTestLoader(t).Load(context.Background(), files(baseFleet))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Render(f.Templates["os"], f.Workflows["a"], f.Hardware["a"])
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Actions[0].Env; got["IMG_URL"] != "http://images/os.raw.gz" || got["DEST_DISK"] != "/dev/sda" {
		t.Errorf("got env %v", got)
	}
	// The digest follows what the machine would run, not where it came from.
	w2 := *f.Workflows["a"]
	w2.Values = map[string]any{"image": "http://images/os-v2.raw.gz"}
	r2, err := Render(f.Templates["os"], &w2, f.Hardware["a"])
	if err != nil {
		t.Fatal(err)
	}
	if r2.Digest == r.Digest {
		t.Error("digest did not change with the image")
	}
	r3, _ := Render(f.Templates["os"], f.Workflows["a"], f.Hardware["a"])
	if r3.Digest != r.Digest {
		t.Error("digest is not stable")
	}
}

func TestFormatPartition(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		dev  string
		n    int
		want string
	}{
		{"/dev/sda", 1, "/dev/sda1"},
		{"/dev/nvme0n1", 2, "/dev/nvme0n1p2"},
		{"/dev/mmcblk0", 1, "/dev/mmcblk0p1"},
		{"/dev/disk/by-id/ata-X_123", 3, "/dev/disk/by-id/ata-X_123-part3"},
	} {
		if got := formatPartition(tt.dev, tt.n); got != tt.want {
			t.Errorf("formatPartition(%q, %d) = %q, want %q", tt.dev, tt.n, got, tt.want)
		}
	}
}

// TestClaimsFollowChanges: the incremental address check forgets the
// addresses of machines that changed, became invalid or went away.
func TestClaimsFollowChanges(t *testing.T) {
	t.Parallel()
	l := newTestLoader(t)
	ctx := context.Background()
	c := "hardware: {name: \"c\", interfaces: [{mac: \"52:54:00:00:00:0c\", ip: \"10.0.0.11/24\"}]}\n"
	_, err := l.Load(ctx, files(withFiles(map[string]string{"hardware/r2/c.cue": c})))
	if got := issueStrings(t, err); len(got) != 1 || !strings.Contains(got[0], "IP address 10.0.0.11 is already used") {
		t.Fatalf("got %q, want the duplicate address", got)
	}
	// b moves away from the address: c may have it.
	moved := strings.Replace(baseFleet["hardware/r1/b.cue"], "10.0.0.11/24", "10.0.0.12/24", 1)
	if _, err := l.Load(ctx, files(withFiles(map[string]string{"hardware/r2/c.cue": c, "hardware/r1/b.cue": moved}))); err != nil {
		t.Fatalf("after b moved: %v", err)
	}
	// b comes back while invalid: an invalid file claims nothing.
	invalidB := strings.Replace(baseFleet["hardware/r1/b.cue"], `name: "b"`, `name: "B"`, 1)
	_, err = l.Load(ctx, files(withFiles(map[string]string{"hardware/r2/c.cue": c, "hardware/r1/b.cue": invalidB})))
	if got := issueStrings(t, err); len(got) != 1 || !strings.Contains(got[0], `invalid value "B"`) {
		t.Fatalf("got %q, want only b's name", got)
	}
	// b removed, c takes its MAC too.
	c2 := strings.Replace(c, "52:54:00:00:00:0c", "52:54:00:00:00:0b", 1)
	if _, err := l.Load(ctx, files(withFiles(map[string]string{"hardware/r2/c.cue": c2, "hardware/r1/b.cue": ""}))); err != nil {
		t.Fatalf("after b was removed: %v", err)
	}
}

// TestFleetSite: a site's part of a fleet holds its machines (by their own
// site or the settings' default) and their workflows, and every template.
func TestFleetSite(t *testing.T) {
	t.Parallel()
	f, err := newTestLoader(t).Load(context.Background(), files(withFiles(map[string]string{
		"hardware/r1/b.cue": `hardware: {
	name: "b"
	site: "dc2"
	interfaces: [{mac: "52:54:00:00:00:0b", ip: "10.0.0.11/24", hostname: "b"}]
	disks: [{device: "/dev/sda"}]
}
`,
		"workflows/b.cue": `workflow: {name: "b", hardware: "b", template: "os", values: image: "http://images/os.raw.gz"}
`,
	})))
	if err != nil {
		t.Fatal(err)
	}
	names := func(f *Fleet) string {
		var out []string
		for n := range f.Hardware {
			out = append(out, "hw:"+n)
		}
		for n := range f.Workflows {
			out = append(out, "wf:"+n)
		}
		for n := range f.Templates {
			out = append(out, "tpl:"+n)
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	for site, want := range map[string]string{
		"dc1": "hw:a tpl:os wf:a",
		"dc2": "hw:b tpl:os wf:b",
		"dc3": "tpl:os",
	} {
		if got := names(f.Site(site)); got != want {
			t.Errorf("site %s: got %q, want %q", site, got, want)
		}
	}
	if got := names(f); got != "hw:a hw:b tpl:os wf:a wf:b" {
		t.Errorf("Site changed the fleet: %q", got)
	}
}

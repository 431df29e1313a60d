package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"unicode/utf8"

	"github.com/gitmetal/gitmetal/schema"
)

// The floor: the fleet written as JSON, decoded with encoding/json into Go
// structs that mirror the schema (closed: DisallowUnknownFields) and
// validated by hand with the rules of schema/cue, in parallel. It is the
// fastest honest way to do gitmetal's job without CUE, and the yardstick
// for the loader's cold time. It reads a file per object like the loader,
// and checks what the loader checks across files: unique names, MACs, IPs
// and hostnames, workflow references, and that templates render.

// maxFileSize is the loader's default per-file limit.
const maxFileSize = 1 << 20

// floorFleet is a fleet the floor loaded, by name.
type floorFleet struct {
	settings  *settingsDoc
	hardware  map[string]*hardwareDoc
	templates map[string]*templateDoc
	workflows map[string]*workflowDoc
	// paths of the objects, for issues that name two files.
	paths map[any]string
}

// counts returns how many hardware, templates and workflows f holds.
func (f *floorFleet) counts() [3]int {
	return [3]int{len(f.hardware), len(f.templates), len(f.workflows)}
}

// floorFile is one file of the fleet and what checking it found.
type floorFile struct {
	path   string // slash-separated, relative to the fleet root
	kind   schema.Kind
	obj    any // *hardwareDoc, ...; nil when the file is invalid
	issues []string
}

// loadFloor loads the JSON fleet in dir on workers goroutines. The issues
// say what is invalid; the error is for failures to read the directory.
func loadFloor(ctx context.Context, dir string, workers int) (*floorFleet, []string, error) {
	files, err := listJSON(dir)
	if err != nil {
		return nil, nil, err
	}
	if err := parallel(ctx, len(files), workers, func(i int) {
		checkFile(dir, &files[i])
	}); err != nil {
		return nil, nil, err
	}
	f, issues := assemble(files)
	issues = append(issues, checkAddresses(f)...)
	issues = append(issues, checkReferences(f)...)
	rendered, err := checkRenders(ctx, f, workers)
	if err != nil {
		return nil, nil, err
	}
	return f, append(issues, rendered...), nil
}

// listJSON lists the JSON files of the fleet in dir with their kind.
func listJSON(dir string) ([]floorFile, error) {
	var files []floorFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if k := jsonKind(filepath.ToSlash(rel)); k != schema.KindUnknown {
			files = append(files, floorFile{path: filepath.ToSlash(rel), kind: k})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list fleet: %w", err)
	}
	return files, nil
}

// jsonKind is schema.KindOf for a JSON fleet, whose settings file is
// gitmetal.json.
func jsonKind(rel string) schema.Kind {
	if path.Ext(rel) != ".json" {
		return schema.KindUnknown
	}
	if rel == "gitmetal.json" {
		return schema.KindSettings
	}
	return schema.KindOf(rel)
}

// checkFile reads, decodes and validates one file, recording the result in f.
func checkFile(dir string, f *floorFile) {
	data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.path)))
	switch {
	case err != nil:
		f.issues = []string{f.path + ": read: " + err.Error()}
		return
	case len(data) > maxFileSize:
		f.issues = []string{fmt.Sprintf("%s: %d bytes, larger than the limit of %d", f.path, len(data), maxFileSize)}
		return
	case !utf8.Valid(data):
		f.issues = []string{f.path + ": not UTF-8"}
		return
	}
	v := newIssues(f.path)
	switch f.kind {
	case schema.KindHardware:
		var doc struct {
			Hardware *hardwareDoc `json:"hardware"`
		}
		if decodeStrict(v, data, &doc) && v.required("hardware", doc.Hardware != nil) {
			validateHardware(v, doc.Hardware)
			f.obj = doc.Hardware
		}
	case schema.KindTemplate:
		var doc struct {
			Template *templateDoc `json:"template"`
		}
		if decodeStrict(v, data, &doc) && v.required("template", doc.Template != nil) {
			validateTemplate(v, doc.Template)
			f.obj = doc.Template
		}
	case schema.KindWorkflow:
		var doc struct {
			Workflow *workflowDoc `json:"workflow"`
		}
		if decodeStrict(v, data, &doc) && v.required("workflow", doc.Workflow != nil) {
			validateWorkflow(v, doc.Workflow)
			f.obj = doc.Workflow
		}
	case schema.KindSettings:
		var doc struct {
			Settings *settingsDoc `json:"settings"`
		}
		if decodeStrict(v, data, &doc) && v.required("settings", doc.Settings != nil) {
			validateSettings(v, doc.Settings)
			f.obj = doc.Settings
		}
	}
	if len(v.list) > 0 {
		f.obj = nil
	}
	f.issues = v.list
}

// decodeStrict decodes data into doc, refusing unknown fields and trailing
// data, and reports whether it succeeded.
func decodeStrict(v *issues, data []byte, doc any) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(doc); err != nil {
		v.add("", err.Error())
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		v.add("", "data after the top-level value")
		return false
	}
	return true
}

// assemble gathers the valid objects of files by name and reports the
// issues of the files and names used twice.
func assemble(files []floorFile) (*floorFleet, []string) {
	f := &floorFleet{
		hardware:  make(map[string]*hardwareDoc, len(files)),
		templates: map[string]*templateDoc{},
		workflows: map[string]*workflowDoc{},
		paths:     make(map[any]string, len(files)),
	}
	var out []string
	for _, file := range files {
		out = append(out, file.issues...)
		if file.obj == nil {
			continue
		}
		f.paths[file.obj] = file.path
		switch o := file.obj.(type) {
		case *hardwareDoc:
			out = addNamed(out, f, f.hardware, file.path, o.Name, o)
		case *templateDoc:
			out = addNamed(out, f, f.templates, file.path, o.Name, o)
		case *workflowDoc:
			out = addNamed(out, f, f.workflows, file.path, o.Name, o)
		case *settingsDoc:
			f.settings = o
		}
	}
	return f, out
}

// addNamed adds obj to m unless its name is taken.
func addNamed[T any](out []string, f *floorFleet, m map[string]*T, path, name string, obj *T) []string {
	if prev, ok := m[name]; ok {
		return append(out, fmt.Sprintf("%s: name %q is already used by %s", path, name, f.paths[prev]))
	}
	m[name] = obj
	return out
}

// checkAddresses reports a MAC, IP address or hostname two interfaces share.
func checkAddresses(f *floorFleet) []string {
	var (
		out   []string
		macs  = make(map[string]string, len(f.hardware))
		ips   = make(map[netip.Addr]string, len(f.hardware))
		hosts = make(map[string]string, len(f.hardware))
	)
	// Path order, so that the first file keeps the key as in the loader.
	names := make([]string, 0, len(f.hardware))
	for n := range f.hardware {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		return strings.Compare(f.paths[f.hardware[a]], f.paths[f.hardware[b]])
	})
	for _, name := range names {
		h := f.hardware[name]
		for _, i := range h.Interfaces {
			out = claim(out, macs, strings.ReplaceAll(strings.ToLower(i.MAC), "-", ":"), name, "MAC")
			if i.IP != nil {
				out = claim(out, ips, addrOf(*i.IP), name, "IP address")
			}
			if i.Hostname != nil {
				out = claim(out, hosts, *i.Hostname, name, "hostname")
			}
		}
	}
	return out
}

// addrOf returns the address of "a.b.c.d" or "a.b.c.d/n".
func addrOf(ip string) netip.Addr {
	if p, err := netip.ParsePrefix(ip); err == nil {
		return p.Addr()
	}
	a, _ := netip.ParseAddr(ip) // validated before
	return a
}

// claim gives key to machine unless another machine has it.
func claim[K comparable](out []string, owners map[K]string, key K, machine, what string) []string {
	if prev, ok := owners[key]; ok {
		return append(out, fmt.Sprintf("hardware %q: %s %v is already used by hardware %q", machine, what, key, prev))
	}
	owners[key] = machine
	return out
}

// checkReferences reports workflows naming missing hardware or templates.
func checkReferences(f *floorFleet) []string {
	var out []string
	for name, w := range f.workflows {
		if f.hardware[w.Hardware] == nil {
			out = append(out, fmt.Sprintf("workflow %q: no hardware named %q", name, w.Hardware))
		}
		if f.templates[w.Template] == nil {
			out = append(out, fmt.Sprintf("workflow %q: no template named %q", name, w.Template))
		}
	}
	return out
}

// parallel calls fn(i) for every i in [0, n) on at most workers goroutines.
// It stops handing out work when ctx is done and returns ctx's error.
func parallel(ctx context.Context, n, workers int, fn func(i int)) error {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range min(max(workers, 1), n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
	return ctx.Err()
}

// compiledTemplate is a template's text parsed once for all its workflows.
type compiledTemplate []*template.Template

// compileTemplate parses every env value and arg of t as the loader's
// renderer does (missingkey=error, formatPartition).
func compileTemplate(t *templateDoc) (compiledTemplate, error) {
	var texts []string
	for _, a := range t.Actions {
		for _, s := range append([]stepDoc{a.stepDoc}, a.OnFailure...) {
			for _, e := range s.Env {
				texts = append(texts, e)
			}
			texts = append(texts, s.Args...)
		}
	}
	for _, e := range t.Env {
		texts = append(texts, e)
	}
	funcs := template.FuncMap{"formatPartition": formatPartition}
	out := make(compiledTemplate, 0, len(texts))
	for _, s := range texts {
		if !strings.Contains(s, "{{") {
			continue
		}
		p, err := template.New("").Option("missingkey=error").Funcs(funcs).Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// formatPartition names partition n of a disk device.
func formatPartition(dev string, n int) string {
	switch {
	case strings.HasPrefix(dev, "/dev/disk/"):
		return dev + "-part" + strconv.Itoa(n)
	case dev != "" && dev[len(dev)-1] >= '0' && dev[len(dev)-1] <= '9':
		return dev + "p" + strconv.Itoa(n)
	}
	return dev + strconv.Itoa(n)
}

// checkRenders reports workflows whose template does not render with their
// values and machine, checking workflows in parallel.
func checkRenders(ctx context.Context, f *floorFleet, workers int) ([]string, error) {
	compiled := make(map[string]compiledTemplate, len(f.templates))
	var out []string
	for name, t := range f.templates {
		c, err := compileTemplate(t)
		if err != nil {
			out = append(out, fmt.Sprintf("template %q: %v", name, err))
			continue
		}
		compiled[name] = c
	}
	wfs := make([]*workflowDoc, 0, len(f.workflows))
	for _, w := range f.workflows {
		if f.hardware[w.Hardware] != nil && compiled[w.Template] != nil {
			wfs = append(wfs, w)
		}
	}
	errs := make([]error, len(wfs))
	err := parallel(ctx, len(wfs), workers, func(i int) {
		w := wfs[i]
		errs[i] = render(compiled[w.Template], w, f.hardware[w.Hardware])
	})
	for i, e := range errs {
		if e != nil {
			out = append(out, fmt.Sprintf("workflow %q: template %q does not render: %v", wfs[i].Name, wfs[i].Template, e))
		}
	}
	return out, err
}

// render executes every text of c with the data the loader's renderer
// gives: the machine as JSON, its disks and the workflow's values.
func render(c compiledTemplate, w *workflowDoc, h *hardwareDoc) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	var hw map[string]any
	if err := json.Unmarshal(b, &hw); err != nil {
		return err
	}
	disks, _ := hw["disks"].([]any)
	values := w.Values
	if values == nil {
		values = map[string]any{}
	}
	data := map[string]any{"hardware": hw, "disks": disks, "values": values}
	var buf bytes.Buffer
	for _, t := range c {
		buf.Reset()
		if err := t.Execute(&buf, data); err != nil {
			return err
		}
	}
	return nil
}

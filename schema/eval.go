package schema

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"
	cuejson "cuelang.org/go/encoding/json"
	cueyaml "cuelang.org/go/encoding/yaml"
)

//go:embed cue/*.cue
var cueFS embed.FS

// Sources returns the CUE schema of one kind of file as one self-contained
// file: the shared definitions followed by the kind's root. Plain `cue vet`
// gives the same verdict with it as the loader (see Export).
func Sources(k Kind) ([]byte, error) {
	defs, err := cueFS.ReadFile("cue/defs.cue")
	if err != nil {
		return nil, err
	}
	root, err := cueFS.ReadFile("cue/" + k.String() + ".cue")
	if err != nil {
		return nil, fmt.Errorf("no schema for kind %s: %w", k, err)
	}
	return append(append(defs, '\n'), root...), nil
}

// kinds are the kinds with a schema.
var kinds = [...]Kind{KindHardware, KindTemplate, KindWorkflow, KindSettings}

// compiled is the schema compiled in one cue.Context.
type compiled struct {
	ctx   *cue.Context
	roots [KindSettings + 1]cue.Value
}

func compile() (*compiled, error) {
	c := &compiled{ctx: cuecontext.New()}
	for _, k := range kinds {
		src, err := Sources(k)
		if err != nil {
			return nil, err
		}
		v := c.ctx.CompileBytes(src, cue.Filename("gitmetal/"+k.String()+".cue"))
		if err := v.Err(); err != nil {
			return nil, fmt.Errorf("compile %s schema: %w", k, err)
		}
		c.roots[k] = v
	}
	return c, nil
}

// evaluator validates files one at a time. It is not safe for concurrent
// use: each loader worker owns one.
type evaluator struct {
	c            *compiled
	seen         int
	recycleAfter int
	maxSize      int
	help         helpTable
}

func newEvaluator(recycleAfter, maxSize int, help helpTable) (*evaluator, error) {
	c, err := compile()
	if err != nil {
		return nil, err
	}
	return &evaluator{c: c, recycleAfter: recycleAfter, maxSize: maxSize, help: help}, nil
}

// decoded is the result of validating one file's content: the object
// without anything that depends on its path or on other files, or the
// file's issues (positions without the file name).
type decoded struct {
	obj    any // *Hardware, *Template, *Workflow or *Settings
	fields map[string]lineCol
	issues []Issue
	// name is the object's name as written, when it could be read from an
	// invalid file: references to it are not reported again.
	name string
}

// eval validates one file of kind k. It never panics on input: a panic in
// the CUE evaluator becomes an issue.
func (e *evaluator) eval(k Kind, name string, data []byte) (d *decoded) {
	if e.seen >= e.recycleAfter {
		// A cue.Context keeps memory for every file it has evaluated.
		c, err := compile()
		if err == nil {
			e.c, e.seen = c, 0
		}
	}
	e.seen++
	defer func() {
		if r := recover(); r != nil {
			d = &decoded{issues: []Issue{{Position: Position{File: name}, Message: fmt.Sprintf("internal error evaluating file: %v", r)}}}
			e.seen = e.recycleAfter // start afresh: the context may be broken
		}
	}()
	return e.evalLocked(k, name, data)
}

func (e *evaluator) evalLocked(k Kind, name string, data []byte) *decoded {
	fail := func(line, col int, field, format string, args ...any) *decoded {
		return &decoded{issues: []Issue{{Position: Position{File: name, Line: line, Column: col}, Field: field, Message: fmt.Sprintf(format, args...)}}}
	}
	if len(data) > e.maxSize {
		return fail(0, 0, "", "file is %d bytes, more than the limit of %d bytes", len(data), e.maxSize)
	}
	if !utf8.Valid(data) {
		line, col := firstInvalidUTF8(data)
		return fail(line, col, "", "file is not valid UTF-8")
	}

	var (
		v   cue.Value
		err error
		top []Issue // problems with the top-level fields
	)
	switch ext := strings.ToLower(path.Ext(name)); ext {
	case ".cue":
		var f *ast.File
		if f, err = parser.ParseFile(name, data); err == nil {
			f.Decls, top = checkTopLevel(k, name, f.Decls)
			v = e.c.ctx.BuildFile(f)
		}
	case ".yaml", ".yml":
		var f *ast.File
		if f, err = cueyaml.Extract(name, data); err == nil {
			f.Decls, top = checkTopLevel(k, name, f.Decls)
			v = e.c.ctx.BuildFile(f)
		}
	case ".json":
		var x ast.Expr
		if x, err = cuejson.Extract(name, data); err == nil {
			s, ok := x.(*ast.StructLit)
			if !ok {
				return fail(1, 1, "", "want a JSON object with one field %q", k.String())
			}
			s.Elts, top = checkTopLevel(k, name, s.Elts)
			v = e.c.ctx.BuildExpr(x)
		}
	default:
		return fail(0, 0, "", "unsupported file type %q (allowed: .cue, .yaml, .yml, .json)", ext)
	}
	if err == nil {
		err = v.Err()
	}
	if err != nil {
		return &decoded{issues: append(top, cueIssues(err, name, v, e.help)...)}
	}
	kindPath := cue.MakePath(cue.Str(k.String()))
	objName, _ := v.LookupPath(cue.MakePath(cue.Str(k.String()), cue.Str("name"))).String()
	if top != nil && !v.LookupPath(kindPath).Exists() {
		return &decoded{issues: top, name: objName}
	}

	u := e.c.roots[k].LookupPath(kindPath).Unify(v.LookupPath(kindPath))
	if err := u.Validate(cue.Concrete(true)); err != nil {
		return &decoded{issues: append(top, cueIssues(err, name, v, e.help)...), name: objName}
	}
	if top != nil {
		return &decoded{issues: top, name: objName}
	}
	obj, err := decodeKind(k, u)
	if err != nil {
		return fail(1, 1, k.String(), "%v", err)
	}
	return &decoded{obj: obj, fields: fieldPositions(k, obj, v.LookupPath(cue.MakePath(cue.Str(k.String()))))}
}

// checkTopLevel makes sure a file holds exactly one top-level field named
// after its kind. It returns the declarations without the stray fields, so
// that the kind's value is still checked, and an issue for each: CUE itself
// would report a stray field at the schema's position, this names the
// user's line.
func checkTopLevel(k Kind, name string, decls []ast.Decl) ([]ast.Decl, []Issue) {
	var issues []Issue
	found := false
	kept := decls[:0:0]
	for _, d := range decls {
		f, ok := d.(*ast.Field)
		if !ok {
			kept = append(kept, d)
			continue
		}
		label, _, err := ast.LabelName(f.Label)
		if err != nil || label != k.String() {
			pos := f.Label.Pos()
			issues = append(issues, Issue{
				Position: Position{File: name, Line: pos.Line(), Column: pos.Column()},
				Field:    label,
				Message:  fmt.Sprintf("unknown top-level field (allowed: %s)", k),
			})
			continue
		}
		found = true
		kept = append(kept, d)
	}
	if !found {
		issues = append(issues, Issue{
			Position: Position{File: name, Line: 1, Column: 1},
			Message:  fmt.Sprintf("missing top-level field %q: a file under %s holds %s: {...}", k.String(), dirOf(k), k),
		})
	}
	return kept, issues
}

func firstInvalidUTF8(b []byte) (line, col int) {
	line, col = 1, 1
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size <= 1 {
			return line, col
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		b = b[size:]
	}
	return line, col
}

// decodeKind turns a validated value into its Go type and normalises it.
func decodeKind(k Kind, v cue.Value) (any, error) {
	b, err := v.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var obj any
	switch k {
	case KindHardware:
		obj = new(Hardware)
	case KindTemplate:
		obj = new(Template)
	case KindWorkflow:
		obj = new(Workflow)
	case KindSettings:
		obj = new(Settings)
	default:
		return nil, fmt.Errorf("unknown kind %d", k)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields() // the schema and the Go types must agree
	if err := dec.Decode(obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k, err)
	}
	if h, ok := obj.(*Hardware); ok {
		if err := normaliseHardware(h); err != nil {
			return nil, err
		}
	}
	return obj, nil
}

// normaliseHardware puts MACs in lower-case colon form and folds a netmask
// into the address's prefix.
func normaliseHardware(h *Hardware) error {
	for n := range h.Interfaces {
		i := &h.Interfaces[n]
		i.MAC = NormalizeMAC(i.MAC)
		if i.IP == "" || strings.Contains(i.IP, "/") {
			if i.IP != "" {
				p, err := netip.ParsePrefix(i.IP)
				if err != nil {
					return fmt.Errorf("interfaces.%d.ip: %w", n, err)
				}
				i.IP = p.String()
			}
			continue
		}
		mask := i.Netmask
		m, err := netip.ParseAddr(mask)
		if err != nil {
			return fmt.Errorf("interfaces.%d.netmask: %w", n, err)
		}
		a, err := netip.ParseAddr(i.IP)
		if err != nil {
			return fmt.Errorf("interfaces.%d.ip: %w", n, err)
		}
		bits := 0
		for _, b := range m.As4() {
			for ; b&0x80 != 0; b <<= 1 {
				bits++
			}
		}
		i.IP, i.Netmask = netip.PrefixFrom(a, bits).String(), ""
	}
	return nil
}

// NormalizeMAC returns a MAC address in lower-case colon form.
func NormalizeMAC(mac string) string {
	return strings.ReplaceAll(strings.ToLower(mac), "-", ":")
}

// fieldPositions records where the fields that cross-file rules report on
// are written in the user's file.
func fieldPositions(k Kind, obj any, user cue.Value) map[string]lineCol {
	m := map[string]lineCol{}
	add := func(p string) {
		if pos := valuePos(user.LookupPath(cuePath(p))); pos.IsValid() {
			m[p] = lineCol{int32(pos.Line()), int32(pos.Column())}
		}
	}
	add("name")
	switch o := obj.(type) {
	case *Hardware:
		for n := range o.Interfaces {
			for _, f := range [...]string{"mac", "ip", "hostname"} {
				add("interfaces." + strconv.Itoa(n) + "." + f)
			}
		}
	case *Template:
		for n, a := range o.Actions {
			add("actions." + strconv.Itoa(n) + ".uses")
			for f := range a.OnFailure {
				add("actions." + strconv.Itoa(n) + ".onFailure." + strconv.Itoa(f) + ".uses")
			}
		}
	case *Workflow:
		add("hardware")
		add("template")
		add("values")
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// cuePath turns a dotted field path as CUE prints it in errors
// ("hardware.interfaces.0.mac") into a cue.Path.
func cuePath(dotted string) cue.Path {
	parts := strings.Split(dotted, ".")
	sels := make([]cue.Selector, 0, len(parts))
	for _, p := range parts {
		if n, err := strconv.Atoi(p); err == nil && n >= 0 {
			sels = append(sels, cue.Index(n))
		} else {
			sels = append(sels, cue.Str(p))
		}
	}
	return cue.MakePath(sels...)
}

// valuePos returns where a field's value is written (CUE's own errors point
// there too), or the field's position when the value has no source.
func valuePos(v cue.Value) token.Pos {
	if src := v.Source(); src != nil {
		if f, ok := src.(*ast.Field); ok {
			return f.Value.Pos()
		}
		if p := src.Pos(); p.IsValid() {
			return p
		}
	}
	return v.Pos()
}

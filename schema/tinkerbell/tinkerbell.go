// Package tinkerbell converts Tinkerbell manifests (tinkerbell.org/v1alpha1
// Hardware, Template and Workflow, as multi-document YAML or JSON, or a
// Kubernetes List of them) into gitmetal repository files. It is what
// `gitmetal import tinkerbell FILE...` runs.
//
// The conversion keeps the meaning of a manifest, not its letter:
//   - an omitted or zero lease_time is left out, so gitmetal's default
//     applies (Tinkerbell handed out 0-second leases);
//   - a Template's tasks are flattened into one list of actions, each task's
//     environment under each of its actions' own; Tinkerbell's action images
//     become gitmetal's built-in actions where one exists (image2disk,
//     oci2disk, archive2disk, writefile, cexec → exec, kexec, reboot);
//   - template text is rewritten from Tinkerbell's render data (hardwareMap
//     keys, .Hardware, .hardware) to gitmetal's (.values, .disks, .hardware)
//     where the mapping is clear, and kept with a warning where it is not;
//   - a Workflow that already succeeded in Tinkerbell is imported suspended,
//     so that importing a provisioned fleet does not re-install it.
//
// Whatever cannot be carried over is reported as a warning, never dropped
// in silence; input that cannot be converted is an *Error naming the file,
// line and field. The package only converts bytes to bytes: it reads and
// writes no files and prints nothing. The files it returns are meant to
// pass gitmetal's validation as they are; the tests check that with the
// schema package's loader.
package tinkerbell

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/gitmetal/gitmetal/schema"
)

// APIVersion is the only Tinkerbell API version Convert reads.
const APIVersion = "tinkerbell.org/v1alpha1"

// File is one gitmetal repository file.
type File struct {
	// Path is slash-separated and relative to the fleet root:
	// hardware/<site>/<name>.cue, templates/<name>.cue or
	// workflows/<name>.cue.
	Path string
	// Data is the file's CUE text.
	Data []byte
}

// Result is what one input file converts to.
type Result struct {
	// Files are in the order of the documents they come from.
	Files []File
	// Warnings say what was not carried over, or changed on the way, each
	// prefixed with the input's file:line.
	Warnings []string
}

// Error is a document that cannot be converted.
type Error struct {
	File string
	// Line is 1-based; 0 when unknown.
	Line int
	// Doc is the 1-based index of the YAML document in the file.
	Doc int
	// Object is the Tinkerbell object, e.g. "Hardware sm01"; empty when
	// the document could not be read as one.
	Object string
	// Field is the path of the offending field, e.g.
	// "spec.interfaces[0].dhcp.mac"; empty for the whole document.
	Field string
	Err   error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Line == 0 && e.Doc > 0 {
		b.WriteString("document " + strconv.Itoa(e.Doc) + ": ")
	}
	if e.Object != "" {
		b.WriteString(e.Object + ": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Options tune a conversion. The zero value is ready to use.
type Options struct {
	// Site, when set, is written as the site of every imported machine
	// and names its directory, hardware/<Site>/. Without it machines go
	// to hardware/imported/ and take the repository's site.
	Site string
}

// Convert converts the Tinkerbell manifests in data, read from path (used
// only in messages and file headers), with the zero Options.
func Convert(path string, data []byte) (Result, error) {
	return Options{}.Convert(path, data)
}

// Convert converts the Tinkerbell manifests in data, read from path (used
// only in messages and file headers). Documents of other kinds are skipped
// with a warning. A Hardware, Template or Workflow of another API version,
// invalid YAML, or a field gitmetal cannot represent is an *Error, and then
// the Result is empty: an import is all or nothing per input file. An
// invalid Site is a plain error.
//
// Output paths are unique within one call; a caller converting several
// files must check that two of them do not write the same path.
func (o Options) Convert(path string, data []byte) (Result, error) {
	if o.Site != "" && !schema.ValidName(o.Site) {
		return Result{}, fmt.Errorf("site %q: want lower-case letters, digits, '-', '_' and '.', at most 63 characters", o.Site)
	}
	c := &converter{path: path, site: o.Site, written: map[string]int{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for n := 1; ; n++ {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			line, yerr := splitYAMLError(err)
			return Result{}, &Error{File: path, Line: line, Doc: n, Err: fmt.Errorf("invalid yaml: %w", yerr)}
		}
		if len(doc.Content) == 0 || doc.Content[0].Tag == "!!null" {
			continue // an empty document, e.g. after a trailing ---
		}
		if err := c.document(n, doc.Content[0], ""); err != nil {
			return Result{}, err
		}
		c.flush()
	}
	if len(c.res.Files) == 0 && len(c.res.Warnings) == 0 {
		c.res.Warnings = append(c.res.Warnings, path+": no Tinkerbell objects found")
	}
	return c.res, nil
}

// converter holds the state of one Convert call.
type converter struct {
	path string
	site string
	res  Result
	// warnings holds the current document's warnings until flush.
	warnings []warning
	// written maps an output path to the document that produced it.
	written map[string]int
}

// object is one Kubernetes object being converted.
type object struct {
	doc  int
	root *yaml.Node
	// prefix is the object's path within its document: "items[2]." for a
	// List item, "" otherwise.
	prefix string
	kind   string
	name   string
}

func (o *object) label() string {
	if o.name == "" {
		return o.kind
	}
	return o.kind + " " + o.name
}

// errorf returns an *Error for field (relative to the object) with the
// line of the field, or of its nearest written parent.
func (c *converter) errorf(o *object, field, format string, args ...any) error {
	return &Error{
		File:   c.path,
		Line:   lineOf(o.root, field),
		Doc:    o.doc,
		Object: o.label(),
		Field:  o.prefix + field,
		Err:    fmt.Errorf(format, args...),
	}
}

// wrap is errorf for an error to wrap.
func (c *converter) wrap(o *object, field string, err error) error {
	return &Error{File: c.path, Line: lineOf(o.root, field), Doc: o.doc, Object: o.label(), Field: o.prefix + field, Err: err}
}

// warnf adds a warning about field (relative to the object; "" for the
// object itself).
func (c *converter) warnf(o *object, field, format string, args ...any) {
	c.warnAt(lineOf(o.root, field), o, field, fmt.Sprintf(format, args...))
}

func (c *converter) warnAt(line int, o *object, field, msg string) {
	var b strings.Builder
	b.WriteString(c.path)
	if line > 0 {
		b.WriteString(":" + strconv.Itoa(line))
	} else {
		b.WriteString(": document " + strconv.Itoa(o.doc))
	}
	b.WriteString(": " + o.label() + ": ")
	if field != "" {
		b.WriteString(o.prefix + field + ": ")
	}
	b.WriteString(msg)
	c.warnings = append(c.warnings, warning{line, b.String()})
}

type warning struct {
	line int
	text string
}

// flush adds the current document's warnings to the result in the order
// of their lines, once each.
func (c *converter) flush() {
	slices.SortStableFunc(c.warnings, func(a, b warning) int { return cmp.Compare(a.line, b.line) })
	for _, w := range c.warnings {
		if !slices.Contains(c.res.Warnings, w.text) {
			c.res.Warnings = append(c.res.Warnings, w.text)
		}
	}
	c.warnings = c.warnings[:0]
}

// document converts one YAML document (or one item of a List).
func (c *converter) document(doc int, root *yaml.Node, prefix string) error {
	o := &object{doc: doc, root: root, prefix: prefix}
	if root.Kind != yaml.MappingNode {
		return &Error{File: c.path, Line: root.Line, Doc: doc, Field: strings.TrimSuffix(prefix, "."),
			Err: errors.New("not a Kubernetes object: want a mapping with apiVersion and kind")}
	}
	apiVersion, kind := scalar(lookup(root, "apiVersion")), scalar(lookup(root, "kind"))
	meta := lookup(root, "metadata")
	o.kind, o.name = kind, scalar(lookup(meta, "name"))
	if apiVersion == "" || kind == "" {
		return &Error{File: c.path, Line: root.Line, Doc: doc, Field: strings.TrimSuffix(prefix, "."),
			Err: errors.New("not a Kubernetes object: apiVersion and kind are required")}
	}
	if items := lookup(root, "items"); strings.HasSuffix(kind, "List") && items != nil {
		if items.Kind != yaml.SequenceNode {
			return c.errorf(o, "items", "want a list")
		}
		for n, item := range items.Content {
			if err := c.document(doc, item, prefix+"items["+strconv.Itoa(n)+"]."); err != nil {
				return err
			}
		}
		return nil
	}
	switch kind {
	case "Hardware", "Template", "Workflow":
	default:
		c.warnf(o, "", "skipped: only %s Hardware, Template and Workflow are imported", APIVersion)
		return nil
	}
	if apiVersion != APIVersion {
		return c.errorf(o, "apiVersion", "unsupported apiVersion %q (want %s)", apiVersion, APIVersion)
	}
	if o.name == "" {
		return c.errorf(o, "metadata.name", "required")
	}
	for n := 0; n+1 < len(root.Content); n += 2 {
		switch k := root.Content[n].Value; k {
		case "apiVersion", "kind", "metadata", "spec", "status":
		default:
			c.warnAt(root.Content[n].Line, o, k, "not imported: unknown field")
		}
	}

	var (
		f   outFile
		err error
	)
	switch kind {
	case "Hardware":
		f, err = c.hardware(o, meta)
	case "Template":
		f, err = c.template(o)
	case "Workflow":
		f, err = c.workflow(o)
	}
	if err != nil {
		return err
	}
	if prev, ok := c.written[f.path]; ok {
		return c.errorf(o, "metadata.name", "converts to %s, which document %d also writes", f.path, prev)
	}
	c.written[f.path] = doc
	header := fmt.Sprintf("Imported from Tinkerbell %s %s (%s).", kind, o.name, c.path)
	data, err := encode(f.kind, f.value, append([]string{header}, f.notes...))
	if err != nil {
		return c.wrap(o, "", fmt.Errorf("encode %s: %w", f.kind, err))
	}
	c.res.Files = append(c.res.Files, File{Path: f.path, Data: data})
	return nil
}

// outFile is a converted object before encoding.
type outFile struct {
	kind  string // the top-level field: hardware, template, workflow
	path  string
	value any // marshalled with encoding/json
	// notes are paragraphs for the file's header comment.
	notes []string
}

// gitmetalName turns a Kubernetes object name into a gitmetal #Name:
// lower-case, characters outside [-a-z0-9_.] replaced by '-', at most 63
// characters, starting and ending with a letter or digit. It is "" when
// nothing is left. Workflows' references go through it too, so they keep
// naming the converted objects.
func gitmetalName(s string) string {
	b := []byte(strings.ToLower(s))
	for i, r := range b {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			b[i] = '-'
		}
	}
	alnum := func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }
	out := strings.TrimFunc(string(b), alnum)
	if len(out) > 63 {
		out = strings.TrimRightFunc(out[:63], alnum)
	}
	return out
}

// objectName returns the gitmetal name for the object's metadata.name,
// warning when it had to change.
func (c *converter) objectName(o *object) (string, error) {
	n := gitmetalName(o.name)
	if n == "" {
		return "", c.errorf(o, "metadata.name", "%q has no letters or digits to make a gitmetal name of", o.name)
	}
	if n != o.name {
		c.warnf(o, "metadata.name", "renamed to %q: gitmetal names are lower-case letters, digits, '-', '_' and '.', at most 63 characters", n)
	}
	return n, nil
}

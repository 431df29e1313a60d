package tinkerbell

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// lookup returns the value of key in a mapping node, or nil.
func lookup(n *yaml.Node, key string) *yaml.Node {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return resolve(n.Content[i+1])
		}
	}
	return nil
}

// resolve follows an alias.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// scalar returns a scalar node's value, or "".
func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return ""
	}
	return n.Value
}

// pathRE matches one step of a field path: a name, then any [index]es.
var pathRE = regexp.MustCompile(`^([^.\[]*)((?:\[\d+\])*)$`)

// lineOf returns the line of the field at path ("spec.interfaces[0].mac")
// under root, or of the deepest part of the path that exists.
func lineOf(root *yaml.Node, path string) int {
	n := resolve(root)
	if n == nil {
		return 0
	}
	line := n.Line
	if path == "" {
		return line
	}
	for _, step := range strings.Split(path, ".") {
		m := pathRE.FindStringSubmatch(step)
		if m == nil {
			return line
		}
		if m[1] != "" {
			key := keyNode(n, m[1])
			if key == nil {
				return line
			}
			line, n = key.Line, lookup(n, m[1])
		}
		for _, idx := range strings.Split(strings.Trim(m[2], "[]"), "][") {
			if idx == "" {
				continue
			}
			i, _ := strconv.Atoi(idx)
			if n == nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
				return line
			}
			n = resolve(n.Content[i])
			line = n.Line
		}
	}
	return line
}

// keyNode returns the key node of key in a mapping node, or nil.
func keyNode(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i]
		}
	}
	return nil
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// splitYAMLError returns the line a yaml.v3 error names, and the error
// with its message stripped of "yaml: line N:", which the *Error that
// carries it prints in its own place.
func splitYAMLError(err error) (int, error) {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return line, &yamlError{msg: m[2], err: err}
	}
	return 0, &yamlError{msg: strings.TrimPrefix(msg, "yaml: "), err: err}
}

// yamlError is a yaml.v3 error with another message.
type yamlError struct {
	msg string
	err error
}

func (e *yamlError) Error() string { return e.msg }
func (e *yamlError) Unwrap() error { return e.err }

// unknownFields calls report for every mapping key under n that no field
// of t (through yaml struct tags, slices, pointers and maps) declares.
// yaml.Node and interface fields hold anything.
func unknownFields(n *yaml.Node, t reflect.Type, path string, report func(line int, path string)) {
	n = resolve(n)
	if n == nil {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[yaml.Node]() {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields[name] = f.Type
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			p := k
			if path != "" {
				p = path + "." + k
			}
			ft, ok := fields[k]
			if !ok {
				report(n.Content[i].Line, p)
				continue
			}
			unknownFields(n.Content[i+1], ft, p, report)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, e := range n.Content {
			unknownFields(e, t.Elem(), path+"["+strconv.Itoa(i)+"]", report)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			unknownFields(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value, report)
		}
	}
}

// toJSONValue returns the value of n as encoding/json marshals it, keeping
// scalars as written where JSON can hold them: timestamps stay strings,
// integers of any size stay exact.
func toJSONValue(n *yaml.Node) (any, error) {
	n = resolve(n)
	if n == nil {
		return nil, nil
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return toJSONValue(n.Content[0])
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, e := range n.Content {
			v, err := toJSONValue(e)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		if err := mergeInto(out, n); err != nil {
			return nil, err
		}
		return out, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, fmt.Errorf("line %d: %w", n.Line, err)
			}
			return b, nil
		case "!!int":
			s := strings.ReplaceAll(n.Value, "_", "")
			if i, err := strconv.ParseInt(s, 0, 64); err == nil {
				return json.Number(strconv.FormatInt(i, 10)), nil
			}
			if u, err := strconv.ParseUint(strings.TrimPrefix(s, "+"), 0, 64); err == nil {
				return json.Number(strconv.FormatUint(u, 10)), nil
			}
			return nil, fmt.Errorf("line %d: integer %s is too large", n.Line, n.Value)
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return nil, fmt.Errorf("line %d: %w", n.Line, err)
			}
			if math.IsInf(f, 0) || math.IsNaN(f) {
				return nil, fmt.Errorf("line %d: %s cannot be written as a number in CUE or JSON; quote it", n.Line, n.Value)
			}
			return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
		}
		return n.Value, nil // strings, timestamps, binary as written
	}
	return nil, fmt.Errorf("line %d: unexpected yaml node", n.Line)
}

// mergeInto adds the pairs of mapping n to out, honouring merge keys (<<):
// merged pairs first, so that the mapping's own keys win.
func mergeInto(out map[string]any, n *yaml.Node) error {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if k.ShortTag() != "!!merge" {
			continue
		}
		srcs := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			srcs = v.Content
		}
		for _, s := range srcs {
			if s = resolve(s); s.Kind == yaml.MappingNode {
				if err := mergeInto(out, s); err != nil {
					return err
				}
			}
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if k.ShortTag() == "!!merge" {
			continue
		}
		val, err := toJSONValue(v)
		if err != nil {
			return err
		}
		out[k.Value] = val
	}
	return nil
}

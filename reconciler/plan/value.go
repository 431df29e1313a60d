package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Values longer than these are shown as a digest: a plan is read in a PR
// comment, where a 4 KiB cloud-config is noise and the diff is in git anyway.
const (
	maxText = 256 // characters of a single-line string (a URL fits)
	maxJSON = 240 // characters of a JSON rendering
)

// text renders a string field: itself when short and on one line, else a
// digest and line count.
func text(s string) string {
	if len(s) <= maxText && !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return digest(s) + ", " + plural(lineCount(s), "line")
}

// value renders any field: text for strings, decimal for numbers, JSON for
// structures, "" for unset (nil, empty slice or map).
func value(v any) string {
	switch x := v.(type) {
	case string:
		return text(x)
	case int:
		return strconv.Itoa(x)
	case bool:
		return strconv.FormatBool(x)
	case nil:
		return ""
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
		if rv.IsNil() || (rv.Kind() != reflect.Pointer && rv.Kind() != reflect.Interface && rv.Len() == 0) {
			return ""
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		// Fleet values come from JSON-compatible CUE; this is unreachable
		// for a validated fleet, and a plan still shows that it differs.
		return fmt.Sprintf("%v", v)
	}
	if len(b) > maxJSON {
		return digest(string(b)) + ", " + plural(len(b), "byte")
	}
	return string(b)
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:6])
}

func lineCount(s string) int {
	if s == "" {
		return 0
	}
	return strings.Count(strings.TrimSuffix(s, "\n"), "\n") + 1
}

// lineDelta says how many lines a text change added and removed, counting
// lines as a multiset (a moved line is no change). It is linear in the
// size, unlike a real diff, and the reviewer has git for the positions.
func lineDelta(old, cur string) string {
	if !(len(old) > maxText || strings.ContainsAny(old, "\r\n") ||
		len(cur) > maxText || strings.ContainsAny(cur, "\r\n")) {
		return "" // both shown whole
	}
	counts := map[string]int{}
	for _, l := range lines(old) {
		counts[l]++
	}
	added := 0
	for _, l := range lines(cur) {
		if counts[l] > 0 {
			counts[l]--
			continue
		}
		added++
	}
	removed := 0
	for _, n := range counts {
		removed += n
	}
	return fmt.Sprintf("+%d -%d lines", added, removed)
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// sshKey renders an SSH public key by its type, the tail of its key
// material and its comment: enough to tell keys apart, short enough to read.
func sshKey(k string) string {
	f := strings.Fields(k)
	if len(f) < 2 {
		return text(k)
	}
	material := f[1]
	if len(material) > 8 {
		material = "…" + material[len(material)-8:]
	}
	out := f[0] + " " + material
	if len(f) > 2 {
		out += " " + strings.Join(f[2:], " ")
	}
	return text(out)
}

// changes collects field changes.
type changes []FieldChange

// add records a change of the field at path when old and cur render
// differently.
func (c *changes) add(path string, old, cur any) {
	o, n := value(old), value(cur)
	if o == n {
		return
	}
	fc := FieldChange{Field: path, Old: o, New: n}
	os, ok1 := old.(string)
	ns, ok2 := cur.(string)
	if ok1 || ok2 {
		fc.Detail = lineDelta(os, ns)
	}
	*c = append(*c, fc)
}

// addMap records a change per key of two maps, keys sorted.
func addMap[V any](c *changes, path string, old, cur map[string]V) {
	for _, k := range unionKeys(old, cur) {
		var o, n any
		if v, ok := old[k]; ok {
			o = v
		}
		if v, ok := cur[k]; ok {
			n = v
		}
		c.add(path+quoteKey(k), o, n)
	}
}

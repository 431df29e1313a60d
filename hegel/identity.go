package hegel

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/gitmetal/gitmetal/schema"
)

// instanceID returns the machine's instance ID: metadata.instance.id when
// the record has one (Tinkerbell's Equinix-shaped metadata), else "i-" and
// 17 hex digits of SHA-256 of the name, EC2's form. Both are stable across
// revisions, restarts and daemons, which cloud-init relies on: a new
// instance ID makes it run its once-per-instance modules again.
func instanceID(h *schema.Hardware) string {
	if id, ok := lookupString(h.Metadata, "instance", "id"); ok && segment(id) {
		return id
	}
	sum := sha256.Sum256([]byte("gitmetal-instance:" + h.Name))
	return "i-" + hex.EncodeToString(sum[:])[:17]
}

// hostname returns the caller's host name: the calling interface's
// hostname, else the first interface hostname, else metadata
// instance.hostname, else the machine's name; qualified with the
// interface's domain when it has one and the name has no dot, as EC2's
// hostname and local-hostname are full names.
func hostname(c caller) string {
	if c.ifc.Hostname != "" {
		return fqdn(c.ifc.Hostname, c.ifc.Domain)
	}
	for i := range c.hw.Interfaces {
		if h := c.hw.Interfaces[i].Hostname; h != "" {
			return fqdn(h, c.hw.Interfaces[i].Domain)
		}
	}
	if h, ok := lookupString(c.hw.Metadata, "instance", "hostname"); ok && h != "" {
		return fqdn(h, c.ifc.Domain)
	}
	return fqdn(c.hw.Name, c.ifc.Domain)
}

func fqdn(host, domain string) string {
	if domain == "" || strings.Contains(host, ".") {
		return host
	}
	return host + "." + strings.TrimSuffix(domain, ".")
}

// publicIPv4 returns the machine's public IPv4 address when its metadata
// declares one (Tinkerbell's instance.network.addresses[] or
// instance.ips[] entry with public: true), else "": like an EC2 instance
// without a public address, the machine then has no public-ipv4.
func publicIPv4(c caller) string {
	for _, path := range [][]string{{"instance", "network", "addresses"}, {"instance", "ips"}} {
		v, ok := lookup(c.hw.Metadata, path...)
		if !ok {
			continue
		}
		list, _ := v.([]any)
		for _, e := range list {
			m, _ := e.(map[string]any)
			if pub, _ := m["public"].(bool); !pub {
				continue
			}
			s, _ := m["address"].(string)
			if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
				return a.String()
			}
		}
	}
	return ""
}

// lookup walks the free-form metadata along path.
func lookup(m map[string]any, path ...string) (any, bool) {
	var v any = m
	for _, k := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func lookupString(m map[string]any, path ...string) (string, bool) {
	v, ok := lookup(m, path...)
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	return s, ok
}

// freeform resolves segs in the machine's free-form metadata: objects are
// directories of their keys, lists of scalars are leaves with one element
// a line, other lists are directories of their indexes, and scalars are
// leaves. Keys that cannot be a path segment, and nulls, are not in the
// tree.
func freeform(m map[string]any, segs []string) (node, bool) {
	var v any = m
	for _, s := range segs {
		switch x := v.(type) {
		case map[string]any:
			if !segment(s) {
				return node{}, false
			}
			var ok bool
			if v, ok = x[s]; !ok {
				return node{}, false
			}
		case []any:
			if scalars(x) {
				return node{}, false
			}
			i, ok := index(s, len(x))
			if !ok {
				return node{}, false
			}
			v = x[i]
		default:
			return node{}, false
		}
	}
	switch x := v.(type) {
	case nil:
		return node{}, false
	case map[string]any:
		return listing(freeformItems(x))
	case []any:
		if scalars(x) {
			lines := make([]string, len(x))
			for i, e := range x {
				lines[i] = scalar(e)
			}
			return leaf(strings.Join(lines, "\n"))
		}
		items := make([]string, 0, len(x))
		for i, e := range x {
			if e != nil {
				items = append(items, strconv.Itoa(i)+dirSuffix(e))
			}
		}
		return listing(items)
	}
	return leaf(scalar(v))
}

// freeformItems lists an object of the free-form metadata, sorted.
func freeformItems(m map[string]any) []string {
	items := make([]string, 0, len(m))
	for k, v := range m {
		if segment(k) && v != nil {
			items = append(items, k+dirSuffix(v))
		}
	}
	slices.Sort(items)
	return items
}

func dirSuffix(v any) string {
	switch x := v.(type) {
	case map[string]any:
		return "/"
	case []any:
		if !scalars(x) {
			return "/"
		}
	}
	return ""
}

// scalars reports whether a list holds no objects, lists or nulls.
func scalars(l []any) bool {
	for _, e := range l {
		switch e.(type) {
		case map[string]any, []any, nil:
			return false
		}
	}
	return true
}

// scalar formats a scalar as a leaf: strings as they are, numbers and
// booleans as JSON writes them.
func scalar(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

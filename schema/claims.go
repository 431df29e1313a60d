package schema

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// claims tracks which machines use which MAC, IP address and hostname,
// across loads. A load updates only the machines whose objects changed, so
// the check costs what the change costs, not what the fleet costs.
type claims struct {
	// byPath is the machine object each file's claims were made for.
	byPath map[string]*Hardware
	// owners lists, for each claimed key, the claims on it (usually one).
	owners map[claimKey][]claim
	// conflicts are the keys with more than one claim.
	conflicts map[claimKey]struct{}
}

type claimKey struct {
	what  string // "MAC", "IP address", "hostname"
	value string
}

type claim struct {
	h     *Hardware
	field string // e.g. "interfaces.0.mac"
}

func newClaims() *claims {
	return &claims{
		byPath:    map[string]*Hardware{},
		owners:    map[claimKey][]claim{},
		conflicts: map[claimKey]struct{}{},
	}
}

// set records that the file at path now defines h (nil: no valid machine).
func (c *claims) set(path string, h *Hardware) {
	old := c.byPath[path]
	if old == h {
		return
	}
	if old != nil {
		c.each(old, func(k claimKey, _ string) { c.drop(k, old) })
		delete(c.byPath, path)
	}
	if h != nil {
		c.byPath[path] = h
		c.each(h, func(k claimKey, field string) {
			c.owners[k] = append(c.owners[k], claim{h, field})
			if len(c.owners[k]) > 1 {
				c.conflicts[k] = struct{}{}
			}
		})
	}
}

func (c *claims) each(h *Hardware, f func(claimKey, string)) {
	for n := range h.Interfaces {
		i := &h.Interfaces[n]
		prefix := "interfaces." + strconv.Itoa(n) + "."
		f(claimKey{"MAC", i.MAC}, prefix+"mac")
		if a := i.Addr(); a != "" {
			f(claimKey{"IP address", a}, prefix+"ip")
		}
		if i.Hostname != "" {
			f(claimKey{"hostname", strings.ToLower(i.Hostname)}, prefix+"hostname")
		}
	}
}

func (c *claims) drop(k claimKey, h *Hardware) {
	cs := slices.DeleteFunc(c.owners[k], func(cl claim) bool { return cl.h == h })
	switch len(cs) {
	case 0:
		delete(c.owners, k)
	default:
		c.owners[k] = cs
	}
	if len(cs) < 2 {
		delete(c.conflicts, k)
	}
}

// issues reports every claim on a key but the first in path order (and,
// within one file, field order), naming where the first is.
func (c *claims) issues() []Issue {
	var issues []Issue
	for k := range c.conflicts {
		cs := slices.Clone(c.owners[k])
		slices.SortFunc(cs, func(a, b claim) int {
			if a.h.Source.Path != b.h.Source.Path {
				return strings.Compare(a.h.Source.Path, b.h.Source.Path)
			}
			return strings.Compare(a.field, b.field)
		})
		first := cs[0]
		for _, cl := range cs[1:] {
			issues = append(issues, Issue{
				Position: cl.h.Source.Pos(cl.field),
				Field:    "hardware." + cl.field,
				Message: fmt.Sprintf("%s %s is already used by hardware %q (%s)",
					k.what, k.value, first.h.Name, first.h.Source.Pos(first.field)),
			})
		}
	}
	return issues
}

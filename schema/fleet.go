package schema

import "regexp"

// Fleet is a validated repository: the whole desired state at one revision.
// A Fleet and everything it points to are read-only once built; the loader
// shares unchanged objects between successive fleets, so callers compare
// objects by pointer to find what changed.
type Fleet struct {
	Settings  *Settings
	Hardware  map[string]*Hardware // by name
	Templates map[string]*Template // by name
	Workflows map[string]*Workflow // by name
}

// Counts returns how many objects of each kind the fleet holds.
func (f *Fleet) Counts() (hardware, templates, workflows int) {
	return len(f.Hardware), len(f.Templates), len(f.Workflows)
}

// Site returns the part of f that the daemon of site serves: the machines
// whose Site is site and the workflows that run on them, with every
// template and the settings. The objects are f's, shared. The whole
// repository was validated first, so a MAC or an address used at two
// sites is still an error.
func (f *Fleet) Site(site string) *Fleet {
	out := &Fleet{
		Settings:  f.Settings,
		Hardware:  make(map[string]*Hardware),
		Templates: f.Templates,
		Workflows: make(map[string]*Workflow),
	}
	for name, h := range f.Hardware {
		if h.Site == site {
			out.Hardware[name] = h
		}
	}
	for name, w := range f.Workflows {
		if _, ok := out.Hardware[w.Hardware]; ok {
			out.Workflows[name] = w
		}
	}
	return out
}

// nameRE is the schema's #Name: machine, template, workflow and site
// names.
var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$`)

// ValidName reports whether s is a valid name of a machine, template,
// workflow or site (the schema's #Name): lower-case letters, digits, '-',
// '_' and '.', starting and ending with a letter or digit, at most 63
// characters.
func ValidName(s string) bool { return nameRE.MatchString(s) }

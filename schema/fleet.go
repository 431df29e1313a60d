package schema

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

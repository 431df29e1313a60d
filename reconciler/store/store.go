// Package store is gitmetal's desired-state store: the Fleet of the revision
// the reconciler last applied, held in go-memdb and indexed for the lookups
// the boot services and the metadata server make on every packet and
// request — hardware by name, MAC, IP and hostname, workflows by name and by
// machine, templates by name — plus the repository settings and which
// revision is applied.
//
// The store holds what the repository says and nothing else. It must not
// hold runtime state: runs, leases and what a machine last booted belong to
// the runner. It must not read clocks or make random IDs: applying the same
// revisions in the same order gives the same store, indexes included. One
// Apply is one write transaction, so a reader sees one whole revision, never
// a mix of two.
//
// Values the accessors return are shared with the store and with the
// loader's Fleet: they are read-only, and a caller that needs to change one
// copies it first.
//
// Accessors take a memdb.WatchSet first; nil means the caller will not
// block. The channels an accessor adds close when a later Apply changes
// what it returned (an Apply that hands the store the same objects closes
// none), so a caller blocks with ws.WatchCtx(ctx) and then reads again.
// Each table also has a modify index (Index) that grows with every Apply
// that changes the table; a long-poller compares it with the index of its
// last answer. BlockingQuery runs that loop.
package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-memdb"

	"github.com/gitmetal/gitmetal/schema"
)

// Store is the desired-state store. It is safe for concurrent use; Applies
// are serialised by memdb's writer lock and never block readers.
type Store struct {
	db *memdb.MemDB

	// held is the fleet whose objects the tables hold, by name: Apply
	// plans against it with map lookups instead of scanning the tables.
	// Only Apply reads or writes it, under memdb's writer lock.
	held *schema.Fleet

	// generation is the index of the last Apply that changed something,
	// set after its commit: see Generation.
	generation atomic.Uint64
}

// Revision describes the applied revision.
type Revision struct {
	// ID is the commit hash, or "dir:<digest>" for a plain directory.
	ID string
	// Index is the store index of the Apply that wrote this revision.
	Index uint64
	// How many objects of each kind the revision holds.
	Hardware, Templates, Workflows int
}

// Changes counts what an Apply did to one kind of object. An object is
// changed when the Fleet holds a different pointer for its name than the
// store did.
type Changes struct {
	Added, Changed, Removed int
}

// Any reports whether anything was added, changed or removed.
func (c Changes) Any() bool { return c.Added+c.Changed+c.Removed > 0 }

// ApplyResult says what an Apply changed.
type ApplyResult struct {
	// Index is the store index after the Apply: one more than the highest
	// table index before it, or that index unchanged when the Apply
	// changed nothing.
	Index                          uint64
	Hardware, Templates, Workflows Changes
	// Settings is true when the settings were added, replaced or removed.
	Settings bool
}

// ConflictError is returned by Apply when two machines claim the same MAC,
// IP or hostname. The loader rejects such fleets; the store checks again
// because a unique memdb index would silently let the later machine take the
// key from the earlier.
type ConflictError struct {
	Index    string // IndexMAC, IndexIP or IndexHostname
	Key      string // as the inserted machine spells it
	Hardware string // the machine being inserted
	Owner    string // the machine that already has Key
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("hardware %q: %s %s already belongs to hardware %q", e.Hardware, e.Index, e.Key, e.Owner)
}

// New returns an empty store: no hardware, templates or workflows, default
// settings, the zero Revision and every table index 0.
func New() (*Store, error) {
	db, err := memdb.NewMemDB(dbSchema())
	if err != nil {
		return nil, fmt.Errorf("create state store: %w", err)
	}
	return &Store{db: db}, nil
}

// Apply makes f, the fleet at revision rev, the store's content in one write
// transaction. Objects not in f are removed; objects whose pointer differs
// from the stored one are inserted; objects with the same pointer are left
// alone, so watchers of them do not wake. Each table that changed, and the
// revision table, get the index one more than the highest before. An Apply
// that changes nothing (same rev, same objects) writes nothing and returns
// the current index. On error the store is unchanged.
//
// f and its objects become shared with readers and must not be modified
// afterwards.
func (s *Store) Apply(rev string, f *schema.Fleet) (ApplyResult, error) {
	if rev == "" {
		return ApplyResult{}, errors.New("apply: empty revision")
	}
	if f == nil {
		return ApplyResult{}, fmt.Errorf("apply revision %s: nil fleet", rev)
	}
	res, err := s.apply(rev, f)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("apply revision %s: %w", rev, err)
	}
	return res, nil
}

func (s *Store) apply(rev string, f *schema.Fleet) (ApplyResult, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()

	prev, err := maxIndexTxn(txn)
	if err != nil {
		return ApplyResult{}, err
	}

	// Plan every table before writing any, so that the plans compare f with
	// the store as it was.
	var held schema.Fleet
	if s.held != nil {
		held = *s.held
	}
	hw, err := planTable(txn, TableHardware, held.Hardware, f.Hardware, hardwareName)
	if err != nil {
		return ApplyResult{}, err
	}
	tp, err := planTable(txn, TableTemplates, held.Templates, f.Templates, templateName)
	if err != nil {
		return ApplyResult{}, err
	}
	wf, err := planTable(txn, TableWorkflows, held.Workflows, f.Workflows, workflowName)
	if err != nil {
		return ApplyResult{}, err
	}
	oldSettings, err := storedSettingsTxn(txn)
	if err != nil {
		return ApplyResult{}, err
	}
	oldRev, err := revisionTxn(txn, nil)
	if err != nil {
		return ApplyResult{}, err
	}

	res := ApplyResult{
		Index:     prev,
		Hardware:  hw.Changes,
		Templates: tp.Changes,
		Workflows: wf.Changes,
		Settings:  oldSettings != f.Settings,
	}
	var changed []string
	for _, c := range []struct {
		table   string
		changed bool
	}{
		{TableHardware, res.Hardware.Any()},
		{TableTemplates, res.Templates.Any()},
		{TableWorkflows, res.Workflows.Any()},
		{TableSettings, res.Settings},
	} {
		if c.changed {
			changed = append(changed, c.table)
		}
	}
	if len(changed) == 0 && oldRev.Index != 0 && oldRev.ID == rev {
		return res, nil
	}
	idx := prev + 1

	// Hardware deletes all its old rows before inserting new ones: a MAC
	// that moves from one machine to another in this revision must be free
	// when the conflict check of the new owner runs.
	if err := hw.write(txn, TableHardware, func(h *schema.Hardware) error {
		return checkHardwareKeysTxn(txn, h)
	}); err != nil {
		return ApplyResult{}, err
	}
	if err := tp.write(txn, TableTemplates, nil); err != nil {
		return ApplyResult{}, err
	}
	if err := wf.write(txn, TableWorkflows, nil); err != nil {
		return ApplyResult{}, err
	}
	if res.Settings {
		if f.Settings == nil {
			err = txn.Delete(TableSettings, oldSettings)
		} else {
			err = txn.Insert(TableSettings, f.Settings)
		}
		if err != nil {
			return ApplyResult{}, fmt.Errorf("write settings: %w", err)
		}
	}
	nh, nt, nw := f.Counts()
	r := &Revision{ID: rev, Index: idx, Hardware: nh, Templates: nt, Workflows: nw}
	if err := txn.Insert(TableRevision, r); err != nil {
		return ApplyResult{}, fmt.Errorf("write revision: %w", err)
	}
	changed = append(changed, TableRevision)
	for _, table := range changed {
		if err := txn.Insert(TableIndex, &indexEntry{Key: table, Value: idx}); err != nil {
			return ApplyResult{}, fmt.Errorf("write index of %s: %w", table, err)
		}
	}

	txn.Commit()
	s.generation.Store(idx)
	// The fleet's maps are read-only and never change after loading, so
	// holding them is safe.
	s.held = &schema.Fleet{Hardware: f.Hardware, Templates: f.Templates, Workflows: f.Workflows}
	res.Index = idx
	return res, nil
}

func hardwareName(h *schema.Hardware) string { return h.Name }
func templateName(t *schema.Template) string { return t.Name }
func workflowName(w *schema.Workflow) string { return w.Name }

// tablePlan is what Apply does to one table.
type tablePlan[T any] struct {
	// remove holds the stored rows to delete: the removed objects and the
	// old versions of changed ones.
	remove []*T
	// insert holds the rows to insert, by name: the added objects and the
	// new versions of changed ones.
	insert []*T
	Changes
}

// planTable compares what table holds with want, the fleet's objects by
// name. held is the table's content as the last Apply left it (nil before
// the first), so the plan costs map lookups, not a scan of the table.
func planTable[T any](txn *memdb.Txn, table string, held, want map[string]*T, name func(*T) string) (tablePlan[T], error) {
	var p tablePlan[T]
	if held == nil {
		var err error
		if held, err = tableContent(txn, table, name); err != nil {
			return p, err
		}
	}
	for n, old := range held {
		cur, ok := want[n]
		switch {
		case !ok:
			p.remove = append(p.remove, old)
			p.Removed++
		case cur == old:
		case cur == nil:
			return p, fmt.Errorf("%s %q: nil object", table, n)
		default:
			p.remove = append(p.remove, old)
			p.insert = append(p.insert, cur)
			p.Changed++
		}
	}
	for k, obj := range want {
		if _, ok := held[k]; ok {
			continue
		}
		switch {
		case k == "":
			return p, fmt.Errorf("%s: empty name", table)
		case obj == nil:
			return p, fmt.Errorf("%s %q: nil object", table, k)
		case name(obj) != k:
			return p, fmt.Errorf("%s %q: held under name %q", table, name(obj), k)
		}
		p.insert = append(p.insert, obj)
		p.Added++
	}
	// Insert in name order so that a conflict is reported the same way
	// every time.
	slices.SortFunc(p.insert, func(a, b *T) int { return strings.Compare(name(a), name(b)) })
	return p, nil
}

// tableContent reads every row of table, by name.
func tableContent[T any](txn *memdb.Txn, table string, name func(*T) string) (map[string]*T, error) {
	iter, err := txn.Get(table, IndexID)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	m := map[string]*T{}
	for raw := iter.Next(); raw != nil; raw = iter.Next() {
		obj, err := as[T](raw)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", table, err)
		}
		m[name(obj)] = obj
	}
	return m, nil
}

// write deletes p.remove, then checks (when check is not nil) and inserts
// each of p.insert.
func (p *tablePlan[T]) write(txn *memdb.Txn, table string, check func(*T) error) error {
	for _, obj := range p.remove {
		if err := txn.Delete(table, obj); err != nil {
			return fmt.Errorf("delete from %s: %w", table, err)
		}
	}
	for _, obj := range p.insert {
		if check != nil {
			if err := check(obj); err != nil {
				return err
			}
		}
		if err := txn.Insert(table, obj); err != nil {
			return fmt.Errorf("insert into %s: %w", table, err)
		}
	}
	return nil
}

// checkHardwareKeysTxn returns a *ConflictError when another stored machine
// already has one of h's MACs, addresses or hostnames.
func checkHardwareKeysTxn(txn *memdb.Txn, h *schema.Hardware) error {
	for i := range h.Interfaces {
		ifc := &h.Interfaces[i]
		if err := checkKeyFreeTxn(txn, h.Name, IndexMAC, ifc.MAC); err != nil {
			return err
		}
		if a := ifc.Addr(); a != "" {
			if err := checkKeyFreeTxn(txn, h.Name, IndexIP, a); err != nil {
				return err
			}
		}
		if ifc.Hostname != "" {
			if err := checkKeyFreeTxn(txn, h.Name, IndexHostname, ifc.Hostname); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkKeyFreeTxn(txn *memdb.Txn, name, index, k string) error {
	raw, err := txn.First(TableHardware, index, k)
	if err != nil {
		return fmt.Errorf("hardware %q: %w", name, err)
	}
	if raw == nil {
		return nil
	}
	owner, err := as[schema.Hardware](raw)
	if err != nil {
		return fmt.Errorf("hardware %q: %w", name, err)
	}
	if owner.Name == name {
		return nil
	}
	return &ConflictError{Index: index, Key: k, Hardware: name, Owner: owner.Name}
}

// as returns raw, a row read from the store, as a *T.
func as[T any](raw any) (*T, error) {
	v, ok := raw.(*T)
	if !ok {
		var want *T
		return nil, fmt.Errorf("got row of type %T, want %T", raw, want)
	}
	return v, nil
}

// Snapshot returns a consistent view of the store as of now, for a caller
// that makes several reads that must agree (a DHCP reply built from a
// machine, its workflows and the settings). It holds no lock and needs no
// closing; later Applies do not change what it returns.
func (s *Store) Snapshot() *Snapshot {
	return &Snapshot{txn: s.db.Txn(false)}
}

// Snapshot is one read transaction on the store. It offers the store's
// accessors; their results are read-only, as the store's are.
type Snapshot struct {
	txn *memdb.Txn
}

// HardwareByName returns the machine called name, or nil when there is
// none. The result is shared and read-only: copy before mutating.
func (s *Store) HardwareByName(ws memdb.WatchSet, name string) (*schema.Hardware, error) {
	return hardwareByTxn(s.db.Txn(false), ws, IndexID, name)
}

// HardwareByMAC returns the machine with an interface whose MAC is mac, in
// any form net.ParseMAC accepts, or nil when there is none. An invalid mac
// is an error. The result is shared and read-only: copy before mutating.
func (s *Store) HardwareByMAC(ws memdb.WatchSet, mac string) (*schema.Hardware, error) {
	return hardwareByTxn(s.db.Txn(false), ws, IndexMAC, mac)
}

// HardwareByIP returns the machine with an interface whose address is ip
// (without prefix length), or nil when there is none. An invalid ip is an
// error. The result is shared and read-only: copy before mutating.
func (s *Store) HardwareByIP(ws memdb.WatchSet, ip string) (*schema.Hardware, error) {
	return hardwareByTxn(s.db.Txn(false), ws, IndexIP, ip)
}

// HardwareByHostname returns the machine with an interface called hostname,
// compared without regard to case, or nil when there is none. The result is
// shared and read-only: copy before mutating.
func (s *Store) HardwareByHostname(ws memdb.WatchSet, hostname string) (*schema.Hardware, error) {
	return hardwareByTxn(s.db.Txn(false), ws, IndexHostname, hostname)
}

// Hardware returns every machine, sorted by name. The machines are shared
// and read-only: copy before mutating.
func (s *Store) Hardware(ws memdb.WatchSet) ([]*schema.Hardware, error) {
	return listTxn[schema.Hardware](s.db.Txn(false), ws, TableHardware, IndexID)
}

// TemplateByName returns the template called name, or nil when there is
// none. The result is shared and read-only: copy before mutating.
func (s *Store) TemplateByName(ws memdb.WatchSet, name string) (*schema.Template, error) {
	return firstTxn[schema.Template](s.db.Txn(false), ws, TableTemplates, IndexID, name)
}

// Templates returns every template, sorted by name. The templates are
// shared and read-only: copy before mutating.
func (s *Store) Templates(ws memdb.WatchSet) ([]*schema.Template, error) {
	return listTxn[schema.Template](s.db.Txn(false), ws, TableTemplates, IndexID)
}

// WorkflowByName returns the workflow called name, or nil when there is
// none. The result is shared and read-only: copy before mutating.
func (s *Store) WorkflowByName(ws memdb.WatchSet, name string) (*schema.Workflow, error) {
	return firstTxn[schema.Workflow](s.db.Txn(false), ws, TableWorkflows, IndexID, name)
}

// Workflows returns every workflow, sorted by name. The workflows are
// shared and read-only: copy before mutating.
func (s *Store) Workflows(ws memdb.WatchSet) ([]*schema.Workflow, error) {
	return listTxn[schema.Workflow](s.db.Txn(false), ws, TableWorkflows, IndexID)
}

// WorkflowsByHardware returns the workflows of the machine called name,
// sorted by workflow name; none is an empty result, not an error. The
// workflows are shared and read-only: copy before mutating.
func (s *Store) WorkflowsByHardware(ws memdb.WatchSet, name string) ([]*schema.Workflow, error) {
	return listTxn[schema.Workflow](s.db.Txn(false), ws, TableWorkflows, IndexHardware, name)
}

// Settings returns the repository settings, or schema.DefaultSettings()
// when the applied revision has none or nothing was applied. The result is
// shared and read-only: copy before mutating.
func (s *Store) Settings(ws memdb.WatchSet) (*schema.Settings, error) {
	return settingsTxn(s.db.Txn(false), ws)
}

// Generation returns a number that changes whenever the store's content
// does: the index of the last Apply that changed anything, 0 before any.
// It costs an atomic load, no transaction, so a hot path may keep what it
// derived from the store together with the generation it read first and
// reuse it while Generation returns the same. Read it before the lookups
// it guards: the generation is set after the commit, so lookups made after
// reading g see the store at g or later, never earlier.
func (s *Store) Generation() uint64 { return s.generation.Load() }

// Revision returns the applied revision, or the zero Revision when nothing
// was applied.
func (s *Store) Revision(ws memdb.WatchSet) (Revision, error) {
	return revisionTxn(s.db.Txn(false), ws)
}

// Index returns the store index of the last Apply that changed table (one of
// the Table constants other than TableIndex), or 0 when none did.
func (s *Store) Index(table string) (uint64, error) {
	return indexTxn(s.db.Txn(false), table)
}

// HardwareByName is Store.HardwareByName in the snapshot.
func (s *Snapshot) HardwareByName(ws memdb.WatchSet, name string) (*schema.Hardware, error) {
	return hardwareByTxn(s.txn, ws, IndexID, name)
}

// HardwareByMAC is Store.HardwareByMAC in the snapshot.
func (s *Snapshot) HardwareByMAC(ws memdb.WatchSet, mac string) (*schema.Hardware, error) {
	return hardwareByTxn(s.txn, ws, IndexMAC, mac)
}

// HardwareByIP is Store.HardwareByIP in the snapshot.
func (s *Snapshot) HardwareByIP(ws memdb.WatchSet, ip string) (*schema.Hardware, error) {
	return hardwareByTxn(s.txn, ws, IndexIP, ip)
}

// HardwareByHostname is Store.HardwareByHostname in the snapshot.
func (s *Snapshot) HardwareByHostname(ws memdb.WatchSet, hostname string) (*schema.Hardware, error) {
	return hardwareByTxn(s.txn, ws, IndexHostname, hostname)
}

// Hardware is Store.Hardware in the snapshot.
func (s *Snapshot) Hardware(ws memdb.WatchSet) ([]*schema.Hardware, error) {
	return listTxn[schema.Hardware](s.txn, ws, TableHardware, IndexID)
}

// TemplateByName is Store.TemplateByName in the snapshot.
func (s *Snapshot) TemplateByName(ws memdb.WatchSet, name string) (*schema.Template, error) {
	return firstTxn[schema.Template](s.txn, ws, TableTemplates, IndexID, name)
}

// Templates is Store.Templates in the snapshot.
func (s *Snapshot) Templates(ws memdb.WatchSet) ([]*schema.Template, error) {
	return listTxn[schema.Template](s.txn, ws, TableTemplates, IndexID)
}

// WorkflowByName is Store.WorkflowByName in the snapshot.
func (s *Snapshot) WorkflowByName(ws memdb.WatchSet, name string) (*schema.Workflow, error) {
	return firstTxn[schema.Workflow](s.txn, ws, TableWorkflows, IndexID, name)
}

// Workflows is Store.Workflows in the snapshot.
func (s *Snapshot) Workflows(ws memdb.WatchSet) ([]*schema.Workflow, error) {
	return listTxn[schema.Workflow](s.txn, ws, TableWorkflows, IndexID)
}

// WorkflowsByHardware is Store.WorkflowsByHardware in the snapshot.
func (s *Snapshot) WorkflowsByHardware(ws memdb.WatchSet, name string) ([]*schema.Workflow, error) {
	return listTxn[schema.Workflow](s.txn, ws, TableWorkflows, IndexHardware, name)
}

// Settings is Store.Settings in the snapshot.
func (s *Snapshot) Settings(ws memdb.WatchSet) (*schema.Settings, error) {
	return settingsTxn(s.txn, ws)
}

// Revision is Store.Revision in the snapshot.
func (s *Snapshot) Revision(ws memdb.WatchSet) (Revision, error) {
	return revisionTxn(s.txn, ws)
}

// Index is Store.Index in the snapshot.
func (s *Snapshot) Index(table string) (uint64, error) {
	return indexTxn(s.txn, table)
}

func hardwareByTxn(txn *memdb.Txn, ws memdb.WatchSet, index, k string) (*schema.Hardware, error) {
	return firstTxn[schema.Hardware](txn, ws, TableHardware, index, k)
}

// firstTxn returns the row of table whose index key is args, or nil, and
// adds the channel that closes when that changes to ws.
func firstTxn[T any](txn *memdb.Txn, ws memdb.WatchSet, table, index string, args ...any) (*T, error) {
	ch, raw, err := txn.FirstWatch(table, index, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s by %s: %w", table, index, err)
	}
	ws.Add(ch)
	if raw == nil {
		return nil, nil
	}
	v, err := as[T](raw)
	if err != nil {
		return nil, fmt.Errorf("read %s by %s: %w", table, index, err)
	}
	return v, nil
}

// listTxn returns the rows of table matching args on index (all rows when
// there are no args) in index order, and adds the channel that closes when
// that set changes to ws.
func listTxn[T any](txn *memdb.Txn, ws memdb.WatchSet, table, index string, args ...any) ([]*T, error) {
	iter, err := txn.Get(table, index, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s by %s: %w", table, index, err)
	}
	ws.Add(iter.WatchCh())
	var out []*T
	for raw := iter.Next(); raw != nil; raw = iter.Next() {
		v, err := as[T](raw)
		if err != nil {
			return nil, fmt.Errorf("read %s by %s: %w", table, index, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func settingsTxn(txn *memdb.Txn, ws memdb.WatchSet) (*schema.Settings, error) {
	v, err := firstTxn[schema.Settings](txn, ws, TableSettings, IndexID)
	if err != nil || v != nil {
		return v, err
	}
	return schema.DefaultSettings(), nil
}

// storedSettingsTxn returns the stored settings row, nil when there is none.
func storedSettingsTxn(txn *memdb.Txn) (*schema.Settings, error) {
	return firstTxn[schema.Settings](txn, nil, TableSettings, IndexID)
}

func revisionTxn(txn *memdb.Txn, ws memdb.WatchSet) (Revision, error) {
	v, err := firstTxn[Revision](txn, ws, TableRevision, IndexID)
	if err != nil || v == nil {
		return Revision{}, err
	}
	return *v, nil
}

func indexTxn(txn *memdb.Txn, table string) (uint64, error) {
	if !indexedTable(table) {
		return 0, fmt.Errorf("index of %q: not a table with an index", table)
	}
	e, err := firstTxn[indexEntry](txn, nil, TableIndex, IndexID, table)
	if err != nil || e == nil {
		return 0, err
	}
	return e.Value, nil
}

// maxIndexTxn returns the highest table index, 0 in an empty store.
func maxIndexTxn(txn *memdb.Txn) (uint64, error) {
	es, err := listTxn[indexEntry](txn, nil, TableIndex, IndexID)
	if err != nil {
		return 0, err
	}
	var m uint64
	for _, e := range es {
		m = max(m, e.Value)
	}
	return m, nil
}

// BlockingQuery runs query on a fresh snapshot until the index it returns
// is greater than minIndex, waiting between runs until a channel the query
// added to ws closes. query reads through the snapshot's accessors, passing
// them ws, and returns its result with the index it is current at, usually
// the highest snap.Index of the tables it read. A query that adds no channel
// wakes on every Apply that changes anything.
//
// When ctx ends first, BlockingQuery returns the latest result and index
// with ctx's error, so that a long poll that times out can still answer with
// the current data.
func BlockingQuery[T any](ctx context.Context, s *Store, minIndex uint64, query func(ws memdb.WatchSet, snap *Snapshot) (T, uint64, error)) (T, uint64, error) {
	for {
		snap := s.Snapshot()
		ws := memdb.NewWatchSet()
		res, idx, err := query(ws, snap)
		if err != nil || idx > minIndex {
			return res, idx, err
		}
		if len(ws) == 0 {
			iter, err := snap.txn.Get(TableIndex, IndexID)
			if err != nil {
				return res, idx, fmt.Errorf("watch index: %w", err)
			}
			ws.Add(iter.WatchCh())
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return res, idx, fmt.Errorf("blocking query at index %d: %w", minIndex, err)
		}
	}
}

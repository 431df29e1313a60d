package store

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/hashicorp/go-memdb"

	"github.com/gitmetal/gitmetal/schema"
)

// Table names.
const (
	// TableHardware holds *schema.Hardware.
	TableHardware = "hardware"
	// TableTemplates holds *schema.Template.
	TableTemplates = "templates"
	// TableWorkflows holds *schema.Workflow.
	TableWorkflows = "workflows"
	// TableSettings holds at most one *schema.Settings: the repository's
	// gitmetal.cue, absent when the repository has none.
	TableSettings = "settings"
	// TableRevision holds at most one *Revision: the revision last applied.
	TableRevision = "revision"
	// TableIndex maps each other table's name to the store index of the
	// last Apply that changed it.
	TableIndex = "index"
)

// Index names. Every table has IndexID; the others belong to the tables
// their comments name.
const (
	// IndexID is the primary key: the object's Name in the object tables,
	// the table name in TableIndex, a constant in the single-row tables.
	IndexID = "id"
	// IndexMAC (hardware, unique, one key per interface) is the lower-case
	// colon form of each interface's MAC.
	IndexMAC = "mac"
	// IndexIP (hardware, unique, one key per addressed interface) is each
	// interface's address without its prefix length.
	IndexIP = "ip"
	// IndexHostname (hardware, unique, one key per named interface) is each
	// interface's hostname, lower-case.
	IndexHostname = "hostname"
	// IndexHardware (workflows, not unique) is the name of the machine a
	// workflow runs on.
	IndexHardware = "hardware"
)

// indexedTable reports whether table has a row in TableIndex.
func indexedTable(table string) bool {
	switch table {
	case TableHardware, TableTemplates, TableWorkflows, TableSettings, TableRevision:
		return true
	}
	return false
}

// dbSchema returns the store's memdb schema. It builds a new value on every
// call because memdb keeps the schema it is given.
func dbSchema() *memdb.DBSchema {
	return &memdb.DBSchema{
		Tables: map[string]*memdb.TableSchema{
			TableHardware: {
				Name: TableHardware,
				Indexes: map[string]*memdb.IndexSchema{
					IndexID: {
						Name:    IndexID,
						Unique:  true,
						Indexer: &memdb.StringFieldIndex{Field: "Name"},
					},
					IndexMAC: {
						Name:   IndexMAC,
						Unique: true,
						// A machine without interfaces is useless but not
						// the store's to reject.
						AllowMissing: true,
						Indexer:      macIndex{},
					},
					IndexIP: {
						Name:         IndexIP,
						Unique:       true,
						AllowMissing: true,
						Indexer:      ipIndex{},
					},
					IndexHostname: {
						Name:         IndexHostname,
						Unique:       true,
						AllowMissing: true,
						Indexer:      hostnameIndex{},
					},
				},
			},
			TableTemplates: {
				Name: TableTemplates,
				Indexes: map[string]*memdb.IndexSchema{
					IndexID: {
						Name:    IndexID,
						Unique:  true,
						Indexer: &memdb.StringFieldIndex{Field: "Name"},
					},
				},
			},
			TableWorkflows: {
				Name: TableWorkflows,
				Indexes: map[string]*memdb.IndexSchema{
					IndexID: {
						Name:    IndexID,
						Unique:  true,
						Indexer: &memdb.StringFieldIndex{Field: "Name"},
					},
					IndexHardware: {
						Name:    IndexHardware,
						Indexer: &memdb.StringFieldIndex{Field: "Hardware"},
					},
				},
			},
			TableSettings: {
				Name: TableSettings,
				Indexes: map[string]*memdb.IndexSchema{
					IndexID: {
						Name:    IndexID,
						Unique:  true,
						Indexer: singletonIndex{},
					},
				},
			},
			TableRevision: {
				Name: TableRevision,
				Indexes: map[string]*memdb.IndexSchema{
					IndexID: {
						Name:    IndexID,
						Unique:  true,
						Indexer: singletonIndex{},
					},
				},
			},
			TableIndex: {
				Name: TableIndex,
				Indexes: map[string]*memdb.IndexSchema{
					IndexID: {
						Name:    IndexID,
						Unique:  true,
						Indexer: &memdb.StringFieldIndex{Field: "Key"},
					},
				},
			},
		},
	}
}

// indexEntry is a row of TableIndex: the store index at which table Key
// last changed.
type indexEntry struct {
	Key   string
	Value uint64
}

// Index keys end in NUL, as memdb's own string indexes do, so that no key is
// a prefix of another.

// singletonIndex gives every object the same key: a table indexed by it
// holds at most one row, read with First(table, IndexID) and no arguments.
type singletonIndex struct{}

func (singletonIndex) FromObject(any) (bool, []byte, error) { return true, []byte{0}, nil }

func (singletonIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 0 {
		return nil, fmt.Errorf("single-row table takes no key, got %d", len(args))
	}
	return []byte{0}, nil
}

// macIndex indexes hardware by every interface's MAC.
type macIndex struct{}

func (macIndex) FromObject(raw any) (bool, [][]byte, error) {
	h, err := hardwareOf(raw)
	if err != nil {
		return false, nil, err
	}
	keys := make([][]byte, 0, len(h.Interfaces))
	for i := range h.Interfaces {
		mac, err := normMAC(h.Interfaces[i].MAC)
		if err != nil {
			return false, nil, fmt.Errorf("interface %d: %w", i, err)
		}
		keys = append(keys, key(mac))
	}
	return len(keys) > 0, keys, nil
}

func (macIndex) FromArgs(args ...any) ([]byte, error) {
	s, err := stringArg(args)
	if err != nil {
		return nil, err
	}
	if isCanonicalMAC(s) {
		// The DHCP server's lookups, once per packet: skip the parse.
		return key(s), nil
	}
	mac, err := normMAC(s)
	if err != nil {
		return nil, err
	}
	return key(mac), nil
}

// isCanonicalMAC reports whether mac is already in normMAC's form: six
// lower-case hexadecimal octets separated by colons.
func isCanonicalMAC(mac string) bool {
	if len(mac) != 17 {
		return false
	}
	for i := range len(mac) {
		c := mac[i]
		if i%3 == 2 {
			if c != ':' {
				return false
			}
			continue
		}
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// normMAC returns mac in lower-case colon form. It accepts every form
// net.ParseMAC does, so "AA-BB-CC-DD-EE-FF" finds "aa:bb:cc:dd:ee:ff".
func normMAC(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return "", fmt.Errorf("mac %q: %w", mac, err)
	}
	return hw.String(), nil
}

// ipIndex indexes hardware by every interface's address.
type ipIndex struct{}

func (ipIndex) FromObject(raw any) (bool, [][]byte, error) {
	h, err := hardwareOf(raw)
	if err != nil {
		return false, nil, err
	}
	var keys [][]byte
	for i := range h.Interfaces {
		if a := h.Interfaces[i].Addr(); a != "" {
			keys = append(keys, key(a))
		}
	}
	return len(keys) > 0, keys, nil
}

func (ipIndex) FromArgs(args ...any) ([]byte, error) {
	s, err := stringArg(args)
	if err != nil {
		return nil, err
	}
	// Re-format so that every spelling of an IPv6 address finds the one
	// netip.Addr.String gave the stored interface.
	a, err := netip.ParseAddr(s)
	if err != nil {
		return nil, fmt.Errorf("ip %q: %w", s, err)
	}
	return key(a.String()), nil
}

// hostnameIndex indexes hardware by every interface's hostname. Host names
// compare case-insensitively (RFC 4343).
type hostnameIndex struct{}

func (hostnameIndex) FromObject(raw any) (bool, [][]byte, error) {
	h, err := hardwareOf(raw)
	if err != nil {
		return false, nil, err
	}
	var keys [][]byte
	for i := range h.Interfaces {
		if n := h.Interfaces[i].Hostname; n != "" {
			keys = append(keys, key(strings.ToLower(n)))
		}
	}
	return len(keys) > 0, keys, nil
}

func (hostnameIndex) FromArgs(args ...any) ([]byte, error) {
	s, err := stringArg(args)
	if err != nil {
		return nil, err
	}
	return key(strings.ToLower(s)), nil
}

// key returns s as a NUL-terminated index key.
func key(s string) []byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b
}

func hardwareOf(raw any) (*schema.Hardware, error) {
	h, ok := raw.(*schema.Hardware)
	if !ok {
		return nil, fmt.Errorf("got %T, want *schema.Hardware", raw)
	}
	return h, nil
}

func stringArg(args []any) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("got %d arguments, want 1", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return "", fmt.Errorf("got argument of type %T, want string", args[0])
	}
	return s, nil
}

package dhcp

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/gitmetal/gitmetal/schema"
)

// Most of a reservation reply is a function of the interface alone, with
// the repository settings standing in for what the interface leaves out:
// options 1, 28, 3, 6, 12, 15, 42, 51, 58, 59, 119 and 121 (the
// interface's chain, Handler.static). Building them parses the store's
// strings (addresses, routes, domains) again for every packet; that was a
// third of the handler's time. The memo builds them once per interface
// and later replies copy the bytes.
//
// It cannot serve a stale answer. The store's values are immutable (a
// commit that changes a machine stores a new *schema.Hardware, so a new
// *schema.Interface), the memo is keyed by the interface's pointer and
// holds it, so the address cannot be reused for other content while it is
// a key; and an entry built with repository defaults records the values
// it used and is rebuilt when the settings differ. Every packet still
// looks its MAC up in the store: the memo only saves the encoding.
//
// It is bounded: past maxMemo entries it starts over empty, which lets
// the interfaces of removed and changed machines go.

// maxMemo bounds the memo's entries: room for two variants of every
// interface of a fleet of tens of thousands of machines, a few megabytes.
const maxMemo = 1 << 17

// memo maps an interface to its options. A map under a read-write lock,
// not a sync.Map: with ten thousand interfaces the lookup is the packet's
// cache misses, and the map's are fewer than sync.Map's trie (measured on
// the bench).
type memo struct {
	mu sync.RWMutex
	m  map[*schema.Interface]*ifaceOptions
}

// ifaceOptions is what the memo keeps for one interface.
type ifaceOptions struct {
	addr   netip.Prefix // the reservation; invalid when it has none
	reply  []byte       // the chain's options for an OFFER or ACK
	inform []byte       // the same for the ACK of an INFORM: no lease times
	used   *usedSettings
}

// usedSettings are the repository settings an entry was built with, when
// the interface needed any of them.
type usedSettings struct {
	nameservers, timeservers []string
	domain                   string
	leaseTime                int
}

func (u *usedSettings) matches(s *schema.Settings) bool {
	return u.domain == s.Domain && u.leaseTime == s.LeaseTime &&
		slices.Equal(u.nameservers, s.Nameservers) && slices.Equal(u.timeservers, s.Timeservers)
}

// ifaceOptions returns r.iface's options, from the memo when its entry is
// current. An error reading the settings is left in r.err, as the option
// functions do, and nothing is remembered.
func (h *Handler) ifaceOptions(r *request) *ifaceOptions {
	h.memo.mu.RLock()
	e, ok := h.memo.m[r.iface]
	h.memo.mu.RUnlock()
	if ok && (e.used == nil || e.used.matches(r.repoSettings())) {
		return e
	}
	e = h.buildIfaceOptions(r)
	if r.err != nil {
		return e
	}
	h.memo.mu.Lock()
	if h.memo.m == nil || len(h.memo.m) >= maxMemo {
		h.memo.m = make(map[*schema.Interface]*ifaceOptions)
	}
	h.memo.m[r.iface] = e
	h.memo.mu.Unlock()
	return e
}

// buildIfaceOptions runs the interface's chain, once as for an OFFER or
// ACK and once as for the ACK of an INFORM.
func (h *Handler) buildIfaceOptions(r *request) *ifaceOptions {
	e := &ifaceOptions{}
	if p, ok := r.iface.Prefix(); ok && p.Addr().Is4() {
		e.addr = p
	}
	var resp Reply
	for _, inform := range []bool{false, true} {
		b := &request{iface: r.iface, hw: r.hw, backend: r.backend, settings: r.settings, addr: e.addr, inform: inform}
		resp.n = 0
		for _, f := range h.static {
			f(b, &resp)
		}
		if b.err != nil {
			r.err = b.err
		}
		if b.settings != nil && r.settings == nil {
			r.settings = b.settings
		}
		opts := slices.Clone(resp.Options())
		if inform {
			e.inform = opts
		} else {
			e.reply = opts
		}
	}
	if s := r.settings; s != nil {
		e.used = &usedSettings{
			nameservers: slices.Clone(s.Nameservers), timeservers: slices.Clone(s.Timeservers),
			domain: s.Domain, leaseTime: s.LeaseTime,
		}
	}
	return e
}

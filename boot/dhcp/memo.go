package dhcp

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/gitmetal/gitmetal/schema"
)

// The memo keeps what the handler derived from the store for a MAC: the
// machine, the interface, and in reservation mode that interface's
// options in wire form (1, 28, 3, 6, 12, 15, 42, 51, 58, 59, 119 and 121:
// the chain Handler.static, run once per interface with the repository
// settings standing in for what the interface leaves out). Without it
// each packet walked the store's MAC index (a radix tree whose nodes are
// cache misses once the fleet is large) and parsed the store's strings
// (addresses, routes, domains) again; that was most of the handler's time.
//
// It cannot serve a stale answer. Every packet reads the store's
// generation (Backend.Generation, an atomic load that changes with every
// commit) before anything else, and an entry is used only if it was made
// at that generation; otherwise the packet looks the MAC up in the store
// and the entry is made again. So a commit reaches the next packet, as
// without the memo; what the memo saves is the work between commits, when
// a machine's DISCOVER, REQUEST and later renewals ask the same thing.
// Unknown MACs are not remembered: they are answered by nothing, and a
// scan of random MACs must not fill the memo.
//
// It is bounded: past maxMemo entries it starts over empty.

// maxMemo bounds the memo's entries: room for every interface of a fleet
// of a hundred thousand machines, a few tens of megabytes.
const maxMemo = 1 << 17

// memo maps a MAC to what the handler found for it. A map under a
// read-write lock rather than a sync.Map: at ten thousand machines the
// lookup's cache misses are the cost, and the map has fewer (measured on
// the bench).
type memo struct {
	mu sync.RWMutex
	m  map[[6]byte]*known
}

// known is what the handler found for a MAC at one store generation.
type known struct {
	gen   uint64
	hw    *schema.Hardware
	iface *schema.Interface
	opts  *ifaceOptions // reservation mode; nil in proxy mode
	// settings are the repository settings opts were built with, nil
	// when the interface needed none of them.
	settings *schema.Settings
}

// ifaceOptions is an interface's part of a reservation reply. The ACK of
// an INFORM (no lease times) is rare and is built without the memo.
type ifaceOptions struct {
	addr  netip.Prefix // the reservation; invalid when it has none
	reply []byte       // the chain's options for an OFFER or ACK
}

// lookup finds the machine and interface with r's MAC, from the memo when
// its entry is of the store's current generation, else from the store,
// and fills r.mac, r.hw, r.iface and (in reservation mode) r.opts. An
// unknown MAC leaves r.hw nil. An error reading the settings is left in
// r.err, as the option functions do, and nothing is remembered.
func (h *Handler) lookup(r *request) error {
	key := [6]byte(r.req.ClientHWAddr)
	gen := h.backend.Generation()
	h.memo.mu.RLock()
	old := h.memo.m[key]
	h.memo.mu.RUnlock()
	if old != nil && old.gen == gen {
		r.mac, r.hw, r.iface, r.opts = old.iface.MAC, old.hw, old.iface, old.opts
		return nil
	}
	r.mac = r.req.ClientHWAddr.String()
	hw, err := h.backend.HardwareByMAC(nil, r.mac)
	if err != nil {
		return err
	}
	if hw == nil {
		return nil
	}
	iface := interfaceByMAC(hw, r.mac)
	if iface == nil {
		// The store's MAC index and the interfaces disagree only if the
		// machine vanished between them; treat both as unknown.
		return nil
	}
	r.hw, r.iface = hw, iface
	k := &known{gen: gen, hw: hw, iface: iface}
	if h.mode == ModeReservation {
		if old != nil && old.iface == iface && old.opts != nil && (old.settings == nil || old.settings == r.repoSettings()) {
			// A commit that left this machine alone (the store holds
			// the same value) and the settings it used: the options
			// are what they were. The old entry holds both values, so
			// neither address can have been reused for others.
			k.opts, k.settings = old.opts, old.settings
		} else {
			k.opts = h.buildIfaceOptions(r)
			k.settings = r.settings
		}
		r.opts = k.opts
		if r.err != nil {
			return nil
		}
	}
	h.memo.mu.Lock()
	if h.memo.m == nil || len(h.memo.m) >= maxMemo {
		h.memo.m = make(map[[6]byte]*known)
	}
	h.memo.m[key] = k
	h.memo.mu.Unlock()
	return nil
}

// buildIfaceOptions runs the interface's chain as for an OFFER or ACK.
func (h *Handler) buildIfaceOptions(r *request) *ifaceOptions {
	e := &ifaceOptions{}
	if p, ok := r.iface.Prefix(); ok && p.Addr().Is4() {
		e.addr = p
	}
	b := &request{iface: r.iface, hw: r.hw, backend: r.backend, settings: r.settings, addr: e.addr}
	resp := r.scratch
	resp.n = 0
	for _, f := range h.static {
		f(b, resp)
	}
	r.err, r.settings = b.err, b.settings
	e.reply = slices.Clone(resp.Options())
	return e
}

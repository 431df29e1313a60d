package dhcp

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/gitmetal/gitmetal/schema"
)

// Note says what the handler made of a request: why it has no reply, or
// what kind of reply it has. The server logs by it.
type Note uint8

// The notes.
const (
	// NoteReply: the reply is an OFFER or ACK.
	NoteReply Note = iota
	// NoteNAK: the reply is a NAK, because the client asked for an
	// address that is not its reservation.
	NoteNAK
	// NoteInvalid: not a BOOTREQUEST, no message type, or not an
	// Ethernet client.
	NoteInvalid
	// NoteUnknownMAC: no machine in the store has the client's MAC.
	NoteUnknownMAC
	// NoteDisabled: the interface has disableDHCP.
	NoteDisabled
	// NoteNoAddress: reservation mode, the interface has no address.
	NoteNoAddress
	// NoteNotNetboot: proxy mode, the client is not a netboot client, its
	// interface does not allow PXE, or its architecture has no binary.
	NoteNotNetboot
	// NoteOtherServer: a REQUEST for another server's offer.
	NoteOtherServer
	// NoteRelease: a DHCPRELEASE; reservations are static, nothing changes.
	NoteRelease
	// NoteDecline: a DHCPDECLINE: the client found its reserved address
	// in use. Nothing changes; an operator must look.
	NoteDecline
	// NoteUnsupported: a message type this mode does not answer.
	NoteUnsupported
)

func (n Note) String() string { text, _ := n.names(); return text }

// numNotes is how many notes there are: NoteUnsupported is the last.
const numNotes = int(NoteUnsupported) + 1

// label names the note in metrics.
func (n Note) label() string { _, label := n.names(); return label }

// names returns how the log (text) and the metrics (label) name the note.
func (n Note) names() (text, label string) {
	switch n {
	case NoteReply:
		return "reply", "reply"
	case NoteNAK:
		return "nak", "nak"
	case NoteInvalid:
		return "invalid request", "invalid"
	case NoteUnknownMAC:
		return "unknown mac", "unknown_mac"
	case NoteDisabled:
		return "dhcp disabled for interface", "disabled"
	case NoteNoAddress:
		return "interface has no address", "no_address"
	case NoteNotNetboot:
		return "not a netboot client", "not_netboot"
	case NoteOtherServer:
		return "request for another server", "other_server"
	case NoteRelease:
		return "release", "release"
	case NoteDecline:
		return "decline", "decline"
	case NoteUnsupported:
		return "unsupported message type", "unsupported"
	}
	return fmt.Sprintf("note(%d)", uint8(n)), fmt.Sprintf("note_%d", uint8(n))
}

// Result is the handler's answer to one request.
type Result struct {
	// Reply is the reply to send, or nil for none.
	Reply *Reply
	// Note says what the reply is or why there is none.
	Note Note
	// Hardware is the name of the client's machine, when it is known.
	Hardware string
	// Boot is the boot file or URL given, when any.
	Boot string
	// Detail explains a NAK, a missing boot file or a decline.
	Detail string
}

// Handler decides the reply to a request from the store. It is safe for
// concurrent use. What it keeps between requests is its memo of what it
// found for each MAC, used only at the store generation it was found at,
// so it saves work and changes no answer (see memo.go).
type Handler struct {
	mode         Mode
	serverID     netip.Addr // AdvertiseAddr
	httpBase     string
	bin          Binaries
	proxyUnknown bool
	backend      Backend

	// full builds reservation-mode replies; bootOnly builds proxy-mode
	// replies. Each is an ordered list of small option functions applied
	// to a skeleton reply, as coredhcp does; the order is the options'
	// order on the wire, after the skeleton's message type and client
	// identifier and before the relay agent information (finish). static
	// is the part of full that depends on the interface alone, which
	// full includes through the memo (ifaceChain).
	full, static, bootOnly []optionFunc
	memo                   memo
}

// optionFunc adds its options to resp from what r knows.
type optionFunc func(r *request, resp *Reply)

// request is what the option functions read: the request and what the
// handler looked up for it. Fields are read-only, but for settings and
// err, which repoSettings fills on first use.
type request struct {
	req      *dhcpv4.DHCPv4
	mac      string
	port     int
	hw       *schema.Hardware  // nil for ProxyUnknown clients
	iface    *schema.Interface // the interface with mac; nil with hw
	backend  Backend
	settings *schema.Settings // read on first use: see repoSettings
	err      error            // the settings could not be read
	addr     netip.Prefix     // the reservation; invalid in proxy mode
	inform   bool             // the reply answers a DHCPINFORM
	boot     boot             // zero: no boot information
	opts     *ifaceOptions    // the interface's chain, built; nil in proxy mode
	scratch  *Reply           // where the reply is built
}

// scratch is what a server worker reuses from packet to packet: the
// handler's request and the reply it builds, the largest objects a
// packet would otherwise allocate.
type scratch struct {
	req   request
	reply Reply
}

// NewHandler returns the handler of a server configured by c (see Config;
// Interface and ListenAddr are not used).
func NewHandler(c Config) (*Handler, error) {
	if c.Interface == "" {
		c.Interface = "handler" // the handler does no I/O; keep validation quiet
	}
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	if c.Mode == ModeOff {
		return nil, fmt.Errorf("dhcp handler: mode %s answers nothing", ModeOff)
	}
	h := &Handler{
		mode:         c.Mode,
		serverID:     c.AdvertiseAddr,
		httpBase:     c.HTTPBase,
		bin:          c.Binaries,
		proxyUnknown: c.ProxyUnknown,
		backend:      c.Backend,
	}
	h.full = []optionFunc{
		h.serverIdentifier, // 54
		yiaddr,             // yiaddr
		h.ifaceChain,       // h.static, memoized
		h.netboot,          // siaddr, file or 67, 60, 43, 97, 175
	}
	h.static = []optionFunc{
		subnet,          // 1, 28
		router,          // 3
		nameservers,     // 6
		hostname,        // 12
		domain,          // 15
		timeservers,     // 42
		leaseTime,       // 51, 58, 59
		searchDomains,   // 119
		classlessRoutes, // 121
	}
	h.bootOnly = []optionFunc{
		h.serverIdentifier, // 54
		h.netboot,          // siaddr, file or 67, 60, 43, 97, 175
	}
	return h, nil
}

// Handle returns the reply to req, which arrived on port (ServerPort, or
// PXEPort in proxy mode). An error means the store could not be read;
// every other reason for not replying is a Note.
func (h *Handler) Handle(req *dhcpv4.DHCPv4, port int) (Result, error) {
	return h.handle(req, port, new(scratch))
}

// handle is Handle working in sc, which the server's workers reuse from
// packet to packet.
func (h *Handler) handle(req *dhcpv4.DHCPv4, port int, sc *scratch) (Result, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return Result{Note: NoteInvalid}, nil
	}
	r := &sc.req
	*r = request{req: req, port: port, scratch: &sc.reply, backend: h.backend}
	mt := req.MessageType()
	switch mt {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform,
		dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline:
	case dhcpv4.MessageTypeNone:
		return Result{Note: NoteInvalid}, nil
	default:
		return Result{Note: NoteUnsupported, Detail: mt.String()}, nil
	}
	if h.mode == ModeProxy && !isNetbootClient(req) {
		// Cheap and before the lookup: most traffic a proxy sees is
		// ordinary DHCP that another server answers.
		return Result{Note: NoteNotNetboot}, nil
	}

	if err := h.lookup(r); err != nil {
		return Result{}, fmt.Errorf("look up mac %s: %w", req.ClientHWAddr, err)
	}
	res := Result{}
	if r.iface == nil {
		if h.mode != ModeProxy || !h.proxyUnknown {
			return Result{Note: NoteUnknownMAC}, nil
		}
	} else {
		res.Hardware = r.hw.Name
		if r.iface.DisableDHCP {
			res.Note = NoteDisabled
			return res, nil
		}
	}

	switch mt {
	case dhcpv4.MessageTypeRelease:
		res.Note = NoteRelease
		return res, nil
	case dhcpv4.MessageTypeDecline:
		res.Note = NoteDecline
		if ip := req.RequestedIPAddress(); ip != nil {
			res.Detail = "address in use: " + ip.String()
		}
		return res, nil
	}

	var err error
	if h.mode == ModeProxy {
		res, err = h.proxy(r, mt, res)
	} else {
		res, err = h.reservation(r, mt, res)
	}
	if r.err != nil {
		return Result{}, r.err
	}
	return res, err
}

// repoSettings returns the repository settings, read from the store the
// first time an option function needs a default. Most interfaces carry
// their own values, so most packets never read them. A store error is
// kept in r.err, which fails the request, and defaults stand in meanwhile.
func (r *request) repoSettings() *schema.Settings {
	if r.settings == nil {
		s, err := r.backend.Settings(nil)
		if err != nil || s == nil {
			r.err = fmt.Errorf("read settings: %w", err)
			s = schema.DefaultSettings()
		}
		r.settings = s
	}
	return r.settings
}

// reservation answers a known, enabled interface with its address.
func (h *Handler) reservation(r *request, mt dhcpv4.MessageType, res Result) (Result, error) {
	addr := r.opts.addr
	if !addr.IsValid() {
		res.Note = NoteNoAddress
		return res, nil
	}
	r.addr = addr
	reply := dhcpv4.MessageTypeOffer
	switch mt {
	case dhcpv4.MessageTypeRequest:
		reply = dhcpv4.MessageTypeAck
		// RFC 2131 §4.3.2: in SELECTING the request names its server; a
		// client that chose another server's offer gets no answer. In
		// every state the address asked for (option 50, or ciaddr when
		// renewing) must be the reservation, or the client gets a NAK and
		// starts over with a DISCOVER — this is how a committed address
		// change reaches a client that remembers its old lease.
		if sid := r.req.ServerIdentifier(); sid != nil && !h.isServerID(sid) {
			res.Note = NoteOtherServer
			return res, nil
		}
		want := r.req.RequestedIPAddress()
		if want == nil && !isZero(r.req.ClientIPAddr) {
			want = r.req.ClientIPAddr
		}
		if want != nil {
			if a, ok := netip.AddrFromSlice(want.To4()); !ok || a != addr.Addr() {
				res.Note = NoteNAK
				res.Detail = fmt.Sprintf("requested %s, reserved %s", want, addr.Addr())
				res.Reply = h.nak(r.req, res.Detail, r.scratch)
				return res, nil
			}
		}
	case dhcpv4.MessageTypeInform:
		// RFC 2131 §4.3.5: an ACK with parameters, no address, no lease.
		reply = dhcpv4.MessageTypeAck
		r.inform = true
	}
	r.boot, res.Detail = h.decideBoot(r)
	res.Boot = r.boot.file
	res.Reply = h.build(r, reply, h.full)
	return res, nil
}

// proxy answers a netboot client with boot information only.
func (h *Handler) proxy(r *request, mt dhcpv4.MessageType, res Result) (Result, error) {
	reply := dhcpv4.MessageTypeOffer
	switch mt {
	case dhcpv4.MessageTypeDiscover:
	case dhcpv4.MessageTypeRequest:
		// On 4011 the client asks the boot server directly. On 67 a
		// REQUEST selects an address offer; it is ours only if it names us.
		if sid := r.req.ServerIdentifier(); r.port != PXEPort && (sid == nil || !h.isServerID(sid)) {
			res.Note = NoteOtherServer
			return res, nil
		}
		reply = dhcpv4.MessageTypeAck
	default:
		res.Note = NoteUnsupported
		res.Detail = mt.String()
		return res, nil
	}
	r.boot, res.Detail = h.decideBoot(r)
	if r.boot.file == "" {
		res.Note = NoteNotNetboot
		return res, nil
	}
	res.Boot = r.boot.file
	res.Reply = h.build(r, reply, h.bootOnly)
	return res, nil
}

// skeleton returns the reply to req every chain starts from (RFC 2131
// table 3): the request's xid, flags, giaddr and chaddr, the message type,
// and the client identifier echoed (RFC 6842).
func skeleton(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, resp *Reply) *Reply {
	*resp = Reply{
		HType:   uint8(req.HWType),
		Xid:     req.TransactionID,
		Flags:   req.Flags,
		Chaddr:  req.ClientHWAddr,
		msgType: mt,
	}
	resp.Giaddr, _ = addr4(req.GatewayIPAddr)
	resp.add(dhcpv4.OptionDHCPMessageType.Code(), []byte{byte(mt)})
	if v := req.Options.Get(dhcpv4.OptionClientIdentifier); v != nil {
		resp.add(dhcpv4.OptionClientIdentifier.Code(), v)
	}
	return resp
}

// finish adds what must come last: the relay agent information echoed to
// the relay (RFC 3046 §2.2; last, §2.1).
func finish(req *dhcpv4.DHCPv4, resp *Reply) *Reply {
	if v := req.Options.Get(dhcpv4.OptionRelayAgentInformation); v != nil {
		resp.add(dhcpv4.OptionRelayAgentInformation.Code(), v)
	}
	return resp
}

// build folds the skeleton through chain.
func (h *Handler) build(r *request, mt dhcpv4.MessageType, chain []optionFunc) *Reply {
	resp := skeleton(r.req, mt, r.scratch)
	if mt == dhcpv4.MessageTypeAck {
		// RFC 2131 table 3: an ACK carries the request's ciaddr.
		resp.Ciaddr, _ = addr4(r.req.ClientIPAddr)
	}
	for _, f := range chain {
		f(r, resp)
	}
	return finish(r.req, resp)
}

// nak returns a DHCPNAK: server identifier and a message, nothing else.
func (h *Handler) nak(req *dhcpv4.DHCPv4, msg string, scratch *Reply) *Reply {
	resp := skeleton(req, dhcpv4.MessageTypeNak, scratch)
	resp.addAddr(dhcpv4.OptionServerIdentifier.Code(), h.serverID)
	resp.add(dhcpv4.OptionMessage.Code(), []byte(msg))
	if !isZero(req.GatewayIPAddr) {
		// RFC 2131 §4.3.2: a NAK through a relay asks it to broadcast.
		resp.Flags |= 0x8000
	}
	return finish(req, resp)
}

// isServerID reports whether ip (option 54 of a request) names this server.
func (h *Handler) isServerID(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip.To4())
	return ok && a == h.serverID
}

func interfaceByMAC(hw *schema.Hardware, mac string) *schema.Interface {
	for i := range hw.Interfaces {
		if hw.Interfaces[i].MAC == mac {
			return &hw.Interfaces[i]
		}
	}
	return nil
}

// isZero reports whether ip is absent or 0.0.0.0.
func isZero(ip net.IP) bool { return ip == nil || ip.IsUnspecified() }

package dhcp

import (
	"encoding/binary"
	"net/netip"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/gitmetal/gitmetal/schema"
)

// The option functions of the reply chains. Each adds the options it owns
// and nothing else, and adds nothing when the store has no value: a
// missing gateway means no option 3, not a zero router. Values the loader
// validated are parsed again here because the handler must not panic on a
// store built by other code; an unparsable value is left out.

// serverIdentifier sets option 54 (RFC 2132 §9.7): how the client
// addresses this server.
func (h *Handler) serverIdentifier(_ *request, resp *Reply) {
	resp.addAddr(dhcpv4.OptionServerIdentifier.Code(), h.serverID)
}

// yiaddr sets the reply's address: the reservation, but not in the ACK
// of an INFORM (the client has its address).
func yiaddr(r *request, resp *Reply) {
	if r.addr.IsValid() && !r.inform {
		resp.Yiaddr = r.addr.Addr()
	}
}

// ifaceChain adds the options of the interface's chain (Handler.static):
// built once per interface (see memo.go), but for the ACK of an INFORM.
func (h *Handler) ifaceChain(r *request, resp *Reply) {
	if r.inform {
		for _, f := range h.static {
			f(r, resp)
		}
		return
	}
	if r.opts != nil {
		resp.addEncoded(r.opts.reply)
	}
}

// subnet sets the subnet mask (1) and the broadcast address (28).
func subnet(r *request, resp *Reply) {
	if !r.addr.IsValid() {
		return
	}
	a := r.addr.Addr().As4()
	bits := r.addr.Bits()
	mask := ^uint32(0) << (32 - bits)
	if bits == 0 {
		mask = 0
	}
	resp.addUint32(dhcpv4.OptionSubnetMask.Code(), mask)
	resp.addUint32(dhcpv4.OptionBroadcastAddress.Code(), binary.BigEndian.Uint32(a[:])|^mask)
}

// router sets option 3 from the interface's gateway.
func router(r *request, resp *Reply) {
	if a, err := netip.ParseAddr(r.iface.Gateway); err == nil && a.Is4() {
		resp.addAddr(dhcpv4.OptionRouter.Code(), a)
	}
}

// nameservers sets option 6 from the interface's nameservers, or the
// repository's when the interface has none.
func nameservers(r *request, resp *Reply) {
	ns := r.iface.Nameservers
	if len(ns) == 0 {
		ns = r.repoSettings().Nameservers
	}
	setAddrs(resp, dhcpv4.OptionDomainNameServer, ns)
}

// timeservers sets option 42 (NTP) from the interface's timeservers, or the
// repository's. Option 42 holds addresses; names are left out.
func timeservers(r *request, resp *Reply) {
	ts := r.iface.Timeservers
	if len(ts) == 0 {
		ts = r.repoSettings().Timeservers
	}
	setAddrs(resp, dhcpv4.OptionNTPServers, ts)
}

// hostname sets option 12.
func hostname(r *request, resp *Reply) {
	if h := r.iface.Hostname; h != "" && len(h) <= 255 {
		resp.add(dhcpv4.OptionHostName.Code(), []byte(h))
	}
}

// domain sets option 15 from the interface's domain, or the repository's.
func domain(r *request, resp *Reply) {
	d := r.iface.Domain
	if d == "" {
		d = r.repoSettings().Domain
	}
	if d != "" && len(d) <= 255 {
		resp.add(dhcpv4.OptionDomainName.Code(), []byte(d))
	}
}

// leaseTime sets the lease time (51), renewal (58, T1 = 1/2) and
// rebinding (59, T2 = 7/8) times, RFC 2131 §4.4.5. The lease is the
// interface's, else the repository's, else schema.DefaultLeaseTime: never
// 0, which Tinkerbell once handed out. An INFORM gets none (§4.3.5).
func leaseTime(r *request, resp *Reply) {
	if r.inform {
		return
	}
	secs := r.iface.LeaseTime
	if secs <= 0 {
		secs = r.repoSettings().LeaseTime
	}
	if secs <= 0 {
		secs = schema.DefaultLeaseTime
	}
	lease := uint32(min(int64(secs), 0xfffffffe)) // 0xffffffff means infinite
	resp.addUint32(dhcpv4.OptionIPAddressLeaseTime.Code(), lease)
	resp.addUint32(dhcpv4.OptionRenewTimeValue.Code(), lease/2)
	resp.addUint32(dhcpv4.OptionRebindingTimeValue.Code(), uint32(uint64(lease)*7/8))
}

// searchDomains sets option 119 (RFC 3397): the domains in DNS wire
// format, uncompressed (compression is optional). A domain with an empty
// or over-long label is left out.
func searchDomains(r *request, resp *Reply) {
	var buf [255]byte
	b := buf[:0]
	for _, d := range r.iface.SearchDomains {
		b = appendDomain(b, d)
	}
	if len(b) > 0 {
		resp.add(dhcpv4.OptionDNSDomainSearchList.Code(), b)
	}
}

// appendDomain appends domain d as DNS labels (RFC 1035 §3.1), or nothing
// when d is not a valid name.
func appendDomain(b []byte, d string) []byte {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 253 {
		return b
	}
	start := len(b)
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 {
			return b[:start]
		}
		b = append(b, byte(len(label)))
		b = append(b, label...)
	}
	return append(b, 0)
}

// classlessRoutes sets option 121 (RFC 3442). A client that gets 121
// ignores option 3 (RFC 3442 §2.1), so when the interface has a gateway
// and no default route among its routes, the default route through the
// gateway is added last.
func classlessRoutes(r *request, resp *Reply) {
	if len(r.iface.ClasslessRoutes) == 0 {
		return
	}
	var buf [128]byte
	b := buf[:0]
	hasDefault := false
	for _, rt := range r.iface.ClasslessRoutes {
		dst, err := netip.ParsePrefix(rt.Destination)
		if err != nil || !dst.Addr().Is4() {
			continue
		}
		gw, err := netip.ParseAddr(rt.Router)
		if err != nil || !gw.Is4() {
			continue
		}
		if dst.Bits() == 0 {
			hasDefault = true
		}
		b = appendRoute(b, dst.Masked(), gw)
	}
	if gw, err := netip.ParseAddr(r.iface.Gateway); err == nil && gw.Is4() && !hasDefault && len(b) > 0 {
		b = appendRoute(b, netip.PrefixFrom(netip.IPv4Unspecified(), 0), gw)
	}
	if len(b) > 0 {
		resp.add(dhcpv4.OptionClasslessStaticRoute.Code(), b)
	}
}

// appendRoute appends one RFC 3442 route: the prefix length, the
// significant octets of the destination, the router.
func appendRoute(b []byte, dst netip.Prefix, gw netip.Addr) []byte {
	a, g := dst.Addr().As4(), gw.As4()
	b = append(b, byte(dst.Bits()))
	b = append(b, a[:(dst.Bits()+7)/8]...)
	return append(b, g[:]...)
}

// setAddrs sets code to the IPv4 addresses among addrs; none leaves it out.
func setAddrs(resp *Reply, code dhcpv4.OptionCode, addrs []string) {
	var buf [64]byte
	b := buf[:0]
	for _, s := range addrs {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
			v := a.As4()
			b = append(b, v[:]...)
		}
	}
	if len(b) > 0 && len(b) <= 252 {
		resp.add(code.Code(), b)
	}
}

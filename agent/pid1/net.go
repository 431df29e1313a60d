package pid1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
)

// VendorClass is the DHCP vendor class (option 60) the installer sends, so
// a DHCP server can tell it from the firmware and iPXE that came before.
const VendorClass = "gitmetal-installer"

// Route is a route a lease asks for.
type Route struct {
	Dst     netip.Prefix // 0.0.0.0/0 for the default route
	Gateway netip.Addr   // invalid (zero) for an on-link route
}

// NetConfig is what a DHCP lease configures.
type NetConfig struct {
	Addr      netip.Prefix // the address and the subnet's length
	Broadcast netip.Addr
	Server    netip.Addr // the DHCP server identifier
	// Routes are the classless static routes (option 121) when the lease
	// has them, which RFC 3442 says replace the routers; else a default
	// route through the first router (option 3), if any.
	Routes   []Route
	DNS      []netip.Addr
	Search   []string
	Hostname string
	// Lease, T1 and T2 are the lease time and when to renew and rebind
	// (defaults: half and seven eighths of the lease, RFC 2131 §4.4.5).
	Lease, T1, T2 time.Duration
}

// infiniteLease is option 51's 0xffffffff.
const infiniteLease = time.Duration(0xffffffff) * time.Second

// ConfigFromACK reads a NetConfig from a DHCPACK.
func ConfigFromACK(ack *dhcpv4.DHCPv4) (NetConfig, error) {
	var c NetConfig
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return c, errors.New("the lease has no address (yiaddr)")
	}
	mask := ack.SubnetMask()
	if mask == nil {
		// RFC 2131 wants option 1 with an address; guess the classful
		// mask the way old clients do rather than give up.
		mask = ack.YourIPAddr.DefaultMask()
	}
	ones, bits := mask.Size()
	if bits != 32 {
		return c, fmt.Errorf("subnet mask %s is not an IPv4 mask", net.IP(mask))
	}
	c.Addr = netip.PrefixFrom(ip, ones)
	if b, ok := netip.AddrFromSlice(ack.BroadcastAddress().To4()); ok && !b.IsUnspecified() {
		c.Broadcast = b
	} else {
		c.Broadcast = broadcastOf(c.Addr)
	}
	c.Server, _ = netip.AddrFromSlice(ack.ServerIdentifier().To4())
	for _, r := range ack.ClasslessStaticRoute() {
		if r == nil || r.Dest == nil {
			continue
		}
		dst, ok := netip.AddrFromSlice(r.Dest.IP.To4())
		if !ok {
			continue
		}
		n, _ := r.Dest.Mask.Size()
		rt := Route{Dst: netip.PrefixFrom(dst, n).Masked()}
		if gw, ok := netip.AddrFromSlice(r.Router.To4()); ok && !gw.IsUnspecified() {
			rt.Gateway = gw
		}
		c.Routes = append(c.Routes, rt)
	}
	if len(c.Routes) == 0 {
		for _, r := range ack.Router() {
			if gw, ok := netip.AddrFromSlice(r.To4()); ok && !gw.IsUnspecified() {
				c.Routes = append(c.Routes, Route{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: gw})
				break
			}
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok && !a.IsUnspecified() {
			c.DNS = append(c.DNS, a)
		}
	}
	if l := ack.DomainSearch(); l != nil {
		c.Search = append(c.Search, l.Labels...)
	}
	if len(c.Search) == 0 && ack.DomainName() != "" {
		c.Search = []string{ack.DomainName()}
	}
	c.Hostname = ack.HostName()
	c.Lease = ack.IPAddressLeaseTime(time.Hour)
	c.T1 = ack.IPAddressRenewalTime(c.Lease / 2)
	c.T2 = ack.IPAddressRebindingTime(c.Lease * 7 / 8)
	return c, nil
}

func broadcastOf(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// ResolvConf renders /etc/resolv.conf: at most three name servers (the
// C library's limit, which Go's resolver keeps too) and the search list.
func (c NetConfig) ResolvConf() []byte {
	var b bytes.Buffer
	b.WriteString("# written by the gitmetal installer from its DHCP lease\n")
	for i, d := range c.DNS {
		if i == 3 {
			break
		}
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	if len(c.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(c.Search, " "))
	}
	return b.Bytes()
}

// network brings up the boot NIC and keeps its lease.
type network struct {
	handle *netlink.Handle
	// newConn opens the DHCP client's raw socket on an interface.
	newConn func(ifname string) (net.PacketConn, error)
	// resolvConf is the path written from the lease ("" writes none).
	resolvConf string
	// sethostname sets the lease's host name (nil sets none).
	sethostname func(string) error
	log         zerolog.Logger
	// attemptTimeout bounds one DHCP exchange (DORA) on one interface.
	attemptTimeout time.Duration
	// minBackoff and maxBackoff bound the waits between failed attempts.
	minBackoff, maxBackoff time.Duration
}

// bound is the result of network.up: an interface with a lease.
type bound struct {
	link   netlink.Link
	client *nclient4.Client
	lease  *nclient4.Lease
	cfg    NetConfig
}

// Name is the interface's name; MAC its address.
func (b *bound) Name() string { return b.link.Attrs().Name }
func (b *bound) MAC() string  { return b.link.Attrs().HardwareAddr.String() }

// virtualLinks are the link types that are not a NIC to boot from.
var virtualLinks = map[string]bool{
	"bridge": true, "bond": true, "vlan": true, "macvlan": true, "macvtap": true, "ipvlan": true,
	"vxlan": true, "dummy": true, "tuntap": true, "team": true, "veth": true, "geneve": true,
}

// candidates returns the interfaces to try: the one with mac, or, when mac
// is "", every Ethernet NIC (sorted by name). It says why there are
// none.
func (n *network) candidates(mac string) ([]netlink.Link, error) {
	links, err := n.handle.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []netlink.Link
	var seen []string
	for _, l := range links {
		a := l.Attrs()
		if a.EncapType != "ether" || len(a.HardwareAddr) != 6 {
			continue
		}
		seen = append(seen, a.Name+"="+a.HardwareAddr.String())
		if a.HardwareAddr.String() == mac || (mac == "" && !virtualLinks[l.Type()]) {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Attrs().Name < out[j].Attrs().Name })
	if len(out) == 0 {
		if mac != "" {
			return nil, fmt.Errorf("no interface has MAC %s (interfaces: %s): is its driver in the installer? (INSTALLER_MODULES)", mac, orNone(seen))
		}
		return nil, errors.New("no Ethernet interface: is the NIC's driver in the installer? (INSTALLER_MODULES)")
	}
	return out, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// up finds the boot NIC, brings it up and gets a lease, retrying with
// backoff until it has one or ctx ends.
func (n *network) up(ctx context.Context, mac string) (*bound, error) {
	if lo, err := n.handle.LinkByName("lo"); err == nil {
		n.handle.LinkSetUp(lo)
	}
	backoff := n.minBackoff
	for attempt := 1; ; attempt++ {
		links, err := n.candidates(mac)
		if err == nil {
			for _, l := range links {
				b, derr := n.try(ctx, l)
				if derr == nil {
					return b, nil
				}
				err = derr
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
			}
		}
		n.log.Error().Err(err).Int("attempt", attempt).Stringer("retry_in", backoff).Msg("network is not up yet")
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, n.maxBackoff)
	}
}

// try brings link up and runs one DHCP exchange on it.
func (n *network) try(ctx context.Context, l netlink.Link) (*bound, error) {
	name := l.Attrs().Name
	n.log.Debug().Str("if", name).Str("mac", l.Attrs().HardwareAddr.String()).Msg("dhcp: discover")
	if err := n.handle.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("%s: link up: %w", name, err)
	}
	conn, err := n.newConn(name)
	if err != nil {
		return nil, fmt.Errorf("%s: dhcp socket: %w", name, err)
	}
	client, err := nclient4.NewWithConn(conn, l.Attrs().HardwareAddr, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: dhcp client: %w", name, err)
	}
	actx, cancel := context.WithTimeout(ctx, n.attemptTimeout)
	defer cancel()
	lease, err := client.Request(actx, dhcpModifiers()...)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("%s (%s): dhcp: %w", name, l.Attrs().HardwareAddr, err)
	}
	cfg, err := ConfigFromACK(lease.ACK)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("%s: dhcp: %w", name, err)
	}
	b := &bound{link: l, client: client, lease: lease, cfg: cfg}
	if err := n.apply(b.link, cfg); err != nil {
		client.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b, nil
}

func dhcpModifiers() []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(VendorClass)),
		dhcpv4.WithRequestedOptions(
			dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionHostName, dhcpv4.OptionDomainName, dhcpv4.OptionBroadcastAddress,
			dhcpv4.OptionNTPServers, dhcpv4.OptionDNSDomainSearchList, dhcpv4.OptionClasslessStaticRoute,
			dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue,
		),
	}
}

// apply configures the interface from a lease: address, routes, resolver
// and host name.
func (n *network) apply(l netlink.Link, c NetConfig) error {
	addr := &netlink.Addr{
		IPNet:     &net.IPNet{IP: c.Addr.Addr().AsSlice(), Mask: net.CIDRMask(c.Addr.Bits(), 32)},
		Broadcast: c.Broadcast.AsSlice(),
	}
	if err := n.handle.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("address %s: %w", c.Addr, err)
	}
	for _, r := range c.Routes {
		rt := &netlink.Route{
			LinkIndex: l.Attrs().Index,
			Dst:       &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
		}
		if r.Gateway.IsValid() {
			rt.Gw = r.Gateway.AsSlice()
			if !c.Addr.Masked().Contains(r.Gateway) {
				rt.Flags = int(netlink.FLAG_ONLINK)
			}
		} else {
			rt.Scope = netlink.SCOPE_LINK
		}
		if err := n.handle.RouteReplace(rt); err != nil {
			return fmt.Errorf("route %s via %s: %w", r.Dst, r.Gateway, err)
		}
	}
	if n.resolvConf != "" && len(c.DNS)+len(c.Search) > 0 {
		if err := os.WriteFile(n.resolvConf, c.ResolvConf(), 0o644); err != nil {
			return fmt.Errorf("resolv.conf: %w", err)
		}
	}
	if n.sethostname != nil && c.Hostname != "" {
		if err := n.sethostname(c.Hostname); err != nil {
			return fmt.Errorf("host name %q: %w", c.Hostname, err)
		}
	}
	return nil
}

// keep renews the lease at T1 (and retries until it expires, then starts
// over with a full exchange) until ctx ends. The address stays configured
// meanwhile: the reservation is static, and an install cut off from its
// image server is worse than an address kept past its lease.
func (n *network) keep(ctx context.Context, b *bound) {
	defer b.client.Close()
	for {
		cfg := b.cfg
		if cfg.Lease >= infiniteLease {
			<-ctx.Done()
			return
		}
		start := b.lease.CreationTime
		wait := time.Until(start.Add(cfg.T1))
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(max(wait, 0)):
			}
			rctx, cancel := context.WithTimeout(ctx, n.attemptTimeout)
			lease, err := b.client.Renew(rctx, b.lease, dhcpModifiers()...)
			var nak *nclient4.ErrNak
			if errors.As(err, &nak) || (err != nil && time.Now().After(start.Add(cfg.Lease))) {
				// Refused, or expired: ask again from the start.
				lease, err = b.client.Request(rctx, dhcpModifiers()...)
			}
			cancel()
			if err == nil {
				nc, cerr := ConfigFromACK(lease.ACK)
				if cerr == nil {
					if nc.Addr != cfg.Addr {
						n.log.Warn().Str("old", cfg.Addr.String()).Str("new", nc.Addr.String()).Msg("dhcp server changed the address")
						n.handle.AddrDel(b.link, &netlink.Addr{IPNet: &net.IPNet{IP: cfg.Addr.Addr().AsSlice(), Mask: net.CIDRMask(cfg.Addr.Bits(), 32)}})
					}
					if aerr := n.apply(b.link, nc); aerr != nil {
						n.log.Error().Err(aerr).Msg("renewed lease not applied")
					}
					b.lease, b.cfg = lease, nc
					n.log.Info().Str("if", b.Name()).Str("ip", nc.Addr.String()).Stringer("lease", nc.Lease).Msg("dhcp lease renewed")
					break
				}
				err = cerr
			}
			if ctx.Err() != nil {
				return
			}
			// RFC 2131 §4.4.5: retry at half the remaining time, here at
			// least 5 s and at most a minute apart.
			wait = min(max(time.Until(start.Add(cfg.Lease))/2, 5*time.Second), time.Minute)
			n.log.Warn().Err(err).Str("if", b.Name()).Stringer("retry_in", wait).Msg("dhcp renewal failed, keeping the address")
		}
	}
}

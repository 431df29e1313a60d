package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ICMPv6 message types (RFC 4861 §4.1, §4.2).
const (
	icmpRouterSolicitation   = 133
	icmpRouterAdvertisement  = 134
	ndpOptSourceLinkLayer    = 1
	routerAdvertisementBytes = 16
)

// RAResponder answers IPv6 router solicitations on one interface with a
// router advertisement that carries router lifetime 0, no flags and no
// prefix (RFC 4861 §6.2.3): iPXE's IPv6 autoconfiguration then ends at
// once instead of timing out after about 13 s, and no client gets an IPv6
// default route or address from it.
type RAResponder struct {
	conn     *net.IPConn
	ifindex  int
	msg      []byte
	answered atomic.Int64
}

// Answered is how many advertisements were sent.
func (ra *RAResponder) Answered() int64 { return ra.answered.Load() }

// Close closes the responder's socket; Run then returns.
func (ra *RAResponder) Close() error { return ra.conn.Close() }

// EnableLinkLocalIPv6 turns IPv6 on for dev only (NewNetns turned it off
// namespace-wide), without duplicate address detection, so the link-local
// address is usable as soon as the link has carrier, and without accepting
// advertisements, so the namespace never learns a route from one.
func EnableLinkLocalIPv6(ctx context.Context, ns *Netns, dev string) error {
	_, err := ns.Run(ctx, "sysctl", "-qw",
		"net.ipv6.conf."+dev+".accept_dad=0",
		"net.ipv6.conf."+dev+".accept_ra=0",
		"net.ipv6.conf."+dev+".autoconf=0",
		"net.ipv6.conf."+dev+".disable_ipv6=0")
	return err
}

// NewRAResponder opens a raw ICMPv6 socket inside ns, bound to dev and
// joined to the all-routers group there.
func NewRAResponder(ns *Netns, dev string) (*RAResponder, error) {
	ra := &RAResponder{}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		ra.ifindex = ifi.Index
		ra.msg = routerAdvertisement(ifi.HardwareAddr)
		c, err := net.ListenIP("ip6:ipv6-icmp", &net.IPAddr{IP: net.IPv6unspecified})
		if err != nil {
			return err
		}
		ra.conn = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("router advertisement socket on %s: %w", dev, err)
	}
	rc, err := ra.conn.SyscallConn()
	if err != nil {
		ra.conn.Close()
		return nil, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		s := int(fd)
		// RFC 4861 §6.1.2: hosts drop advertisements whose hop limit is
		// not 255.
		serr = errors.Join(
			unix.SetsockoptString(s, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev),
			unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255),
			unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, 255),
			unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ra.ifindex),
			unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0),
			unix.SetsockoptIPv6Mreq(s, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, &unix.IPv6Mreq{
				Multiaddr: [16]byte(net.ParseIP("ff02::2").To16()),
				Interface: uint32(ra.ifindex),
			}),
		)
	})
	if err = errors.Join(err, serr); err != nil {
		ra.conn.Close()
		return nil, fmt.Errorf("router advertisement socket on %s: %w", dev, err)
	}
	return ra, nil
}

// routerAdvertisement is the message: current hop limit 0 (unspecified),
// no M or O flag, router lifetime 0, reachable time and retransmit timer
// 0 (unspecified), and the router's link-layer address. The kernel fills
// in the checksum of raw ICMPv6 sockets (RFC 3542 §3.1).
func routerAdvertisement(mac net.HardwareAddr) []byte {
	b := make([]byte, routerAdvertisementBytes, routerAdvertisementBytes+8)
	b[0] = icmpRouterAdvertisement
	if len(mac) == 6 {
		b = append(b, ndpOptSourceLinkLayer, 1)
		b = append(b, mac...)
	}
	return b
}

// run answers solicitations until ctx ends, then closes the socket. A
// solicitation is answered to all nodes (ff02::1), as RFC 4861 §6.2.6
// allows, so the answer needs no neighbour resolution of the soliciting
// host.
func (ra *RAResponder) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { ra.conn.Close() })
	defer stop()
	allNodes := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: fmt.Sprint(ra.ifindex)}
	buf := make([]byte, 1500)
	for {
		n, _, err := ra.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("router advertisement read: %w", err)
		}
		if n < 8 || buf[0] != icmpRouterSolicitation || buf[1] != 0 {
			continue
		}
		// A failed write (the link-local address not there yet) loses one
		// answer; the client solicits again.
		if _, err := ra.conn.WriteTo(ra.msg, allNodes); err == nil {
			ra.answered.Add(1)
		}
	}
}

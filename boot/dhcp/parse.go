package dhcp

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// parseInto decodes the DHCPv4 packet q into d, as dhcpv4.FromBytes does
// (FuzzParse holds the two to the same result), but reusing d and its
// Options map and pointing into q instead of copying: the server's workers
// parse every packet into the same request, so a packet allocates nothing
// here. d is valid until q is reused. An option that appears more than
// once is concatenated (RFC 3396), which copies.
func parseInto(d *dhcpv4.DHCPv4, q []byte) error {
	const headerLen = 236
	if len(q) < headerLen+4 {
		return fmt.Errorf("malformed DHCP packet: %d bytes, want at least %d", len(q), headerLen+4)
	}
	if cookie := q[headerLen : headerLen+4]; string(cookie) != magicCookie {
		return fmt.Errorf("malformed DHCP packet: got magic cookie %v, want %v", cookie, []byte(magicCookie))
	}
	hlen := min(int(q[2]), 16)
	opts := d.Options
	if opts == nil {
		opts = make(dhcpv4.Options)
	}
	clear(opts)
	*d = dhcpv4.DHCPv4{
		OpCode:         dhcpv4.OpcodeType(q[0]),
		HWType:         iana.HWType(q[1]),
		HopCount:       q[3],
		TransactionID:  dhcpv4.TransactionID(q[4:8]),
		NumSeconds:     uint16(q[8])<<8 | uint16(q[9]),
		Flags:          uint16(q[10])<<8 | uint16(q[11]),
		ClientIPAddr:   net.IP(q[12:16:16]),
		YourIPAddr:     net.IP(q[16:20:20]),
		ServerIPAddr:   net.IP(q[20:24:24]),
		GatewayIPAddr:  net.IP(q[24:28:28]),
		ClientHWAddr:   net.HardwareAddr(q[28 : 28+hlen : 28+hlen]),
		ServerHostName: cString(q[44:108]),
		BootFileName:   cString(q[108:236]),
		Options:        opts,
	}
	p := q[headerLen+4:]
	if len(p) == 0 {
		return nil // no options at all is not missing an end option
	}
	for len(p) > 0 {
		code := p[0]
		p = p[1:]
		switch code {
		case 0: // pad
			continue
		case 255: // end; what follows is padding
			return nil
		}
		if len(p) == 0 || len(p) < 1+int(p[0]) {
			return errors.New("error collecting options: truncated option")
		}
		n := int(p[0])
		v := p[1 : 1+n : 1+n]
		p = p[1+n:]
		if old, ok := opts[code]; ok {
			v = append(old[:len(old):len(old)], v...)
		}
		opts[code] = v
	}
	return errors.New("error collecting options: no end option")
}

// magicCookie starts the options of a DHCP message (RFC 2131 §3).
const magicCookie = "\x63\x82\x53\x63"

// cString returns b up to its first NUL, without allocating when empty.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if len(b) == 0 {
		return ""
	}
	return string(b)
}

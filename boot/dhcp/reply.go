package dhcp

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Reply is a DHCP reply as the option functions build it and the server
// sends it. Options are kept in wire form in the order the chain adds
// them, each added once by the function that owns it: the message type
// first, the relay agent information last (RFC 3046 §2.1), no map and no
// sort on the packet path. Requests are dhcpv4.DHCPv4 values; replies are
// written here because building them through dhcpv4.Options (a map,
// sorted and re-encoded per packet) cost more than everything else the
// server did per packet (measured with BenchmarkHandle: 7.4 µs and 78
// allocations per packet before, under 3 µs and 12 after, with parseInto).
type Reply struct {
	// Header fields, RFC 2131 §2.
	HType  uint8
	Xid    [4]byte
	Flags  uint16
	Ciaddr netip.Addr // zero value: 0.0.0.0
	Yiaddr netip.Addr
	Siaddr netip.Addr
	Giaddr netip.Addr
	Chaddr net.HardwareAddr
	// File is the boot file name field; at most 127 bytes (longer names
	// go into option 67, see netboot).
	File string

	msgType dhcpv4.MessageType
	n       int
	opts    [maxOptionBytes]byte
}

// maxOptionBytes bounds the options of a reply. 576 − 240 bytes of fixed
// header is what every client accepts (RFC 2131 §2, no option 57 needed);
// the largest reply the chains build is well under it.
const maxOptionBytes = 576 - 240

// bootpMinLen is the smallest BOOTP message some relays forward (RFC 951).
const bootpMinLen = 300

// MessageType returns the reply's DHCP message type.
func (r *Reply) MessageType() dhcpv4.MessageType { return r.msgType }

// Broadcast reports whether the reply's broadcast flag is set.
func (r *Reply) Broadcast() bool { return r.Flags&0x8000 != 0 }

// add appends option code with value v. A value longer than 255 bytes is
// split into several instances (RFC 3396), which clients concatenate. An
// option that does not fit is dropped: a reply without, say, its search
// list is better than no reply.
func (r *Reply) add(code uint8, v []byte) {
	need := len(v) + 2*((len(v)+254)/255)
	if len(v) == 0 {
		need = 2
	}
	if r.n+need > len(r.opts) {
		return
	}
	for first := true; first || len(v) > 0; first = false {
		k := min(len(v), 255)
		r.opts[r.n], r.opts[r.n+1] = code, byte(k)
		copy(r.opts[r.n+2:], v[:k])
		r.n += 2 + k
		v = v[k:]
	}
}

// addEncoded appends options already in wire form, all or none.
func (r *Reply) addEncoded(b []byte) {
	if r.n+len(b) > len(r.opts) {
		return
	}
	r.n += copy(r.opts[r.n:], b)
}

// addUint32 appends a 4-byte option.
func (r *Reply) addUint32(code uint8, v uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	r.add(code, b[:])
}

// addAddr appends a one-address option.
func (r *Reply) addAddr(code uint8, a netip.Addr) {
	b := a.As4()
	r.add(code, b[:])
}

// Options returns the options in wire form, without the end option.
func (r *Reply) Options() []byte { return r.opts[:r.n] }

// AppendTo appends the reply in wire form to b.
func (r *Reply) AppendTo(b []byte) []byte {
	start := len(b)
	b = append(b, byte(dhcpv4.OpcodeBootReply), r.HType, byte(len(r.Chaddr)), 0)
	b = append(b, r.Xid[:]...)
	b = binary.BigEndian.AppendUint16(b, 0) // secs
	b = binary.BigEndian.AppendUint16(b, r.Flags)
	for _, a := range []netip.Addr{r.Ciaddr, r.Yiaddr, r.Siaddr, r.Giaddr} {
		v := [4]byte{}
		if a.Is4() {
			v = a.As4()
		}
		b = append(b, v[:]...)
	}
	var chaddr [16]byte
	copy(chaddr[:], r.Chaddr)
	b = append(b, chaddr[:]...)
	b = append(b, make([]byte, 64)...) // sname
	var file [128]byte
	copy(file[:127], r.File)
	b = append(b, file[:]...)
	b = append(b, magicCookie...)
	b = append(b, r.opts[:r.n]...)
	b = append(b, 255)
	for len(b)-start < bootpMinLen {
		b = append(b, 0)
	}
	return b
}

// Bytes returns the reply in wire form.
func (r *Reply) Bytes() []byte { return r.AppendTo(make([]byte, 0, 576)) }

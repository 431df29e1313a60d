package dhcp

import (
	"fmt"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

// BenchmarkHandle measures the work a server worker does per packet apart
// from the socket: parse, look up, build, serialise; for a PXE request (every
// option and the netboot block) against 10,000 reservations.
func BenchmarkHandle(b *testing.B) {
	const n = 10_000
	f := &schema.Fleet{Settings: schema.DefaultSettings(), Hardware: map[string]*schema.Hardware{}}
	for i := range n {
		iface := testIface(fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff), fmt.Sprintf("10.200.%d.%d/16", 1+i/250, 1+i%250), fmt.Sprintf("m%d", i))
		f.Hardware[fmt.Sprintf("m%d", i)] = &schema.Hardware{Name: fmt.Sprintf("m%d", i), Interfaces: []schema.Interface{iface}}
	}
	st := store.TestStore(b, f)
	h := testHandler(b, testConfig(b, ModeReservation, st))
	mac, _ := net.ParseMAC("02:00:00:00:12:34")
	req := newRequest(b, dhcpv4.MessageTypeDiscover, mac.String(), pxe(iana.EFI_X86_64), relayed("10.200.0.2"))
	pkt := req.ToBytes()
	out := make([]byte, 0, 1500)
	sc := new(scratch)
	r := &dhcpv4.DHCPv4{}
	b.ReportAllocs()
	for b.Loop() {
		if err := parseInto(r, pkt); err != nil {
			b.Fatal(err)
		}
		res, err := h.handle(r, ServerPort, sc)
		if err != nil || res.Reply == nil {
			b.Fatalf("no reply: %v %v", res.Note, err)
		}
		_ = res.Reply.AppendTo(out[:0])
	}
}

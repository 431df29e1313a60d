package dhcp

import (
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzHandler feeds random bytes through the server's path: parse (as
// the workers do, into a reused request), handle in every mode and on both
// ports, serialise the reply and pick its destination. Nothing may panic;
// a reply must parse back with dhcpv4.
func FuzzHandler(f *testing.F) {
	for _, tc := range handlerCases() {
		f.Add(tc.req(f).ToBytes())
	}
	f.Add([]byte{})
	f.Add(make([]byte, 240))
	st := testStore(f)
	var handlers []*Handler
	for _, c := range []Config{testConfig(f, ModeReservation, st), testConfig(f, ModeProxy, st)} {
		handlers = append(handlers, testHandler(f, c))
		c.ProxyUnknown = c.Mode == ModeProxy
		handlers = append(handlers, testHandler(f, c))
	}
	from := netip.MustParseAddrPort("10.10.0.50:68")
	req, sc := &dhcpv4.DHCPv4{}, new(scratch)
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := parseInto(req, b); err != nil {
			return
		}
		for _, h := range handlers {
			for _, port := range []int{ServerPort, PXEPort} {
				res, err := h.handle(req, port, sc)
				if err != nil {
					t.Fatalf("Handle: %v", err)
				}
				if res.Reply == nil {
					continue
				}
				if _, err := dhcpv4.FromBytes(res.Reply.Bytes()); err != nil {
					t.Fatalf("reply does not parse: %v", err)
				}
				replyDestination(req, res.Reply, from, port)
			}
		}
	})
}

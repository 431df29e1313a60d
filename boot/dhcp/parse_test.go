package dhcp

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzParse holds parseInto to dhcpv4.FromBytes: the same packets are
// accepted, into the same fields and options, also when parseInto reuses
// a request that held another packet.
func FuzzParse(f *testing.F) {
	for _, tc := range handlerCases() {
		f.Add(tc.req(f).ToBytes())
	}
	f.Add(make([]byte, 240))
	prev := newRequest(f, dhcpv4.MessageTypeRequest, macFull, pxe(7), relayed("10.0.0.1")).ToBytes()
	f.Fuzz(func(t *testing.T, b []byte) {
		want, werr := dhcpv4.FromBytes(b)
		var got dhcpv4.DHCPv4
		if err := parseInto(&got, prev); err != nil {
			t.Fatal(err)
		}
		gerr := parseInto(&got, b)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("errors differ: FromBytes %v, parseInto %v", werr, gerr)
		}
		if werr != nil {
			return
		}
		if diff := cmp.Diff(want, &got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("parseInto differs from FromBytes (-want +got):\n%s", diff)
		}
	})
}

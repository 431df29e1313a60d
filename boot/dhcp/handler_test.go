package dhcp

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the handler's output")

// handlerCase is one golden-packet case: a request, the mode and port it
// arrives in, and the golden file of the handler's answer.
type handlerCase struct {
	name         string
	mode         Mode
	proxyUnknown bool
	port         int
	req          func(t testing.TB) *dhcpv4.DHCPv4
	// want is checked on top of the golden file, so a wrong golden file
	// cannot bless a broken rule.
	// back is the reply parsed back from its wire form, nil for none.
	want func(t *testing.T, res Result, back *dhcpv4.DHCPv4)
}

func req(mt dhcpv4.MessageType, mac string, opts ...reqOpt) func(t testing.TB) *dhcpv4.DHCPv4 {
	return func(t testing.TB) *dhcpv4.DHCPv4 { return newRequest(t, mt, mac, opts...) }
}

var (
	requested = func(ip string) reqOpt {
		return withOpt(dhcpv4.OptRequestedIPAddress(netip.MustParseAddr(ip).AsSlice()))
	}
	serverID = func(ip string) reqOpt { return withOpt(dhcpv4.OptServerIdentifier(netip.MustParseAddr(ip).AsSlice())) }
)

func handlerCases() []handlerCase {
	disc, rq := dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest
	return []handlerCase{
		// Reservation mode, plain DHCP.
		{name: "res-discover", req: req(disc, macFull), want: wantOffer("10.10.0.11", "")},
		{name: "res-request-selecting", req: req(rq, macFull, serverID("10.10.0.1"), requested("10.10.0.11")), want: wantAck("10.10.0.11", "")},
		{name: "res-request-init-reboot", req: req(rq, macFull, requested("10.10.0.11")), want: wantAck("10.10.0.11", "")},
		{name: "res-request-renew", req: req(rq, macFull, withCiaddr("10.10.0.11")), want: wantAck("10.10.0.11", "")},
		{name: "res-request-wrong-address", req: req(rq, macFull, requested("10.10.0.99")), want: wantNote(NoteNAK, true)},
		{name: "res-request-other-server", req: req(rq, macFull, serverID("10.10.0.250"), requested("10.10.0.11")), want: wantNote(NoteOtherServer, false)},
		{name: "res-inform", req: req(dhcpv4.MessageTypeInform, macFull, withCiaddr("10.10.0.11")), want: wantInform},
		{name: "res-second-interface", req: req(disc, macSecond), want: wantOffer("10.10.1.11", "")},
		{name: "res-settings-fallback", req: req(disc, macDefaults), want: wantOffer("10.10.0.17", "")},
		{name: "res-relayed", req: req(disc, macFull, relayed("10.10.0.254")), want: wantOffer("10.10.0.11", "")},
		{name: "res-unknown-mac", req: req(disc, macUnknown, pxe(iana.EFI_X86_64)), want: wantNote(NoteUnknownMAC, false)},
		{name: "res-disabled", req: req(disc, macDisabled), want: wantNote(NoteDisabled, false)},
		{name: "res-no-address", req: req(disc, macNoAddr), want: wantNote(NoteNoAddress, false)},
		{name: "res-release", req: req(dhcpv4.MessageTypeRelease, macFull, withCiaddr("10.10.0.11")), want: wantNote(NoteRelease, false)},
		{name: "res-decline", req: req(dhcpv4.MessageTypeDecline, macFull, requested("10.10.0.11")), want: wantNote(NoteDecline, false)},

		// Reservation mode, netboot: every architecture.
		{name: "res-pxe-bios", req: req(disc, macFull, pxe(iana.INTEL_X86PC)), want: wantOffer("10.10.0.11", "undionly.kpxe")},
		{name: "res-pxe-efi-ia32", req: req(disc, macFull, pxe(iana.EFI_IA32)), want: wantOffer("10.10.0.11", "ipxe.efi")},
		{name: "res-pxe-efi-x64", req: req(disc, macFull, pxe(iana.EFI_X86_64)), want: wantOffer("10.10.0.11", "ipxe.efi")},
		{name: "res-pxe-efi-bc", req: req(rq, macFull, pxe(iana.EFI_BC), requested("10.10.0.11")), want: wantAck("10.10.0.11", "ipxe.efi")},
		{name: "res-pxe-arm64", req: req(disc, macFull, pxe(iana.EFI_ARM64)), want: wantOffer("10.10.0.11", "snp.efi")},
		{name: "res-http-x64", req: req(disc, macFull, httpBoot(iana.EFI_X86_64_HTTP)), want: wantOffer("10.10.0.11", "http://10.10.0.1:8080/ipxe/bin/ipxe.efi")},
		{name: "res-http-arm64", req: req(disc, macFull, httpBoot(iana.EFI_ARM64_HTTP)), want: wantOffer("10.10.0.11", "http://10.10.0.1:8080/ipxe/bin/snp.efi")},
		{name: "res-pxe-unsupported-arch", req: req(disc, macFull, pxe(iana.EFI_ARM32)), want: wantOffer("10.10.0.11", "")},
		{name: "res-ipxe", req: req(disc, macFull, ipxe(iana.INTEL_X86PC)), want: wantOffer("10.10.0.11", "http://10.10.0.1:8080/ipxe/52:54:00:00:00:01/boot.ipxe")},
		{name: "res-ipxe-ack", req: req(rq, macFull, ipxe(iana.EFI_X86_64), requested("10.10.0.11")), want: wantAck("10.10.0.11", "http://10.10.0.1:8080/ipxe/52:54:00:00:00:01/boot.ipxe")},
		{name: "res-no-pxe", req: req(disc, macNoPXE, pxe(iana.EFI_X86_64)), want: wantOffer("10.10.0.12", "")},
		{name: "res-no-pxe-ipxe", req: req(disc, macNoPXE, ipxe(iana.EFI_X86_64)), want: wantOffer("10.10.0.12", "")},
		{name: "res-override-binary", req: req(disc, macOverride, pxe(iana.EFI_X86_64)), want: wantOffer("10.10.0.14", "custom.efi")},
		{name: "res-override-url", req: req(disc, macOverride, ipxe(iana.EFI_X86_64)), want: wantOffer("10.10.0.14", "http://10.10.0.9/custom.ipxe")},
		{name: "res-override-script", req: req(disc, macScript, ipxe(iana.INTEL_X86PC)), want: wantOffer("10.10.0.15", "http://10.10.0.1:8080/ipxe/52:54:00:00:00:05/boot.ipxe")},
		{name: "res-pxe-relayed", req: req(disc, macFull, pxe(iana.EFI_X86_64), relayed("10.10.0.254")), want: wantOffer("10.10.0.11", "ipxe.efi")},

		// Proxy mode: boot information only, never an address.
		{name: "proxy-pxe-bios", mode: ModeProxy, req: req(disc, macFull, pxe(iana.INTEL_X86PC)), want: wantOffer("", "undionly.kpxe")},
		{name: "proxy-pxe-efi-x64", mode: ModeProxy, req: req(disc, macFull, pxe(iana.EFI_X86_64)), want: wantOffer("", "ipxe.efi")},
		{name: "proxy-pxe-arm64", mode: ModeProxy, req: req(disc, macFull, pxe(iana.EFI_ARM64)), want: wantOffer("", "snp.efi")},
		{name: "proxy-http-x64", mode: ModeProxy, req: req(disc, macFull, httpBoot(iana.EFI_X86_64_HTTP)), want: wantOffer("", "http://10.10.0.1:8080/ipxe/bin/ipxe.efi")},
		{name: "proxy-ipxe", mode: ModeProxy, req: req(disc, macFull, ipxe(iana.EFI_X86_64)), want: wantOffer("", "http://10.10.0.1:8080/ipxe/52:54:00:00:00:01/boot.ipxe")},
		{name: "proxy-request-4011", mode: ModeProxy, port: PXEPort, req: req(rq, macFull, pxe(iana.EFI_X86_64), withCiaddr("10.10.5.5")), want: wantAck("", "ipxe.efi")},
		{name: "proxy-request-67-other-server", mode: ModeProxy, req: req(rq, macFull, pxe(iana.EFI_X86_64), serverID("10.10.0.250"), requested("10.10.5.5")), want: wantNote(NoteOtherServer, false)},
		{name: "proxy-not-pxe", mode: ModeProxy, req: req(disc, macFull), want: wantNote(NoteNotNetboot, false)},
		{name: "proxy-no-pxe", mode: ModeProxy, req: req(disc, macNoPXE, pxe(iana.EFI_X86_64)), want: wantNote(NoteNotNetboot, false)},
		{name: "proxy-unsupported-arch", mode: ModeProxy, req: req(disc, macFull, pxe(iana.EFI_ARM32)), want: wantNote(NoteNotNetboot, false)},
		{name: "proxy-unknown-mac", mode: ModeProxy, req: req(disc, macUnknown, pxe(iana.EFI_X86_64)), want: wantNote(NoteUnknownMAC, false)},
		{name: "proxy-unknown-mac-allowed", mode: ModeProxy, proxyUnknown: true, req: req(disc, macUnknown, pxe(iana.EFI_X86_64)), want: wantOffer("", "ipxe.efi")},
		{name: "proxy-unknown-mac-allowed-ipxe", mode: ModeProxy, proxyUnknown: true, req: req(disc, macUnknown, ipxe(iana.EFI_X86_64)), want: wantOffer("", "http://10.10.0.1:8080/ipxe/discover.ipxe")},
		{name: "proxy-disabled", mode: ModeProxy, req: req(disc, macDisabled, pxe(iana.EFI_X86_64)), want: wantNote(NoteDisabled, false)},
	}
}

// TestHandlerGolden runs every case against the golden dump of its answer
// in testdata/NAME.golden; -update rewrites them.
func TestHandlerGolden(t *testing.T) {
	t.Parallel()
	st := testStore(t)
	for _, tc := range handlerCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mode, port := tc.mode, tc.port
			if mode == "" {
				mode = ModeReservation
			}
			if port == 0 {
				port = ServerPort
			}
			c := testConfig(t, mode, st)
			c.ProxyUnknown = tc.proxyUnknown
			h := testHandler(t, c)
			rq := tc.req(t)
			res, err := h.Handle(rq, port)
			if err != nil {
				t.Fatalf("Handle: %v", err)
			}
			var back *dhcpv4.DHCPv4
			if res.Reply != nil {
				back = checkInvariants(t, mode, rq, res.Reply)
			}
			tc.want(t, res, back)
			got := dump(rq, res, back, port)
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s: answer differs from the golden file (-want +got):\n%s", path, diff)
			}
		})
	}
}

// checkInvariants holds for every reply: it parses, names this server,
// echoes xid and chaddr, has each option once with the message type first
// and the relay agent information last, and follows the mode's rules on
// addresses and leases. It returns the parsed reply.
func checkInvariants(t *testing.T, mode Mode, rq *dhcpv4.DHCPv4, reply *Reply) *dhcpv4.DHCPv4 {
	t.Helper()
	b := reply.Bytes()
	back, err := dhcpv4.FromBytes(b)
	if err != nil {
		t.Fatalf("reply does not parse back: %v", err)
	}
	if len(b) < bootpMinLen || len(b) > 576 {
		t.Errorf("reply size: got %d bytes, want %d to 576", len(b), bootpMinLen)
	}
	codes := optionCodes(t, reply.Options())
	if len(codes) == 0 || codes[0] != dhcpv4.OptionDHCPMessageType.Code() {
		t.Errorf("option order: got %v, want 53 first", codes)
	}
	seen := map[uint8]bool{}
	for i, c := range codes {
		if seen[c] {
			t.Errorf("option %d: added twice", c)
		}
		seen[c] = true
		if c == dhcpv4.OptionRelayAgentInformation.Code() && i != len(codes)-1 {
			t.Errorf("option order: got %v, want 82 last", codes)
		}
	}
	if got := back.ServerIdentifier().String(); got != testServer.String() {
		t.Errorf("option 54: got %s, want %s", got, testServer)
	}
	if back.TransactionID != rq.TransactionID || back.ClientHWAddr.String() != rq.ClientHWAddr.String() {
		t.Errorf("xid/chaddr: got %s/%s, want %s/%s", back.TransactionID, back.ClientHWAddr, rq.TransactionID, rq.ClientHWAddr)
	}
	if back.OpCode != dhcpv4.OpcodeBootReply {
		t.Errorf("op: got %s, want BootReply", back.OpCode)
	}
	mt := back.MessageType()
	if mode == ModeProxy {
		if !back.YourIPAddr.IsUnspecified() || back.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || back.Options.Has(dhcpv4.OptionSubnetMask) {
			t.Errorf("proxy reply gives an address or lease: yiaddr %s, options %v", back.YourIPAddr, back.Options)
		}
		if got := back.ClassIdentifier(); got != vendorPXE && got != vendorHTTP {
			t.Errorf("proxy reply option 60: got %q, want PXEClient or HTTPClient", got)
		}
	}
	if mode == ModeReservation && (mt == dhcpv4.MessageTypeOffer || mt == dhcpv4.MessageTypeAck) && isZero(rq.ClientIPAddr) {
		lt := back.Options.Get(dhcpv4.OptionIPAddressLeaseTime)
		if len(lt) != 4 || binary.BigEndian.Uint32(lt) == 0 {
			t.Errorf("lease time: got %v, want 4 bytes, not 0", lt)
		}
	}
	if back.BootFileName == "" && back.Options.Get(dhcpv4.OptionBootfileName) == nil {
		if !back.ServerIPAddr.IsUnspecified() {
			t.Errorf("next-server without a boot file: got siaddr %s, want 0.0.0.0", back.ServerIPAddr)
		}
	}
	if isIPXE(rq) && back.BootFileName != "" {
		if got := back.Options[optionIPXEEncap]; string(got) != "\xb0\x01\x01" {
			t.Errorf("option 175 to iPXE: got %v, want [176 1 1]", got)
		}
	}
	if v := rq.Options.Get(dhcpv4.OptionRelayAgentInformation); v != nil {
		if got := back.Options.Get(dhcpv4.OptionRelayAgentInformation); string(got) != string(v) {
			t.Errorf("option 82: got %v, want it echoed: %v", got, v)
		}
	}
	return back
}

// optionCodes returns the codes of a TLV option stream in order.
func optionCodes(t *testing.T, opts []byte) []uint8 {
	t.Helper()
	var codes []uint8
	for len(opts) > 0 {
		if len(opts) < 2 || len(opts) < 2+int(opts[1]) {
			t.Fatalf("truncated option stream at %v", opts)
		}
		codes = append(codes, opts[0])
		opts = opts[2+int(opts[1]):]
	}
	return codes
}

func wantNote(n Note, reply bool) func(*testing.T, Result, *dhcpv4.DHCPv4) {
	return func(t *testing.T, res Result, back *dhcpv4.DHCPv4) {
		t.Helper()
		if res.Note != n {
			t.Errorf("note: got %q, want %q", res.Note, n)
		}
		if got := res.Reply != nil; got != reply {
			t.Fatalf("reply: got %v, want %v", got, reply)
		}
		if n == NoteNAK && back.MessageType() != dhcpv4.MessageTypeNak {
			t.Errorf("reply type: got %s, want NAK", back.MessageType())
		}
	}
}

func wantReply(mt dhcpv4.MessageType, yiaddr, boot string) func(*testing.T, Result, *dhcpv4.DHCPv4) {
	return func(t *testing.T, res Result, r *dhcpv4.DHCPv4) {
		t.Helper()
		wantNote(NoteReply, true)(t, res, r)
		if got := r.MessageType(); got != mt {
			t.Errorf("reply type: got %s, want %s", got, mt)
		}
		if yiaddr == "" {
			yiaddr = "0.0.0.0"
		}
		if got := r.YourIPAddr.String(); got != yiaddr {
			t.Errorf("yiaddr: got %s, want %s", got, yiaddr)
		}
		gotBoot := r.BootFileName
		if v := r.Options.Get(dhcpv4.OptionBootfileName); v != nil {
			gotBoot = string(v)
		}
		if gotBoot != boot {
			t.Errorf("boot file: got %q, want %q", gotBoot, boot)
		}
		wantSiaddr := "0.0.0.0"
		if boot != "" {
			wantSiaddr = testServer.String()
		}
		if got := r.ServerIPAddr.String(); got != wantSiaddr {
			t.Errorf("siaddr: got %s, want %s", got, wantSiaddr)
		}
		if strings.Contains(boot, "/ipxe/bin/") {
			if got := r.ClassIdentifier(); got != vendorHTTP {
				t.Errorf("HTTP boot option 60: got %q, want %q", got, vendorHTTP)
			}
		}
	}
}

func wantOffer(yiaddr, boot string) func(*testing.T, Result, *dhcpv4.DHCPv4) {
	return wantReply(dhcpv4.MessageTypeOffer, yiaddr, boot)
}

func wantAck(yiaddr, boot string) func(*testing.T, Result, *dhcpv4.DHCPv4) {
	return wantReply(dhcpv4.MessageTypeAck, yiaddr, boot)
}

func wantInform(t *testing.T, res Result, back *dhcpv4.DHCPv4) {
	t.Helper()
	wantReply(dhcpv4.MessageTypeAck, "", "")(t, res, back)
	if back.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Errorf("INFORM ACK has a lease time; RFC 2131 §4.3.5 forbids it")
	}
	if got := back.ClientIPAddr.String(); got != "10.10.0.11" {
		t.Errorf("INFORM ACK ciaddr: got %s, want 10.10.0.11", got)
	}
}

// dump renders the handler's answer readably: the note, the reply's
// header, where it would be sent, and each option.
func dump(rq *dhcpv4.DHCPv4, res Result, r *dhcpv4.DHCPv4, port int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "request: %s from %s port %d\n", rq.MessageType(), rq.ClientHWAddr, port)
	fmt.Fprintf(&b, "note: %s\n", res.Note)
	if res.Hardware != "" {
		fmt.Fprintf(&b, "hardware: %s\n", res.Hardware)
	}
	if res.Detail != "" {
		fmt.Fprintf(&b, "detail: %s\n", res.Detail)
	}
	if r == nil {
		b.WriteString("reply: none\n")
		return b.String()
	}
	from := netip.MustParseAddrPort("0.0.0.0:68")
	if port == PXEPort {
		from = netip.AddrPortFrom(netip.MustParseAddr(rq.ClientIPAddr.String()), ClientPort)
	}
	fmt.Fprintf(&b, "destination: %s\n", replyDestination(rq, res.Reply, from, port))
	fmt.Fprintf(&b, "reply: %s xid=%s flags=%s hops=%d\n", r.MessageType(), r.TransactionID, r.FlagsToString(), r.HopCount)
	fmt.Fprintf(&b, "ciaddr=%s yiaddr=%s siaddr=%s giaddr=%s chaddr=%s\n", r.ClientIPAddr, r.YourIPAddr, r.ServerIPAddr, r.GatewayIPAddr, r.ClientHWAddr)
	fmt.Fprintf(&b, "sname=%q file=%q\n", r.ServerHostName, r.BootFileName)
	codes := make([]int, 0, len(r.Options))
	for c := range r.Options {
		codes = append(codes, int(c))
	}
	sort.Ints(codes)
	for _, c := range codes {
		one := dhcpv4.Options{uint8(c): r.Options[uint8(c)]}
		fmt.Fprintf(&b, "option %3d %s\n", c, strings.TrimSpace(one.String()))
	}
	fmt.Fprintf(&b, "wire: %d bytes, options in order %v\n", len(res.Reply.Bytes()), optionOrder(res.Reply.Options()))
	return b.String()
}

func optionOrder(opts []byte) []uint8 {
	var codes []uint8
	for len(opts) >= 2 && len(opts) >= 2+int(opts[1]) {
		codes = append(codes, opts[0])
		opts = opts[2+int(opts[1]):]
	}
	return codes
}

package dhcp

import (
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

// The test network: the server at .1, machines from .11.
var (
	testServer   = netip.MustParseAddr("10.10.0.1")
	testHTTPBase = "http://10.10.0.1:8080"
)

// testIface returns a fully configured interface.
func testIface(mac, ip, host string) schema.Interface {
	return schema.Interface{
		MAC:             mac,
		IP:              ip,
		Gateway:         "10.10.0.1",
		Nameservers:     []string{"10.10.0.2", "10.10.0.3"},
		Timeservers:     []string{"10.10.0.4", "ntp.example.com"},
		Domain:          "lab.example",
		SearchDomains:   []string{"lab.example", "example"},
		Hostname:        host,
		LeaseTime:       3600,
		Arch:            "x86_64",
		UEFI:            true,
		ClasslessRoutes: []schema.Route{{Destination: "10.20.0.0/16", Router: "10.10.0.254"}},
		Netboot:         schema.Netboot{AllowPXE: true},
	}
}

// The machines of the test fleet, by MAC.
const (
	macFull     = "52:54:00:00:00:01"
	macNoPXE    = "52:54:00:00:00:02"
	macDisabled = "52:54:00:00:00:03"
	macOverride = "52:54:00:00:00:04"
	macScript   = "52:54:00:00:00:05"
	macNoAddr   = "52:54:00:00:00:06"
	macDefaults = "52:54:00:00:00:07"
	macSecond   = "52:54:00:00:00:08" // second interface of m-full
	macUnknown  = "52:54:00:00:00:99"
)

// testFleet is the fleet of the handler tests: one machine per case of
// interest, and repository settings to fall back on.
func testFleet() *schema.Fleet {
	full := testIface(macFull, "10.10.0.11/24", "m-full")
	second := schema.Interface{MAC: macSecond, IP: "10.10.1.11/24", Hostname: "m-full-2", LeaseTime: 600, Netboot: schema.Netboot{AllowPXE: true}}
	noPXE := testIface(macNoPXE, "10.10.0.12/24", "m-nopxe")
	noPXE.Netboot.AllowPXE = false
	disabled := testIface(macDisabled, "10.10.0.13/24", "m-disabled")
	disabled.DisableDHCP = true
	override := testIface(macOverride, "10.10.0.14/24", "m-override")
	override.Netboot.IPXE = &schema.IPXE{URL: "http://10.10.0.9/custom.ipxe", Binary: "custom.efi"}
	script := testIface(macScript, "10.10.0.15/24", "m-script")
	script.Netboot.IPXE = &schema.IPXE{Script: "#!ipxe\nexit\n"}
	noAddr := testIface(macNoAddr, "", "m-noaddr")
	defaults := schema.Interface{MAC: macDefaults, IP: "10.10.0.17/16", Arch: "x86_64", Netboot: schema.Netboot{AllowPXE: true}}

	f := &schema.Fleet{
		Settings: &schema.Settings{
			LeaseTime:   7200,
			Nameservers: []string{"10.10.0.53"},
			Timeservers: []string{"10.10.0.123"},
			Domain:      "site.example",
		},
		Hardware: map[string]*schema.Hardware{},
	}
	for name, ifaces := range map[string][]schema.Interface{
		"m-full":     {full, second},
		"m-nopxe":    {noPXE},
		"m-disabled": {disabled},
		"m-override": {override},
		"m-script":   {script},
		"m-noaddr":   {noAddr},
		"m-defaults": {defaults},
	} {
		f.Hardware[name] = &schema.Hardware{Name: name, Interfaces: ifaces}
	}
	return f
}

// testConfig is the configuration of the handler tests.
func testConfig(t testing.TB, mode Mode, b Backend) Config {
	t.Helper()
	return Config{
		Mode:          mode,
		Interface:     "test0",
		AdvertiseAddr: testServer,
		HTTPBase:      testHTTPBase,
		Backend:       b,
	}
}

func testHandler(t testing.TB, c Config) *Handler {
	t.Helper()
	h, err := NewHandler(c)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	return h
}

func testStore(t testing.TB) *store.Store {
	t.Helper()
	return store.TestStore(t, testFleet())
}

// reqOpt changes a test request.
type reqOpt func(*dhcpv4.DHCPv4)

// newRequest returns a request of type mt from mac with a fixed xid.
func newRequest(t testing.TB, mt dhcpv4.MessageType, mac string, opts ...reqOpt) *dhcpv4.DHCPv4 {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	req := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        iana.HWTypeEthernet,
		TransactionID: dhcpv4.TransactionID{0xde, 0xad, 0xbe, 0xef},
		Flags:         0x8000,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		ClientHWAddr:  hw,
		Options:       dhcpv4.Options{},
	}
	req.UpdateOption(dhcpv4.OptMessageType(mt))
	req.UpdateOption(dhcpv4.OptParameterRequestList(
		dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
		dhcpv4.OptionHostName, dhcpv4.OptionDomainName))
	for _, o := range opts {
		o(req)
	}
	// Round-trip through the wire format, as the server sees requests.
	p, err := dhcpv4.FromBytes(req.ToBytes())
	if err != nil {
		t.Fatalf("request does not parse: %v", err)
	}
	return p
}

// pxe makes the request a PXE firmware's: vendor class, arch, NDI, UUID.
func pxe(arch iana.Arch) reqOpt {
	return func(d *dhcpv4.DHCPv4) {
		d.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:" + pad5(uint16(arch)) + ":UNDI:002001"))
		d.UpdateOption(dhcpv4.OptClientArch(arch))
		d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 2, 1}))
		d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier,
			append([]byte{0}, []byte("0123456789abcdef")...)))
	}
}

// httpBoot makes the request a UEFI HTTP boot firmware's.
func httpBoot(arch iana.Arch) reqOpt {
	return func(d *dhcpv4.DHCPv4) {
		d.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:" + pad5(uint16(arch)) + ":UNDI:003001"))
		d.UpdateOption(dhcpv4.OptClientArch(arch))
	}
}

// ipxe makes the request iPXE's: PXE options plus user class iPXE, in the
// raw form iPXE sends.
func ipxe(arch iana.Arch) reqOpt {
	return func(d *dhcpv4.DHCPv4) {
		pxe(arch)(d)
		d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")))
	}
}

func withOpt(o dhcpv4.Option) reqOpt { return func(d *dhcpv4.DHCPv4) { d.UpdateOption(o) } }

func withCiaddr(ip string) reqOpt {
	return func(d *dhcpv4.DHCPv4) { d.ClientIPAddr = net.ParseIP(ip).To4(); d.Flags = 0 }
}

// relayed makes the request come through a relay at giaddr with agent
// information (circuit ID "port7").
func relayed(giaddr string) reqOpt {
	return func(d *dhcpv4.DHCPv4) {
		d.GatewayIPAddr = net.ParseIP(giaddr).To4()
		d.HopCount = 1
		d.UpdateOption(dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(1), []byte("port7"))))
	}
}

func pad5(n uint16) string {
	s := []byte("00000")
	for i := 4; i >= 0 && n > 0; i-- {
		s[i] = byte('0' + n%10)
		n /= 10
	}
	return string(s)
}

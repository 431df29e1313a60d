package pid1

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/gitmetal/gitmetal/boot/dhcp"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/logbuf"
	"github.com/gitmetal/gitmetal/test/netlab"
)

func TestConfigFromACK(t *testing.T) {
	t.Parallel()
	ip4 := func(s string) net.IP { return net.ParseIP(s).To4() }
	base := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(ip4("10.1.2.10")),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithServerIP(ip4("10.1.2.1")),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip4("10.1.2.1"))),
		dhcpv4.WithRouter(ip4("10.1.2.1"), ip4("10.1.2.2")),
		dhcpv4.WithDNS(ip4("10.1.2.53"), ip4("10.1.2.54")),
		dhcpv4.WithOption(dhcpv4.OptHostName("vm-1")),
		dhcpv4.WithLeaseTime(3600),
	}
	tests := []struct {
		name string
		mods []dhcpv4.Modifier
		want NetConfig
	}{
		{"router, domain name", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptDomainName("lab.example"))}, NetConfig{
			Addr: netip.MustParsePrefix("10.1.2.10/24"), Broadcast: netip.MustParseAddr("10.1.2.255"),
			Server: netip.MustParseAddr("10.1.2.1"),
			Routes: []Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.1.2.1")}},
			DNS:    []netip.Addr{netip.MustParseAddr("10.1.2.53"), netip.MustParseAddr("10.1.2.54")},
			Search: []string{"lab.example"}, Hostname: "vm-1",
			Lease: time.Hour, T1: 30 * time.Minute, T2: 52*time.Minute + 30*time.Second,
		}},
		{"classless routes replace the router; search list wins", []dhcpv4.Modifier{
			dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(
				&dhcpv4.Route{Dest: &net.IPNet{IP: ip4("10.20.0.0"), Mask: net.CIDRMask(16, 32)}, Router: ip4("10.1.2.254")},
				&dhcpv4.Route{Dest: &net.IPNet{IP: ip4("10.1.3.0"), Mask: net.CIDRMask(24, 32)}, Router: ip4("0.0.0.0")},
			)),
			dhcpv4.WithDomainSearchList("a.example", "example"),
			dhcpv4.WithOption(dhcpv4.OptDomainName("ignored.example")),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(100 * time.Second)),
			dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(ip4("10.1.2.127"))),
		}, NetConfig{
			Addr: netip.MustParsePrefix("10.1.2.10/24"), Broadcast: netip.MustParseAddr("10.1.2.127"),
			Server: netip.MustParseAddr("10.1.2.1"),
			Routes: []Route{
				{Dst: netip.MustParsePrefix("10.20.0.0/16"), Gateway: netip.MustParseAddr("10.1.2.254")},
				{Dst: netip.MustParsePrefix("10.1.3.0/24")},
			},
			DNS:    []netip.Addr{netip.MustParseAddr("10.1.2.53"), netip.MustParseAddr("10.1.2.54")},
			Search: []string{"a.example", "example"}, Hostname: "vm-1",
			Lease: time.Hour, T1: 100 * time.Second, T2: 52*time.Minute + 30*time.Second,
		}},
	}
	for _, tc := range tests {
		ack, err := dhcpv4.New(append(append([]dhcpv4.Modifier(nil), base...), tc.mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ConfigFromACK(ack)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("%s: (-want +got):\n%s", tc.name, diff)
		}
	}
	noAddr, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeAck))
	if _, err := ConfigFromACK(noAddr); err == nil {
		t.Error("an ACK without yiaddr: got no error")
	}
}

func TestResolvConf(t *testing.T) {
	t.Parallel()
	c := NetConfig{
		DNS:    []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")},
		Search: []string{"a.example", "example"},
	}
	want := "# written by the gitmetal installer from its DHCP lease\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch a.example example\n"
	if got := string(c.ResolvConf()); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestBroadcastOf(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"10.1.2.3/24": "10.1.2.255", "10.1.2.3/16": "10.1.255.255", "192.168.1.1/30": "192.168.1.3", "10.0.0.1/32": "10.0.0.1"} {
		if got := broadcastOf(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("%s: got %s, want %s", in, got, want)
		}
	}
}

// TestNetworkUpWithGitmetalDHCP brings up a NIC the way PID 1 does —
// netlink, nclient4, resolv.conf, host name — against gitmetal's own DHCP
// server, in a pair of network namespaces, then renews the short lease.
func TestNetworkUpWithGitmetalDHCP(t *testing.T) {
	t.Parallel()
	p := netlab.NewPair(t, "pid1")
	const mac = "52:54:00:99:00:01"
	netlab.Must(t, p.Server.AddAddr(p.ServerIf, "10.99.0.1/24"))
	netlab.Must(t, p.Client.SetMAC(p.ClientIf, mac))
	hw := &schema.Hardware{Name: "vm-1", Interfaces: []schema.Interface{{
		MAC: mac, IP: "10.99.0.10/24", Gateway: "10.99.0.1",
		Nameservers: []string{"10.99.0.53", "10.99.0.54"}, SearchDomains: []string{"lab.example"},
		Hostname: "vm-1", LeaseTime: 4, Arch: "x86_64",
		ClasslessRoutes: []schema.Route{{Destination: "10.98.0.0/16", Router: "10.99.0.254"}},
	}}}
	st := store.TestStore(t, &schema.Fleet{
		Hardware: map[string]*schema.Hardware{hw.Name: hw}, Templates: map[string]*schema.Template{}, Workflows: map[string]*schema.Workflow{},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var srv *dhcp.Server
	netlab.Must(t, p.Server.Do(func() error {
		var err error
		srv, err = dhcp.New(dhcp.Config{
			Mode: dhcp.ModeReservation, Interface: p.ServerIf, AdvertiseAddr: netip.MustParseAddr("10.99.0.1"),
			HTTPBase: "http://10.99.0.1:8080", Backend: st, Log: zerolog.New(zerolog.NewTestWriter(t)),
		})
		return err
	}))
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()

	h, err := netns.GetFromName(p.Client.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	handle, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer handle.Close()
	var logs logbuf.Buffer
	var hostname string
	var hmu sync.Mutex
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	nw := &network{
		handle: handle,
		newConn: func(ifname string) (conn net.PacketConn, err error) {
			err = p.Client.Do(func() error {
				conn, err = nclient4.NewRawUDPConn(ifname, nclient4.ClientPort)
				return err
			})
			return conn, err
		},
		resolvConf:     resolv,
		sethostname:    func(n string) error { hmu.Lock(); hostname = n; hmu.Unlock(); return nil },
		log:            zerolog.New(&logs),
		attemptTimeout: 15 * time.Second,
		minBackoff:     100 * time.Millisecond,
		maxBackoff:     time.Second,
	}
	// A MAC no interface has: up keeps retrying and says why.
	wrongCtx, wrongCancel := context.WithTimeout(ctx, 500*time.Millisecond)
	if _, err := nw.up(wrongCtx, "52:54:00:99:00:99"); err == nil {
		t.Error("a MAC no interface has: got a lease")
	}
	wrongCancel()
	if !strings.Contains(logs.String(), "no interface has MAC 52:54:00:99:00:99") {
		t.Errorf("log lacks the missing-MAC line:\n%s", logs.String())
	}

	b, err := nw.up(ctx, mac)
	if err != nil {
		t.Fatalf("up: %v\n%s", err, logs.String())
	}
	if got, want := b.Name(), p.ClientIf; got != want {
		t.Errorf("got interface %s, want %s", got, want)
	}
	if got, want := b.cfg.Addr.String(), "10.99.0.10/24"; got != want {
		t.Errorf("got address %s, want %s", got, want)
	}
	hmu.Lock()
	if hostname != "vm-1" {
		t.Errorf("got host name %q, want vm-1", hostname)
	}
	hmu.Unlock()
	rc, _ := os.ReadFile(resolv)
	for _, want := range []string{"nameserver 10.99.0.53\n", "nameserver 10.99.0.54\n", "search lab.example\n"} {
		if !strings.Contains(string(rc), want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, rc)
		}
	}
	addrs, err := p.Client.Run(ctx, "ip", "-4", "-o", "addr", "show", "dev", p.ClientIf)
	if err != nil || !strings.Contains(addrs, "inet 10.99.0.10/24 brd 10.99.0.255") {
		t.Errorf("ip addr: got %q (%v), want 10.99.0.10/24 brd 10.99.0.255", addrs, err)
	}
	routes, err := p.Client.Run(ctx, "ip", "-4", "route", "show")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.cfg.Routes) == 0 {
		t.Error("the lease has no routes")
	}
	for _, r := range b.cfg.Routes {
		want := r.Dst.String()
		if r.Dst.Bits() == 0 {
			want = "default"
		}
		if r.Gateway.IsValid() {
			want += " via " + r.Gateway.String()
		}
		if !strings.Contains(routes, want) {
			t.Errorf("ip route lacks %q:\n%s", want, routes)
		}
	}
	if !strings.Contains(routes, "10.98.0.0/16 via 10.99.0.254") {
		t.Errorf("ip route lacks the classless route 10.98.0.0/16 via 10.99.0.254:\n%s", routes)
	}

	// The 4 s lease is renewed at T1, and the address stays.
	keepCtx, keepCancel := context.WithCancel(ctx)
	keepDone := make(chan struct{})
	go func() { nw.keep(keepCtx, b); close(keepDone) }()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(logs.String(), "dhcp lease renewed") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	keepCancel()
	<-keepDone
	if !strings.Contains(logs.String(), "dhcp lease renewed") {
		t.Errorf("no renewal within a minute of a 4 s lease:\n%s", logs.String())
	}
	if addrs, _ := p.Client.Run(ctx, "ip", "-4", "-o", "addr", "show", "dev", p.ClientIf); !strings.Contains(addrs, "10.99.0.10/24") {
		t.Errorf("after renewal: got %q, want 10.99.0.10/24 kept", addrs)
	}
	cancel()
	<-srvDone
}

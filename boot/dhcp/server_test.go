package dhcp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/logbuf"
	"github.com/gitmetal/gitmetal/test/netlab"
	"github.com/gitmetal/gitmetal/test/poll"
)

func TestReplyDestination(t *testing.T) {
	t.Parallel()
	bcast := "255.255.255.255:68"
	for _, tc := range []struct {
		name  string
		req   *dhcpv4.DHCPv4
		reply dhcpv4.MessageType
		from  string
		port  int
		want  string
	}{
		{name: "relayed", req: newRequest(t, dhcpv4.MessageTypeDiscover, macFull, relayed("10.9.0.1")), reply: dhcpv4.MessageTypeOffer, from: "10.9.0.1:67", want: "10.9.0.1:67"},
		{name: "relayed nak", req: newRequest(t, dhcpv4.MessageTypeRequest, macFull, relayed("10.9.0.1")), reply: dhcpv4.MessageTypeNak, from: "10.9.0.1:67", want: "10.9.0.1:67"},
		{name: "nak with ciaddr", req: newRequest(t, dhcpv4.MessageTypeRequest, macFull, withCiaddr("10.10.0.11")), reply: dhcpv4.MessageTypeNak, from: "10.10.0.11:68", want: bcast},
		{name: "renew with ciaddr", req: newRequest(t, dhcpv4.MessageTypeRequest, macFull, withCiaddr("10.10.0.11")), reply: dhcpv4.MessageTypeAck, from: "10.10.0.11:68", want: "10.10.0.11:68"},
		{name: "broadcast bit", req: newRequest(t, dhcpv4.MessageTypeDiscover, macFull), reply: dhcpv4.MessageTypeOffer, from: "0.0.0.0:68", want: bcast},
		{name: "no broadcast bit", req: newRequest(t, dhcpv4.MessageTypeDiscover, macFull, func(d *dhcpv4.DHCPv4) { d.Flags = 0 }), reply: dhcpv4.MessageTypeOffer, from: "0.0.0.0:68", want: bcast},
		{name: "pxe port", req: newRequest(t, dhcpv4.MessageTypeRequest, macFull, withCiaddr("10.10.0.50")), reply: dhcpv4.MessageTypeAck, from: "10.10.0.50:4011", port: PXEPort, want: "10.10.0.50:4011"},
		{name: "pxe port without source", req: newRequest(t, dhcpv4.MessageTypeRequest, macFull), reply: dhcpv4.MessageTypeAck, from: "0.0.0.0:68", port: PXEPort, want: bcast},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := tc.port
			if port == 0 {
				port = ServerPort
			}
			reply := skeleton(tc.req, tc.reply, new(Reply))
			got := replyDestination(tc.req, reply, netip.MustParseAddrPort(tc.from), port)
			if got.String() != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestLogLimiter(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	l := newLogLimiter(time.Minute, func() time.Time { return now })
	if ok, _ := l.allow("a"); !ok {
		t.Fatalf("first line about a: got held back, want logged")
	}
	if ok, _ := l.allow("a"); ok {
		t.Errorf("second line about a within the interval: got logged, want held back")
	}
	for i := range maxLinesPerInterval - 1 {
		if ok, _ := l.allow(string(rune('b' + i))); !ok {
			t.Fatalf("line %d of the interval: got held back, want logged", i+2)
		}
	}
	if ok, _ := l.allow("over-the-cap"); ok {
		t.Errorf("line over the cap: got logged, want held back")
	}
	now = now.Add(time.Minute)
	ok, suppressed := l.allow("a")
	if !ok || suppressed != 1 {
		t.Errorf("a after the interval: got (%v, %d suppressed), want (true, 1)", ok, suppressed)
	}
	if n := len(l.last); n != 1 {
		t.Errorf("keys kept after the interval: got %d, want 1 (older ones swept)", n)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	st := testStore(t)
	ok := testConfig(t, ModeReservation, st)
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // in the error; "" for no error
	}{
		{name: "valid", change: func(*Config) {}},
		{name: "off needs nothing", change: func(c *Config) { *c = Config{Mode: ModeOff} }},
		{name: "no mode", change: func(c *Config) { c.Mode = "" }, want: "dhcp mode"},
		{name: "bad mode", change: func(c *Config) { c.Mode = "auto" }, want: `dhcp mode "auto"`},
		{name: "no interface", change: func(c *Config) { c.Interface = "" }, want: "dhcp interface"},
		{name: "no advertise", change: func(c *Config) { c.AdvertiseAddr = netip.Addr{} }, want: "advertise address"},
		{name: "ipv6 advertise", change: func(c *Config) { c.AdvertiseAddr = netip.MustParseAddr("fd00::1") }, want: "advertise address"},
		{name: "no http base", change: func(c *Config) { c.HTTPBase = "" }, want: "http base"},
		{name: "bad http base", change: func(c *Config) { c.HTTPBase = "10.0.0.1:8080" }, want: "http base"},
		{name: "binary path", change: func(c *Config) { c.Binaries.EFI = "../ipxe.efi" }, want: "binary name"},
		{name: "workers", change: func(c *Config) { c.Workers = -1 }, want: "workers"},
		{name: "no backend", change: func(c *Config) { c.Backend = nil }, want: "backend"},
		{name: "proxy unknown outside proxy", change: func(c *Config) { c.ProxyUnknown = true }, want: "proxy-unknown"},
		{name: "ipv6 listen", change: func(c *Config) { c.ListenAddr = netip.MustParseAddrPort("[::]:67") }, want: "listen address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.change(&c)
			_, err := c.withDefaults()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
	c, err := ok.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.ListenAddr.String() != "0.0.0.0:67" || c.Binaries != (Binaries{"undionly.kpxe", "ipxe.efi", "snp.efi"}) || c.Workers < 2 || c.UnknownLogInterval != time.Minute {
		t.Errorf("defaults: got listen %s, binaries %+v, workers %d, interval %s", c.ListenAddr, c.Binaries, c.Workers, c.UnknownLogInterval)
	}
	if _, err := ParseMode("proxy"); err != nil {
		t.Errorf("ParseMode(proxy): %v", err)
	}
}

// panicBackend panics on every lookup, standing in for any bug below the
// handler.
type panicBackend struct{}

func (panicBackend) HardwareByMAC(memdb.WatchSet, string) (*schema.Hardware, error) {
	panic("lookup exploded")
}
func (panicBackend) Settings(memdb.WatchSet) (*schema.Settings, error) { panic("unreachable") }
func (panicBackend) Generation() uint64                                { return 1 }

// errBackend fails every lookup.
type errBackend struct{}

func (errBackend) HardwareByMAC(memdb.WatchSet, string) (*schema.Hardware, error) {
	return nil, errors.New("store unavailable")
}
func (errBackend) Generation() uint64 { return 1 }

func (errBackend) Settings(memdb.WatchSet) (*schema.Settings, error) {
	return nil, errors.New("store unavailable")
}

// TestHandlePacketRecovers: a panic while handling a packet is logged and
// the packet dropped; a store error is logged; neither escapes.
func TestHandlePacketRecovers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		backend Backend
		want    string
	}{
		{name: "panic", backend: panicBackend{}, want: "lookup exploded"},
		{name: "error", backend: errBackend{}, want: "store unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logbuf.Buffer
			s := &Server{handler: testHandler(t, testConfig(t, ModeReservation, tc.backend)), log: zerolog.New(&logs)}
			pkt := newRequest(t, dhcpv4.MessageTypeDiscover, macFull).ToBytes()
			if _, _, ok := s.answer(&listener{port: ServerPort}, pkt, netip.MustParseAddrPort("0.0.0.0:68"), new(dhcpv4.DHCPv4), nil, new(scratch)); ok {
				t.Errorf("answer: got a reply, want none")
			}
			if !strings.Contains(logs.String(), tc.want) {
				t.Errorf("log: got %q, want it to mention %q", logs.String(), tc.want)
			}
		})
	}
}

func TestRunOff(t *testing.T) {
	t.Parallel()
	s, err := New(Config{Mode: ModeOff})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Errorf("Run in mode off: got %v, want nil at once", err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Errorf("second Run: got nil, want an error")
	}
}

// TestProxyPXEPort: in proxy mode the server also listens on 4011 and
// answers a PXE client's REQUEST there, at the client's own address.
func TestProxyPXEPort(t *testing.T) {
	t.Parallel()
	l := newLab(t, ModeProxy, testFleet())
	reply := askPXE(t, pxeClient(t, l))
	if reply.MessageType() != dhcpv4.MessageTypeAck || reply.BootFileName != "ipxe.efi" || !reply.YourIPAddr.IsUnspecified() {
		t.Errorf("reply: got %s file %q yiaddr %s, want ACK file ipxe.efi yiaddr 0.0.0.0", reply.MessageType(), reply.BootFileName, reply.YourIPAddr)
	}
}

// pxeClient gives the lab's client macFull and the address 10.10.0.50 and
// returns a socket on its port 68, as a PXE client that has an address
// from another server.
func pxeClient(t *testing.T, l *lab) net.PacketConn {
	t.Helper()
	netlab.Must(t, l.p.Client.AddAddr(l.p.ClientIf, "10.10.0.50/24"))
	l.setMAC(t, macFull)
	conn, err := l.p.Client.ListenPacket("udp4", "10.10.0.50:68")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// askPXE sends macFull's PXE REQUEST to the server's port 4011 from conn
// and returns the reply. UDP may lose the first packet while neighbours
// resolve, so it tries up to five times.
func askPXE(t *testing.T, conn net.PacketConn) *dhcpv4.DHCPv4 {
	t.Helper()
	req := newRequest(t, dhcpv4.MessageTypeRequest, macFull, pxe(iana.EFI_X86_64), withCiaddr("10.10.0.50"))
	dst := &net.UDPAddr{IP: net.IP(testServer.AsSlice()), Port: PXEPort}
	buf := make([]byte, 1500)
	for attempt := 1; ; attempt++ {
		if _, err := conn.WriteTo(req.ToBytes(), dst); err != nil {
			t.Fatal(err)
		}
		netlab.Must(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			if attempt < 5 {
				continue
			}
			t.Fatalf("no reply on 4011 after %d attempts: %v", attempt, err)
		}
		reply, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		return reply
	}
}

// TestSendErrorKeepsServing: a reply the kernel refuses is counted and
// dropped, and the server goes on answering. The refusal is real: a
// netfilter rule in the server's namespace drops what it sends to one
// relay, which makes sendmmsg fail with EPERM. (A missing route would
// not do: a socket bound to an interface sends anything it has no route
// for on that interface.)
func TestSendErrorKeepsServing(t *testing.T) {
	t.Parallel()
	nft := netlab.NeedTool(t, "nft")
	l := newLab(t, ModeProxy, testFleet())
	const relay = "192.0.2.1" // TEST-NET-1
	for _, args := range [][]string{
		{"add", "table", "ip", "t"},
		{"add", "chain", "ip", "t", "out", "{ type filter hook output priority 0; }"},
		{"add", "rule", "ip", "t", "out", "ip", "daddr", relay, "drop"},
	} {
		if out, err := l.p.Server.Run(context.Background(), append([]string{nft}, args...)...); err != nil {
			t.Fatalf("nft %v: %v\n%s", args, err, out)
		}
	}
	conn := pxeClient(t, l)
	metric := func(name string) string {
		var b strings.Builder
		if err := l.srv.WriteMetrics(&b); err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(b.String(), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				return v
			}
		}
		t.Fatalf("metrics: no %s in\n%s", name, b.String())
		return ""
	}

	refused := newRequest(t, dhcpv4.MessageTypeDiscover, macFull, pxe(iana.EFI_X86_64), relayed(relay))
	server := &net.UDPAddr{IP: net.IP(testServer.AsSlice()), Port: ServerPort}
	deadline := time.Now().Add(10 * time.Second)
	for metric(`gitmetal_dhcp_errors_total{kind="send"}`) == "0" {
		if time.Now().After(deadline) {
			t.Fatalf("no send error counted 10 s after requests through a relay the server may not send to")
		}
		if _, err := conn.WriteTo(refused.ToBytes(), server); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The server still answers. The worker counts a reply after sendmmsg
	// returns, which can be after the client has read it, and logs a
	// refusal after counting it: wait for both rather than read them once.
	askPXE(t, conn)
	poll.Until(t, "a reply counted as sent", func() bool { return metric("gitmetal_dhcp_replies_sent_total") != "0" })
	poll.Until(t, "the log line about the reply not sent", func() bool { return strings.Contains(l.logs.String(), "dhcp reply not sent") })
	if got := metric(`gitmetal_dhcp_requests_total{result="reply"}`); got == "0" || got == "1" {
		t.Errorf("requests with a reply: got %s, want the refused ones and the answered one", got)
	}
}

package dhcpload

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/boot/dhcp"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/test/netlab"
)

// TestRunAgainstServer runs the generator as a relay against gitmetal's
// server in a netlab pair: every exchange completes with the reserved
// address; MACs the server does not know are all lost.
func TestRunAgainstServer(t *testing.T) {
	t.Parallel()
	p := netlab.NewPair(t, "ld")
	netlab.Must(t, p.Server.AddAddr(p.ServerIf, ServerAddr+"/16"))
	netlab.Must(t, p.Client.AddAddr(p.ClientIf, RelayAddr+"/16"))
	f, err := Fleet(100)
	if err != nil {
		t.Fatal(err)
	}
	var srv *dhcp.Server
	netlab.Must(t, p.Server.Do(func() (err error) {
		srv, err = dhcp.New(dhcp.Config{
			Mode: dhcp.ModeReservation, Interface: p.ServerIf,
			AdvertiseAddr: netip.MustParseAddr(ServerAddr), HTTPBase: "http://" + ServerAddr + ":8080",
			Backend: store.TestStore(t, f), Log: zerolog.Nop(),
		})
		return err
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	pc, err := p.Client.ListenPacket("udp4", RelayAddr+":67")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	conn := pc.(*net.UDPConn)

	cfg := Config{
		Server:   netip.MustParseAddrPort(ServerAddr + ":67"),
		Relay:    netip.MustParseAddr(RelayAddr),
		Clients:  Clients(100, true),
		InFlight: 8,
		Count:    500,
		Duration: time.Minute,
		Timeout:  5 * time.Second,
		PXE:      true,
	}
	res, err := Run(ctx, conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Exchanges != cfg.Count || res.Wrong != 0 {
		t.Errorf("known MACs: got %d exchanges, %d wrong (%s), want %d and 0", res.Exchanges, res.Wrong, res.FirstWrong, cfg.Count)
	}
	if res.P50 <= 0 || res.P99 < res.P50 || res.Rate <= 0 {
		t.Errorf("figures: got rate %.0f p50 %s p99 %s, want positive and ordered", res.Rate, res.P50, res.P99)
	}

	// Known MACs expecting other addresses: every reply is wrong.
	bad := Clients(100, true)
	for i := range bad {
		bad[i].Want = Addr(i + 1)
	}
	cfg.Clients, cfg.Count = bad, 50
	cfg.Duration = 5 * time.Second
	res, err = Run(ctx, conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Exchanges != 0 || res.Wrong == 0 {
		t.Errorf("wrong addresses: got %d exchanges, %d wrong, want 0 and some", res.Exchanges, res.Wrong)
	}

	// Unknown MACs: no replies, every exchange lost, bounded by Duration.
	unknown := Clients(4, false)
	for i := range unknown {
		unknown[i].MAC = net.HardwareAddr{0x02, 0x99, 0, 0, 0, byte(i)}
	}
	cfg.Clients, cfg.InFlight, cfg.Timeout, cfg.Duration = unknown, 4, 200*time.Millisecond, 2*time.Second
	res, err = Run(ctx, conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Exchanges != 0 || res.Lost == 0 {
		t.Errorf("unknown MACs: got %d exchanges, %d lost, want 0 and some", res.Exchanges, res.Lost)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	c := Config{}
	if err := c.validate(); err == nil {
		t.Errorf("empty config: got nil, want an error")
	}
	c = Config{Server: netip.MustParseAddrPort("10.0.0.1:67"), Relay: netip.MustParseAddr("10.0.0.2"),
		Clients: Clients(2, false), InFlight: 1 << 16, Count: 1, Duration: time.Second}
	if err := c.validate(); err == nil {
		t.Errorf("65536 in flight: got nil, want an error")
	}
	c.InFlight = 3
	if err := c.validate(); err != nil {
		t.Errorf("valid config: got %v, want nil", err)
	}
}

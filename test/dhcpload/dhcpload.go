// Package dhcpload is a DHCPv4 load generator for benchmarks and load
// tests: it runs full DISCOVER → OFFER → REQUEST → ACK exchanges for MACs
// the server knows, with a fixed number in flight, and reports exchanges
// per second and latency percentiles. Runs are bounded in count and time.
//
// It acts as a relay agent: it sends from one UDP socket bound to its own
// address on port 67, with giaddr set to that address and hops 1, and the
// server answers to giaddr:67 (RFC 2131 §4.1). That is the path perfdhcp
// uses, and the one a routed network uses in production. It was chosen
// over broadcasting clients because it measures the server and nothing
// else: unicast both ways, no broadcast delivery to every socket on the
// segment, no raw sockets, one socket whose replies are told apart by
// transaction ID. A broadcast reply costs the server the same work to
// build.
//
// Requests are built with github.com/insomniacslk/dhcp once per client
// when a run starts (as PXE firmware would send them when Config.PXE is
// set: vendor class PXEClient, architecture 7, client UUID); each exchange
// copies its client's template and patches the transaction ID and the
// requested address. Replies are checked without a full parse: op,
// transaction ID, message type, and — when the client has an expected
// address — yiaddr. A reply that fails a check counts as Wrong and its
// exchange starts over; an exchange without a reply within Timeout counts
// as Lost and starts over. The generator is one goroutine with no locks,
// so that it, not the server, is never what a ceiling measures.
//
// It must not be pointed at a network it does not own: it is for network
// namespaces a test or benchmark made (see test/netlab).
package dhcpload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Client is one simulated machine.
type Client struct {
	MAC net.HardwareAddr
	// Want is the address the server must offer; the zero Addr skips the
	// check (for a server that does not hand out real addresses, such as
	// a raw reply loop).
	Want netip.Addr
}

// Config is one load run.
type Config struct {
	// Server is where requests go, normally the server's address, port 67.
	Server netip.AddrPort
	// Relay is the generator's own address: giaddr of every request. The
	// socket passed to Run must be bound to Relay:67.
	Relay netip.Addr
	// Clients are used round-robin.
	Clients []Client
	// InFlight is how many exchanges run at once. Default 1, at most
	// 65535. With more in flight than clients, a client has several
	// exchanges at once (with different transaction IDs), which a server
	// of static reservations answers like any other.
	InFlight int
	// Count stops the run after this many completed exchanges. Required.
	Count int
	// Duration stops the run after this long, whatever Count says.
	// Required.
	Duration time.Duration
	// Timeout is how long an exchange waits for each reply before it
	// counts as lost. Default one second.
	Timeout time.Duration
	// PXE makes the requests PXE firmware's (vendor class, arch, UUID).
	PXE bool
}

// Result is what a run measured.
type Result struct {
	// Exchanges is the number of completed DORA exchanges.
	Exchanges int `json:"exchanges"`
	// Lost counts exchanges abandoned after Timeout without a reply.
	Lost int `json:"lost"`
	// Wrong counts replies that failed a check (type, address).
	Wrong int `json:"wrong"`
	// Elapsed is the measured time, from the first DISCOVER to the
	// completion of the last counted exchange.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Rate is Exchanges per second of Elapsed.
	Rate float64 `json:"rate"`
	// P50 and P99 are percentiles of the time from DISCOVER sent to ACK
	// received, over completed exchanges.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	// FirstWrong describes the first failed check, for diagnosis.
	FirstWrong string `json:"first_wrong,omitempty"`
}

// Bounds on a run.
const (
	maxInFlight = 1 << 16 // the slot number is the low 16 bits of the xid
	maxCount    = 10_000_000
	maxDuration = 10 * time.Minute
)

func (c *Config) validate() error {
	var errs []error
	if !c.Server.Addr().Is4() || c.Server.Port() == 0 {
		errs = append(errs, fmt.Errorf("server %s: want an IPv4 address and port", c.Server))
	}
	if !c.Relay.Is4() || c.Relay.IsUnspecified() {
		errs = append(errs, fmt.Errorf("relay %s: want the generator's IPv4 address", c.Relay))
	}
	if len(c.Clients) == 0 {
		errs = append(errs, errors.New("clients: want at least one"))
	}
	for i, cl := range c.Clients {
		if len(cl.MAC) != 6 {
			errs = append(errs, fmt.Errorf("client %d: mac %q: want 6 bytes", i, cl.MAC))
			break
		}
	}
	if c.InFlight == 0 {
		c.InFlight = 1
	}
	if c.InFlight < 0 || c.InFlight >= maxInFlight {
		errs = append(errs, fmt.Errorf("in flight %d: want 1 to %d", c.InFlight, maxInFlight-1))
	}
	if c.Count <= 0 || c.Count > maxCount {
		errs = append(errs, fmt.Errorf("count %d: want 1 to %d", c.Count, maxCount))
	}
	if c.Duration <= 0 || c.Duration > maxDuration {
		errs = append(errs, fmt.Errorf("duration %s: want more than 0, at most %s", c.Duration, maxDuration))
	}
	if c.Timeout == 0 {
		c.Timeout = time.Second
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %s: want a positive duration", c.Timeout))
	}
	return errors.Join(errs...)
}

// template is a client's requests in wire form.
type template struct {
	discover, request []byte
	requestedAt       int // offset of option 50's value in request
	want              netip.Addr
}

// slot is one exchange in flight.
type slot struct {
	state    uint8 // waitOffer or waitAck
	xid      uint32
	client   int
	start    time.Time
	deadline time.Time
}

const (
	waitOffer = 1
	waitAck   = 2
)

// Run runs the load through conn, a UDP socket bound to cfg.Relay:67,
// until cfg.Count exchanges complete, cfg.Duration passes or ctx ends,
// and returns what it measured. It returns an error only when it cannot
// run at all; a server that never answers gives a Result with Lost
// exchanges and none completed.
func Run(ctx context.Context, conn *net.UDPConn, cfg Config) (Result, error) {
	if err := cfg.validate(); err != nil {
		return Result{}, fmt.Errorf("dhcpload: %w", err)
	}
	tmpls, err := templates(cfg)
	if err != nil {
		return Result{}, err
	}
	g := &generator{
		cfg:   cfg,
		conn:  conn,
		tmpls: tmpls,
		slots: make([]slot, cfg.InFlight),
		out:   make([]byte, 0, 1500),
		// A random start, so that a late reply to an earlier run on the
		// same socket does not match an exchange of this one.
		seq: rand.Uint32(),
		lat: make([]time.Duration, 0, min(cfg.Count, 1<<20)),
	}
	return g.run(ctx)
}

type generator struct {
	cfg   Config
	conn  *net.UDPConn
	tmpls []template
	slots []slot
	next  int // next client
	seq   uint32
	out   []byte
	lat   []time.Duration
	res   Result
}

// templates builds every client's DISCOVER and REQUEST with dhcpv4.
func templates(cfg Config) ([]template, error) {
	giaddr := net.IP(cfg.Relay.AsSlice())
	server := net.IP(cfg.Server.Addr().AsSlice())
	ts := make([]template, len(cfg.Clients))
	for i, cl := range cfg.Clients {
		mods := []dhcpv4.Modifier{
			dhcpv4.WithTransactionID(dhcpv4.TransactionID{}),
			dhcpv4.WithHwAddr(cl.MAC),
			dhcpv4.WithGatewayIP(giaddr),
			func(d *dhcpv4.DHCPv4) { d.HopCount = 1 },
			dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter,
				dhcpv4.OptionDomainNameServer, dhcpv4.OptionHostName, dhcpv4.OptionDomainName,
				dhcpv4.OptionNTPServers, dhcpv4.OptionDNSDomainSearchList, dhcpv4.OptionClasslessStaticRoute),
		}
		if cfg.PXE {
			mods = append(mods,
				dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
				dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)),
				dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 16}),
				dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, cl.MAC[:]...)))
		}
		d, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)}, mods...)...)
		if err != nil {
			return nil, fmt.Errorf("build discover: %w", err)
		}
		r, err := dhcpv4.New(append([]dhcpv4.Modifier{
			dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)),
			// A marker the offer's address replaces, found below.
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(203, 0, 113, 77))),
		}, mods...)...)
		if err != nil {
			return nil, fmt.Errorf("build request: %w", err)
		}
		t := template{discover: d.ToBytes(), request: r.ToBytes(), want: cl.Want}
		t.requestedAt = findOption(t.request, byte(dhcpv4.OptionRequestedIPAddress.Code()))
		if t.requestedAt < 0 {
			return nil, errors.New("build request: option 50 not found")
		}
		ts[i] = t
	}
	return ts, nil
}

// The fixed BOOTP header: options start after it and the magic cookie.
const (
	offOp     = 0
	offXid    = 4
	offYiaddr = 16
	offOpts   = 240
)

// findOption returns the offset of option code's value in packet p, or -1.
func findOption(p []byte, code byte) int {
	for i := offOpts; i < len(p); {
		switch c := p[i]; c {
		case 0:
			i++
			continue
		case 255:
			return -1
		default:
			if i+1 >= len(p) {
				return -1
			}
			if c == code {
				return i + 2
			}
			i += 2 + int(p[i+1])
		}
	}
	return -1
}

func (g *generator) run(ctx context.Context) (Result, error) {
	var rbuf [1500]byte
	start := time.Now()
	stopAt := start.Add(g.cfg.Duration)
	for i := range g.slots {
		if err := g.startExchange(i, start); err != nil {
			return g.res, err
		}
	}
	// The read deadline doubles as the tick that finds lost exchanges;
	// it moves every tick, not every packet.
	tick := min(g.cfg.Timeout/4, 50*time.Millisecond)
	nextTick := start
	last := start
	for g.res.Exchanges < g.cfg.Count {
		now := time.Now()
		if !now.Before(nextTick) {
			if now.After(stopAt) || ctx.Err() != nil {
				break
			}
			if err := g.expire(now); err != nil {
				return g.res, err
			}
			nextTick = now.Add(tick)
			if err := g.conn.SetReadDeadline(nextTick); err != nil {
				return g.res, fmt.Errorf("dhcpload: %w", err)
			}
		}
		n, err := g.conn.Read(rbuf[:])
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return g.res, fmt.Errorf("dhcpload: read: %w", err)
		}
		now = time.Now()
		done, err := g.reply(rbuf[:n], now)
		if err != nil {
			return g.res, err
		}
		if done {
			last = now
		}
	}
	g.res.Elapsed = last.Sub(start)
	if g.res.Elapsed > 0 {
		g.res.Rate = float64(g.res.Exchanges) / g.res.Elapsed.Seconds()
	}
	slices.Sort(g.lat)
	g.res.P50, g.res.P99 = percentile(g.lat, 0.50), percentile(g.lat, 0.99)
	return g.res, nil
}

// startExchange sends the DISCOVER of the next client from slot i.
func (g *generator) startExchange(i int, now time.Time) error {
	g.seq++
	s := &g.slots[i]
	*s = slot{state: waitOffer, xid: g.seq<<16 | uint32(i), client: g.next, start: now, deadline: now.Add(g.cfg.Timeout)}
	g.next = (g.next + 1) % len(g.tmpls)
	return g.send(g.tmpls[s.client].discover, s, nil)
}

// send writes tmpl with the slot's xid (and requested address) patched in.
func (g *generator) send(tmpl []byte, s *slot, requested []byte) error {
	g.out = append(g.out[:0], tmpl...)
	binary.BigEndian.PutUint32(g.out[offXid:], s.xid)
	if requested != nil {
		copy(g.out[g.tmpls[s.client].requestedAt:], requested)
	}
	if _, err := g.conn.WriteToUDPAddrPort(g.out, g.cfg.Server); err != nil {
		return fmt.Errorf("dhcpload: send: %w", err)
	}
	return nil
}

// reply handles one packet; done reports a completed exchange.
func (g *generator) reply(p []byte, now time.Time) (done bool, err error) {
	if len(p) < offOpts+4 || p[offOp] != byte(dhcpv4.OpcodeBootReply) {
		return false, nil
	}
	xid := binary.BigEndian.Uint32(p[offXid:])
	i := int(xid & 0xffff)
	if i >= len(g.slots) || g.slots[i].xid != xid || g.slots[i].state == 0 {
		return false, nil // late reply to an exchange already given up
	}
	s := &g.slots[i]
	t := &g.tmpls[s.client]
	mt := dhcpv4.MessageTypeNone
	if at := findOption(p, byte(dhcpv4.OptionDHCPMessageType.Code())); at >= 0 && at < len(p) {
		mt = dhcpv4.MessageType(p[at])
	}
	yiaddr := p[offYiaddr : offYiaddr+4]
	want := dhcpv4.MessageTypeOffer
	if s.state == waitAck {
		want = dhcpv4.MessageTypeAck
	}
	if mt != want || (t.want.IsValid() && netip.AddrFrom4([4]byte(yiaddr)) != t.want) {
		g.res.Wrong++
		if g.res.FirstWrong == "" {
			g.res.FirstWrong = fmt.Sprintf("client %d: got %s yiaddr %s, want %s yiaddr %s", s.client, mt, net.IP(yiaddr), want, t.want)
		}
		return false, g.startExchange(i, now)
	}
	if s.state == waitOffer {
		s.state, s.deadline = waitAck, now.Add(g.cfg.Timeout)
		return false, g.send(t.request, s, yiaddr)
	}
	g.res.Exchanges++
	g.lat = append(g.lat, now.Sub(s.start))
	if g.res.Exchanges >= g.cfg.Count {
		return true, nil
	}
	return true, g.startExchange(i, now)
}

// expire gives up the exchanges whose reply is overdue and starts new ones.
func (g *generator) expire(now time.Time) error {
	for i := range g.slots {
		if s := &g.slots[i]; s.state != 0 && now.After(s.deadline) {
			g.res.Lost++
			if err := g.startExchange(i, now); err != nil {
				return err
			}
		}
	}
	return nil
}

// percentile returns the q-quantile of sorted d (nearest rank).
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(q*float64(len(d))+0.5) - 1
	return d[max(0, min(i, len(d)-1))]
}

package dhcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/rs/zerolog"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// maxPacket is the read buffer of a worker. DHCP messages are at most 576
// bytes unless the client allows more (option 57); anything longer than an
// Ethernet frame is not DHCP traffic this server answers.
const maxPacket = 1500

// Server is the I/O half: it reads requests, passes them to the Handler
// and sends the replies. Its sockets are opened by New and closed when Run
// returns (or by Close).
type Server struct {
	cfg     Config
	log     zerolog.Logger
	handler *Handler
	conns   []*listener
	unknown *logLimiter
	running atomic.Bool
	close   sync.Once
	stats   counters
}

// counters are the server's metrics (WriteMetrics).
type counters struct {
	requests                        [numNotes]atomic.Uint64 // by the handler's note
	malformed                       atomic.Uint64           // datagrams that are not DHCP
	storeErrors, panics, sendErrors atomic.Uint64
	sent                            atomic.Uint64 // replies the kernel took
}

// listener is one bound socket and the port it serves.
type listener struct {
	conn *net.UDPConn
	port int
}

// New validates c, builds the handler and binds the sockets: port 67 on
// c.Interface, and 4011 too in proxy mode. Binding here, not in Run, makes
// a port in use a startup error, and lets a test open the sockets inside a
// network namespace. Sockets are bound to the interface (SO_BINDTODEVICE)
// and not shared (no SO_REUSEPORT): a second DHCP server on the same
// interface is an error, not a silent split of the traffic.
func New(c Config) (*Server, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     c,
		log:     c.Log.With().Str("component", "dhcp").Logger(),
		unknown: newLogLimiter(c.UnknownLogInterval, time.Now),
	}
	if c.Mode == ModeOff {
		return s, nil
	}
	if s.handler, err = NewHandler(c); err != nil {
		return nil, err
	}
	ports := []int{int(c.ListenAddr.Port())}
	if c.Mode == ModeProxy {
		ports = append(ports, PXEPort)
	}
	for _, port := range ports {
		conn, err := listenUDP(c.Interface, netip.AddrPortFrom(c.ListenAddr.Addr(), uint16(port)))
		if err != nil {
			s.Close()
			return nil, err
		}
		s.conns = append(s.conns, &listener{conn: conn, port: port})
	}
	return s, nil
}

// listenUDP binds a broadcast-capable UDP socket to addr on iface.
func listenUDP(iface string, addr netip.AddrPort) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				serr = fmt.Errorf("set SO_BROADCAST: %w", serr)
				return
			}
			if serr = unix.BindToDevice(int(fd), iface); serr != nil {
				serr = fmt.Errorf("bind to interface %s: %w", iface, serr)
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr.String())
	if err != nil {
		return nil, fmt.Errorf("dhcp listen on %s %s: %w", iface, addr, err)
	}
	conn := pc.(*net.UDPConn)
	setReadBuffer(conn)
	return conn, nil
}

// readBuffer is the receive buffer the server asks for: room for a few
// thousand requests, so that a rack powering on at once, or a moment
// without CPU, queues requests instead of dropping them.
const readBuffer = 4 << 20

// setReadBuffer raises the socket's receive buffer to readBuffer: past
// net.core.rmem_max when the process may (SO_RCVBUFFORCE needs
// CAP_NET_ADMIN), else as far as rmem_max allows. Failing is harmless:
// the default buffer works, it only drops sooner under bursts.
func setReadBuffer(conn *net.UDPConn) {
	rc, err := conn.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, readBuffer)
		})
		if err == nil && serr == nil {
			return
		}
	}
	_ = conn.SetReadBuffer(readBuffer)
}

// Addrs returns the addresses the server's sockets are bound to.
func (s *Server) Addrs() []netip.AddrPort {
	var a []netip.AddrPort
	for _, l := range s.conns {
		a = append(a, l.conn.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	return a
}

// Run serves until ctx ends, then closes the sockets, waits for the
// packets in hand and returns nil. In ModeOff it returns nil at once.
// Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("dhcp server: Run called twice")
	}
	if s.cfg.Mode == ModeOff {
		s.log.Info().Msg("dhcp off")
		return nil
	}
	s.log.Info().Str("mode", string(s.cfg.Mode)).Str("interface", s.cfg.Interface).
		Stringer("advertise", s.cfg.AdvertiseAddr).Int("workers", s.cfg.Workers).
		Interface("listen", s.Addrs()).Msg("dhcp serving")
	var wg sync.WaitGroup
	for _, l := range s.conns {
		for range s.cfg.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serve(ctx, l)
			}()
		}
	}
	<-ctx.Done()
	// Closing the sockets unblocks every worker's read.
	s.Close()
	wg.Wait()
	s.log.Info().Msg("dhcp stopped")
	return nil
}

// Close closes the sockets. Run calls it; a caller that never runs the
// server calls it to release them.
func (s *Server) Close() error {
	var err error
	s.close.Do(func() {
		for _, l := range s.conns {
			err = errors.Join(err, l.conn.Close())
		}
	})
	return err
}

// BatchSize is how many datagrams a worker takes from the socket in one
// recvmmsg and gives back in one sendmmsg. Under load the system calls,
// not the handler, are most of a reply's cost (profiled on the bench:
// about 70% of the server's CPU is sending and receiving); a batch pays
// the entry into the kernel once for the packets already queued. A quiet
// socket still answers each packet as it comes: a read returns what is
// there, one packet or more. Eight, not more: a longer sendmmsg keeps
// the worker's thread in the kernel past the Go scheduler's 20 µs
// sysmon tick, which then hands the processor to another thread, and the
// bench measured fewer replies per second with batches of 16 and 32 and
// a longer tail of latency.
const BatchSize = 8

// worker is what one worker goroutine owns and reuses from packet to
// packet: the read and write batches with their buffers and destination
// addresses, the parsed request and the reply scratch space. Nothing is
// allocated per packet but what ReadBatch allocates for the sender's
// address.
type worker struct {
	in, out []ipv4.Message
	outBufs [][]byte
	req     *dhcpv4.DHCPv4
	scratch *scratch
}

func newWorker() *worker {
	w := &worker{
		in:      make([]ipv4.Message, BatchSize),
		out:     make([]ipv4.Message, BatchSize),
		outBufs: make([][]byte, BatchSize),
		req:     &dhcpv4.DHCPv4{Options: make(dhcpv4.Options, 32)},
		scratch: new(scratch),
	}
	for i := range w.in {
		w.in[i].Buffers = [][]byte{make([]byte, maxPacket)}
		w.outBufs[i] = make([]byte, 0, maxPacket)
		w.out[i].Buffers = make([][]byte, 1)
		w.out[i].Addr = &net.UDPAddr{IP: make(net.IP, net.IPv4len)}
	}
	return w
}

// serve is one worker: read a batch, answer each packet, write the
// replies in one batch, until the socket is closed.
func (s *Server) serve(ctx context.Context, l *listener) {
	pc := ipv4.NewPacketConn(l.conn)
	w := newWorker()
	backoff := time.Duration(0)
	for {
		n, err := pc.ReadBatch(w.in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			// Not expected on a bound UDP socket; back off so a
			// persistent error cannot spin a core or flood the log.
			backoff = min(max(2*backoff, 10*time.Millisecond), time.Second)
			s.log.Warn().Err(err).Int("port", l.port).Dur("backoff", backoff).Msg("dhcp read failed")
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		k := 0 // replies in w.out
		for i := range n {
			m := &w.in[i]
			from, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			reply, dst, ok := s.answer(l, m.Buffers[0][:m.N], from.AddrPort(), w.req, w.outBufs[k][:0], w.scratch)
			if !ok {
				continue
			}
			o := &w.out[k]
			o.Buffers[0] = reply
			a := o.Addr.(*net.UDPAddr)
			ip4 := dst.Addr().As4()
			copy(a.IP, ip4[:])
			a.Port = int(dst.Port())
			k++
		}
		s.send(pc, l, w.out[:k])
	}
}

// send writes msgs, as few system calls as the kernel allows. A message
// the kernel refuses is logged and skipped; the others still go.
func (s *Server) send(pc *ipv4.PacketConn, l *listener, msgs []ipv4.Message) {
	for len(msgs) > 0 {
		// sendmmsg sends what it can; an error is about the first message
		// it could not send, and is reported (n = -1) only when that one
		// is first in the batch.
		n, err := pc.WriteBatch(msgs, 0)
		n = min(max(n, 0), len(msgs))
		s.stats.sent.Add(uint64(n))
		msgs = msgs[n:]
		switch {
		case err == nil && n > 0:
			continue
		case errors.Is(err, net.ErrClosed):
			return
		case len(msgs) == 0:
			return
		}
		// msgs[0] was refused: a reply to an address the host may not
		// send to, say. Drop it and go on with the others.
		s.stats.sendErrors.Add(1)
		s.log.Warn().Err(err).Int("port", l.port).Stringer("to", msgs[0].Addr.(*net.UDPAddr)).Msg("dhcp reply not sent")
		msgs = msgs[1:]
	}
}

// answer handles one packet. It parses it into req, builds the reply in
// scratch and its wire form in out's backing array, all the worker's own
// and reused from packet to packet, and returns the reply and where it
// goes; ok is false when there is nothing to send. A panic is logged and
// the packet dropped; the worker goes on.
func (s *Server) answer(l *listener, pkt []byte, from netip.AddrPort, req *dhcpv4.DHCPv4, out []byte, sc *scratch) (reply []byte, dst netip.AddrPort, ok bool) {
	defer func() {
		if v := recover(); v != nil {
			s.stats.panics.Add(1)
			s.log.Error().Str("panic", fmt.Sprint(v)).Bytes("stack", debug.Stack()).
				Stringer("from", from).Hex("packet", pkt).Msg("dhcp handler panic, packet dropped")
			reply, dst, ok = nil, netip.AddrPort{}, false
		}
	}()
	if err := parseInto(req, pkt); err != nil {
		s.stats.malformed.Add(1)
		s.log.Debug().Err(err).Stringer("from", from).Msg("malformed dhcp packet")
		return nil, netip.AddrPort{}, false
	}
	res, err := s.handler.handle(req, l.port, sc)
	if err != nil {
		s.stats.storeErrors.Add(1)
		s.log.Error().Err(err).Stringer("mac", req.ClientHWAddr).Msg("dhcp handler failed")
		return nil, netip.AddrPort{}, false
	}
	if int(res.Note) < numNotes {
		s.stats.requests[res.Note].Add(1)
	}
	s.logResult(req, res)
	if res.Reply == nil {
		return nil, netip.AddrPort{}, false
	}
	return res.Reply.AppendTo(out), replyDestination(req, res.Reply, from, l.port), true
}

// WriteMetrics writes the server's counters in Prometheus text format
// (see the reconciler API's MetricsWriter).
func (s *Server) WriteMetrics(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# HELP gitmetal_dhcp_requests_total DHCP requests handled, by result: reply (OFFER or ACK), nak, or why there was none.\n# TYPE gitmetal_dhcp_requests_total counter\n")
	for n := range numNotes {
		fmt.Fprintf(&b, "gitmetal_dhcp_requests_total{result=%q} %d\n", Note(n).label(), s.stats.requests[n].Load())
	}
	b.WriteString("# HELP gitmetal_dhcp_replies_sent_total DHCP replies handed to the kernel.\n# TYPE gitmetal_dhcp_replies_sent_total counter\n")
	fmt.Fprintf(&b, "gitmetal_dhcp_replies_sent_total %d\n", s.stats.sent.Load())
	b.WriteString("# HELP gitmetal_dhcp_malformed_total Datagrams on the DHCP ports that were not DHCP messages.\n# TYPE gitmetal_dhcp_malformed_total counter\n")
	fmt.Fprintf(&b, "gitmetal_dhcp_malformed_total %d\n", s.stats.malformed.Load())
	b.WriteString("# HELP gitmetal_dhcp_errors_total Requests dropped by a failure: the store could not be read, the handler panicked, or the reply could not be sent.\n# TYPE gitmetal_dhcp_errors_total counter\n")
	fmt.Fprintf(&b, "gitmetal_dhcp_errors_total{kind=\"store\"} %d\ngitmetal_dhcp_errors_total{kind=\"panic\"} %d\ngitmetal_dhcp_errors_total{kind=\"send\"} %d\n",
		s.stats.storeErrors.Load(), s.stats.panics.Load(), s.stats.sendErrors.Load())
	_, err := io.WriteString(w, b.String())
	return err
}

// logResult logs what the handler decided: replies at debug level,
// unknown MACs once per MAC per UnknownLogInterval, releases and NAKs at
// info, declines as warnings.
func (s *Server) logResult(req *dhcpv4.DHCPv4, res Result) {
	var ev *zerolog.Event
	switch res.Note {
	case NoteUnknownMAC:
		mac := req.ClientHWAddr.String()
		ok, suppressed := s.unknown.allow(mac)
		if !ok {
			return
		}
		ev = s.log.Info().Int("suppressed", suppressed)
	case NoteRelease, NoteNAK:
		ev = s.log.Info()
	case NoteDecline:
		ev = s.log.Warn()
	default:
		ev = s.log.Debug()
	}
	if !ev.Enabled() {
		return
	}
	ev = ev.Stringer("mac", req.ClientHWAddr).Stringer("xid", req.TransactionID).
		Stringer("type", req.MessageType()).Str("note", res.Note.String())
	if res.Hardware != "" {
		ev = ev.Str("hardware", res.Hardware)
	}
	if res.Reply != nil {
		ev = ev.Stringer("reply", res.Reply.MessageType())
		if res.Reply.Yiaddr.IsValid() {
			ev = ev.Stringer("yiaddr", res.Reply.Yiaddr)
		}
	}
	if res.Boot != "" {
		ev = ev.Str("boot", res.Boot)
	}
	if res.Detail != "" {
		ev = ev.Str("detail", res.Detail)
	}
	if !isZero(req.GatewayIPAddr) {
		ev = ev.Stringer("giaddr", req.GatewayIPAddr)
	}
	ev.Msg("dhcp request")
}

// replyDestination returns where a reply to req goes, following RFC 2131
// §4.1 ("Constructing and sending DHCP messages"):
//
//   - giaddr set: the request came through a relay; the reply goes to the
//     relay, giaddr:67, which delivers it on the client's segment.
//   - a DHCPNAK without a relay is broadcast (the client may have no
//     usable address).
//   - ciaddr set: the client has an address; unicast to ciaddr:68.
//   - the broadcast bit set: broadcast to 255.255.255.255:68.
//   - otherwise the RFC says unicast to yiaddr and chaddr, which needs an
//     ARP entry the kernel does not have for a client without an address;
//     §4.1 allows the broadcast instead ("If unicasting is not possible,
//     the message MAY be sent as an IP broadcast"), as smee and most
//     servers without raw sockets do.
//
// A request to the PXE port (4011) comes from a client that has an
// address; the reply goes back to where it came from (PXE 2.1 §2.2.4).
func replyDestination(req *dhcpv4.DHCPv4, reply *Reply, from netip.AddrPort, port int) netip.AddrPort {
	bcast := netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), ClientPort)
	if port == PXEPort && from.Addr().Is4() && !from.Addr().IsUnspecified() {
		return from
	}
	if a, ok := addr4(req.GatewayIPAddr); ok {
		return netip.AddrPortFrom(a, ServerPort)
	}
	if reply.MessageType() == dhcpv4.MessageTypeNak {
		return bcast
	}
	if a, ok := addr4(req.ClientIPAddr); ok {
		return netip.AddrPortFrom(a, ClientPort)
	}
	return bcast
}

// addr4 converts a non-zero IPv4 address.
func addr4(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a, true
}

// logLimiter lets one log line per key through per interval, and at most
// maxLinesPerInterval lines in all per interval; what it holds back is
// counted and reported with the next line it lets through. Its memory is
// bounded by the line cap: keys are only kept for lines it let through.
type logLimiter struct {
	every time.Duration
	now   func() time.Time

	mu          sync.Mutex
	windowStart time.Time
	inWindow    int
	last        map[string]time.Time
	suppressed  int
}

// maxLinesPerInterval caps the lines about distinct keys per interval: a
// scan of a thousand MACs logs 64 lines and a count, not a thousand lines.
const maxLinesPerInterval = 64

func newLogLimiter(every time.Duration, now func() time.Time) *logLimiter {
	return &logLimiter{every: every, now: now, last: make(map[string]time.Time)}
}

// allow reports whether a line about key may be logged now and how many
// lines about other keys were held back since the last line let through.
// A key seen again within the interval is not counted: it is the same
// client retrying.
func (l *logLimiter) allow(key string) (bool, int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.windowStart) >= l.every {
		l.windowStart, l.inWindow = now, 0
		for k, t := range l.last {
			if now.Sub(t) >= l.every {
				delete(l.last, k)
			}
		}
	}
	if t, ok := l.last[key]; ok && now.Sub(t) < l.every {
		return false, 0
	}
	if l.inWindow >= maxLinesPerInterval {
		l.suppressed++
		return false, 0
	}
	l.last[key] = now
	l.inWindow++
	s := l.suppressed
	l.suppressed = 0
	return true, s
}

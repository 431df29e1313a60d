package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/rs/zerolog"
	"golang.org/x/net/ipv4"

	"github.com/gitmetal/gitmetal/boot/dhcp"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/test/dhcpload"
)

// The roles the orchestrator runs this program in, one process each,
// pinned to a CPU and inside a namespace by `taskset -c N ip netns exec`.
// A server role prints "ready" on stdout once its socket is bound and
// serves until SIGTERM.

// roleFlags are the flags of the child roles.
type roleFlags struct {
	iface    string
	size     int
	workers  int
	inflight int
	count    int
	duration time.Duration
	verify   bool
	profile  string
}

func parseRoleFlags(fs *flag.FlagSet, args []string) (roleFlags, error) {
	var f roleFlags
	fs.StringVar(&f.iface, "iface", "", "server interface")
	fs.IntVar(&f.size, "n", 1, "reservations")
	fs.IntVar(&f.workers, "workers", 0, "gitmetal workers (0: default)")
	fs.IntVar(&f.inflight, "inflight", 1, "load: exchanges in flight")
	fs.IntVar(&f.count, "count", 1000, "load: exchanges at most")
	fs.DurationVar(&f.duration, "duration", time.Second, "load: time at most")
	fs.BoolVar(&f.verify, "verify", true, "load: check each offered address")
	fs.StringVar(&f.profile, "cpuprofile", "", "servers: write a CPU profile here (diagnosis)")
	err := fs.Parse(args)
	return f, err
}

func fleetStore(n int) (*store.Store, error) {
	f, err := dhcpload.Fleet(n)
	if err != nil {
		return nil, err
	}
	st, err := store.New()
	if err != nil {
		return nil, err
	}
	if _, err := st.Apply("bench", f); err != nil {
		return nil, err
	}
	return st, nil
}

func serverConfig(f roleFlags, st dhcp.Backend) dhcp.Config {
	return dhcp.Config{
		Mode:          dhcp.ModeReservation,
		Interface:     f.iface,
		AdvertiseAddr: netip.MustParseAddr(dhcpload.ServerAddr),
		HTTPBase:      "http://" + dhcpload.ServerAddr + ":8080",
		Workers:       f.workers,
		Backend:       st,
		// As in production: info level, so startup is logged and each
		// packet is not.
		Log: zerolog.New(io.Discard).Level(zerolog.InfoLevel),
	}
}

// runGitmetal serves with gitmetal's dhcp.Server: the real handler, every
// option, the worker pool. cold makes the store's generation change on
// every read, so the handler's memo never hits: each packet looks its MAC
// up in the store, as the first request of each machine after a commit
// does (the machines are unchanged, so their encoded options are kept).
func runGitmetal(ctx context.Context, f roleFlags, stdout io.Writer, cold bool) error {
	st, err := fleetStore(f.size)
	if err != nil {
		return err
	}
	var b dhcp.Backend = st
	if cold {
		b = &coldStore{Store: st}
	}
	srv, err := dhcp.New(serverConfig(f, b))
	if err != nil {
		return err
	}
	if f.profile != "" {
		pf, err := os.Create(f.profile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintln(stdout, "ready")
	return srv.Run(ctx)
}

// coldStore is a store whose generation is new at every read.
type coldStore struct {
	*store.Store
	gen atomic.Uint64
}

func (s *coldStore) Generation() uint64 { return s.gen.Add(1) }

// runServer4 serves the same handler through insomniacslk's server4, which
// starts a goroutine per packet, for comparison with gitmetal's pool.
func runServer4(ctx context.Context, f roleFlags, stdout io.Writer) error {
	st, err := fleetStore(f.size)
	if err != nil {
		return err
	}
	h, err := dhcp.NewHandler(serverConfig(f, st))
	if err != nil {
		return err
	}
	conn, err := server4.NewIPv4UDPConn(f.iface, &net.UDPAddr{Port: dhcp.ServerPort})
	if err != nil {
		return err
	}
	srv, err := server4.NewServer("", nil, func(c net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		res, err := h.Handle(m, dhcp.ServerPort)
		if err != nil || res.Reply == nil {
			return
		}
		// Relayed: peer is the relay, giaddr:67.
		_, _ = c.WriteTo(res.Reply.Bytes(), peer)
	}, server4.WithConn(conn))
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ready")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	<-ctx.Done()
	srv.Close()
	<-errc // Serve returns the close error; the run is over either way
	return nil
}

// replySize is the size of gitmetal's reply to the generator's PXE
// requests, which the raw loop's replies match.
func replySize() (int, error) {
	st, err := fleetStore(1)
	if err != nil {
		return 0, err
	}
	h, err := dhcp.NewHandler(serverConfig(roleFlags{iface: "x"}, st))
	if err != nil {
		return 0, err
	}
	req, err := dhcpv4.NewDiscovery(dhcpload.MAC(0),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
		dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, 7}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, dhcpload.MAC(0)...)),
		dhcpv4.WithGatewayIP(net.ParseIP(dhcpload.RelayAddr)))
	if err != nil {
		return 0, err
	}
	res, err := h.Handle(req, dhcp.ServerPort)
	if err != nil || res.Reply == nil {
		return 0, fmt.Errorf("reply size: no reply (%s): %v", res.Note, err)
	}
	return len(res.Reply.Bytes()), nil
}

// runRaw is the harness's ceiling: one read loop that turns each request
// into a reply of gitmetal's size (op, message type patched, nothing
// looked up) and writes it back to the sender. With batch > 1 it reads
// and writes that many packets per system call (recvmmsg, sendmmsg), as
// gitmetal's workers do: the ceiling of that technique.
func runRaw(ctx context.Context, f roleFlags, stdout io.Writer, batch int) error {
	size, err := replySize()
	if err != nil {
		return err
	}
	conn, err := server4.NewIPv4UDPConn(f.iface, &net.UDPAddr{Port: dhcp.ServerPort})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ready")
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	pc := ipv4.NewPacketConn(conn)
	in, out := make([]ipv4.Message, batch), make([]ipv4.Message, batch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, 1500)}
		out[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	for {
		var n int
		var err error
		if batch == 1 {
			// One packet per system call, without x/net's batch
			// bookkeeping: read, write.
			var from netip.AddrPort
			n, from, err = conn.ReadFromUDPAddrPort(in[0].Buffers[0])
			if err == nil {
				if reply := rawReply(in[0].Buffers[0][:n], out[0].Buffers[0], size); reply != nil {
					_, err = conn.WriteToUDPAddrPort(reply, from)
				}
			}
		} else if n, err = pc.ReadBatch(in, 0); err == nil {
			k := 0
			for i := range n {
				if reply := rawReply(in[i].Buffers[0][:in[i].N], out[k].Buffers[0][:cap(out[k].Buffers[0])], size); reply != nil {
					out[k].Buffers[0], out[k].Addr = reply, in[i].Addr
					k++
				}
			}
			for sent := 0; sent < k && err == nil; {
				var m int
				m, err = pc.WriteBatch(out[sent:k], 0)
				sent += m
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// rawBatch is the batch of the rawbatch role: gitmetal's.
const rawBatch = dhcp.BatchSize

// rawReply turns request req into a reply of at least size bytes in out:
// op and message type patched, the rest copied. It returns nil for what
// is too short to be DHCP.
func rawReply(req, out []byte, size int) []byte {
	n := len(req)
	if n < 241 {
		return nil
	}
	out = out[:max(size, n)]
	copy(out, req)
	clear(out[n:])
	out[0] = byte(dhcpv4.OpcodeBootReply)
	for i := 240; i+2 < n; i += 2 + int(out[i+1]) {
		if out[i] == 53 {
			switch out[i+2] {
			case byte(dhcpv4.MessageTypeDiscover):
				out[i+2] = byte(dhcpv4.MessageTypeOffer)
			case byte(dhcpv4.MessageTypeRequest):
				out[i+2] = byte(dhcpv4.MessageTypeAck)
			}
			break
		}
		if out[i] == 255 || out[i] == 0 {
			break
		}
	}
	return out
}

// loadResult is what the load role prints: the warm-up and the run.
type loadResult struct {
	Warmup time.Duration   `json:"warmup_ns"`
	Result dhcpload.Result `json:"result"`
}

// runLoad waits for the server to answer (warm-up: neighbour entries,
// the server's first packet), then runs the measured load and prints a
// loadResult as JSON.
func runLoad(ctx context.Context, f roleFlags, stdout io.Writer) error {
	pc, err := net.ListenPacket("udp4", dhcpload.RelayAddr+":67")
	if err != nil {
		return err
	}
	defer pc.Close()
	conn := pc.(*net.UDPConn)
	clients := dhcpload.Clients(f.size, f.verify)
	base := dhcpload.Config{
		Server:  netip.AddrPortFrom(netip.MustParseAddr(dhcpload.ServerAddr), dhcp.ServerPort),
		Relay:   netip.MustParseAddr(dhcpload.RelayAddr),
		Clients: clients,
		PXE:     true,
	}
	start := time.Now()
	for {
		w := base
		w.InFlight, w.Count, w.Duration, w.Timeout = 1, 1, 300*time.Millisecond, 250*time.Millisecond
		res, err := dhcpload.Run(ctx, conn, w)
		if err != nil {
			return err
		}
		if res.Wrong > 0 {
			return fmt.Errorf("warm-up: wrong reply: %s", res.FirstWrong)
		}
		if res.Exchanges == 1 {
			break
		}
		if time.Since(start) > 15*time.Second {
			return errors.New("warm-up: the server did not answer in 15 s")
		}
	}
	warm := time.Since(start)
	c := base
	c.InFlight, c.Count, c.Duration, c.Timeout = f.inflight, f.count, f.duration, time.Second
	res, err := dhcpload.Run(ctx, conn, c)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(loadResult{Warmup: warm, Result: res})
}

// Package tftp is gitmetal's read-only TFTP server: it hands PXE firmware
// the iPXE binaries (undionly.kpxe, ipxe.efi, snp.efi, ...) and serves an
// optional directory of other assets, on top of github.com/pin/tftp/v3.
//
// Design notes:
//   - A request names either an iPXE binary (one file name, looked up in
//     IPXEDir, see ipxe.Binaries) or a path in AssetDir (opened through
//     os.Root, see ipxe.Tree). Absolute paths, "..", NUL bytes, control
//     characters and symbolic links that leave the asset tree are refused
//     with a "file not found" error packet that names no server path.
//   - Write requests are refused with an error packet.
//   - Options: blksize (RFC 2348, capped by MaxBlockSize and by the path
//     MTU pin/tftp reads from the interface) and tsize (RFC 2349). pin/tftp
//     (v3.1.0, and v3.2.0, the newest release) does not negotiate
//     windowsize (RFC 7440) and has no hook to: it leaves the option out
//     of its OACK, so such clients fall back to one block per ACK, as
//     RFC 7440 requires. SendAhead enables pin/tftp's own, non-negotiated
//     send-ahead instead (off by default).
//   - Every transfer runs in its own goroutine (pin/tftp's); at most
//     MaxTransfers run at once, each bounded by Timeout overall and by
//     PacketTimeout × Retries while the client is silent.
//   - Run stops taking requests when its context ends, lets running
//     transfers finish for ShutdownGrace, then aborts them.
//
// The package must not decide what a machine boots (that is the DHCP
// server's and the iPXE script's job) and must never write a file.
package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	pintftp "github.com/pin/tftp/v3"
	"github.com/rs/zerolog"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/gitmetal/gitmetal/boot/ipxe"
)

// Defaults of the Config fields left zero.
const (
	DefaultListenAddr    = ":69"
	DefaultTimeout       = 2 * time.Minute
	DefaultPacketTimeout = 2 * time.Second
	DefaultRetries       = 5
	DefaultMaxTransfers  = 512
	DefaultShutdownGrace = 5 * time.Second
)

// The range of block sizes RFC 2348 allows.
const (
	minBlockSize = 512
	maxBlockSize = 65464
)

// Config configures the TFTP server.
type Config struct {
	// IPXEDir is the flat directory of iPXE binaries. A request for a
	// plain file name is looked up here first. At least one of IPXEDir and
	// AssetDir is required.
	IPXEDir string
	// AssetDir is a directory tree of other files served by relative path.
	// Optional.
	AssetDir string
	// ListenAddr is the UDP address Run listens on. Default ":69".
	ListenAddr string
	// Timeout bounds one transfer, from the request to the last block.
	// Default 2 minutes: ipxe.efi takes well under a second on a LAN, but
	// PXE ROMs with 512-byte blocks on a slow link take longer.
	Timeout time.Duration
	// PacketTimeout is how long the server waits for the ACK of a packet
	// before sending it again. Default 2 s.
	PacketTimeout time.Duration
	// Retries is how many times a packet is sent before the transfer is
	// given up. Default 5.
	Retries int
	// MaxBlockSize caps the blksize option, 512 to 65464. Default 0: the
	// client's choice, capped by the MTU of the interface the request came
	// in on.
	MaxBlockSize int
	// MaxTransfers is the most transfers that run at once; requests beyond
	// it get an error packet. Default 512.
	MaxTransfers int
	// SendAhead, when 2 or more, makes the server send that many blocks
	// before waiting for their ACKs (pin/tftp's experimental
	// "anticipate" mode, at most 60). It is not RFC 7440: it is not
	// negotiated and every block is still ACKed. Default 0: off.
	SendAhead int
	// ShutdownGrace is how long running transfers may go on after Run's
	// context ends before they are aborted. Default 5 s.
	ShutdownGrace time.Duration
	// Log receives one line per transfer (debug on success, warn on
	// failure) and the server's start and stop.
	Log zerolog.Logger
}

// Server is a read-only TFTP server.
type Server struct {
	cfg      Config
	log      zerolog.Logger
	binaries *ipxe.Binaries // nil without IPXEDir
	assets   *ipxe.Tree     // nil without AssetDir
	slots    chan struct{}  // one token per running transfer
	abort    chan struct{}  // closed when the shutdown grace ends
	stop     sync.Once

	transfers, failures, refused, bytes atomic.Uint64
}

// New validates cfg, fills in the defaults and opens the directories.
// Close releases them.
func New(cfg Config) (*Server, error) {
	if cfg.IPXEDir == "" && cfg.AssetDir == "" {
		return nil, errors.New("tftp: one of IPXEDir and AssetDir is required")
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = DefaultListenAddr
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.PacketTimeout == 0 {
		cfg.PacketTimeout = DefaultPacketTimeout
	}
	if cfg.Retries == 0 {
		cfg.Retries = DefaultRetries
	}
	if cfg.MaxTransfers == 0 {
		cfg.MaxTransfers = DefaultMaxTransfers
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	switch {
	case cfg.Timeout < 0 || cfg.PacketTimeout < 0 || cfg.ShutdownGrace < 0:
		return nil, errors.New("tftp: Timeout, PacketTimeout and ShutdownGrace must not be negative")
	case cfg.Retries < 0 || cfg.MaxTransfers < 0:
		return nil, errors.New("tftp: Retries and MaxTransfers must not be negative")
	case cfg.MaxBlockSize != 0 && (cfg.MaxBlockSize < minBlockSize || cfg.MaxBlockSize > maxBlockSize):
		return nil, fmt.Errorf("tftp: MaxBlockSize %d: allowed 0 (the client's choice) or %d to %d", cfg.MaxBlockSize, minBlockSize, maxBlockSize)
	case cfg.SendAhead < 0 || cfg.SendAhead > 60:
		return nil, fmt.Errorf("tftp: SendAhead %d: allowed 0 to 60", cfg.SendAhead)
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Log.With().Str("component", "tftp").Logger(),
		slots: make(chan struct{}, cfg.MaxTransfers),
		abort: make(chan struct{}),
	}
	if cfg.IPXEDir != "" {
		b, err := ipxe.OpenBinaries(cfg.IPXEDir)
		if err != nil {
			return nil, fmt.Errorf("tftp: %w", err)
		}
		s.binaries = b
	}
	if cfg.AssetDir != "" {
		t, err := ipxe.OpenTree(cfg.AssetDir)
		if err != nil {
			return nil, fmt.Errorf("tftp: assets: %w", err)
		}
		s.assets = t
	}
	return s, nil
}

// Close releases the asset directory. Call it after Run has returned.
func (s *Server) Close() error {
	if s.assets != nil {
		return s.assets.Close()
	}
	return nil
}

// Run listens on cfg.ListenAddr and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	conn, err := Listen(s.cfg.ListenAddr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, conn)
}

// Listen opens a UDP socket for Serve, with PacketInfo set.
func Listen(addr string) (*net.UDPConn, error) {
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("tftp: listen address %q: %w", addr, err)
	}
	conn, err := net.ListenUDP("udp", a)
	if err != nil {
		return nil, fmt.Errorf("tftp: %w", err)
	}
	if err := PacketInfo(conn); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// PacketInfo asks the kernel for each datagram's destination address and
// interface on conn. pin/tftp answers from that address and caps blksize
// by that interface's MTU; it sets the option itself in Serve, but a
// request that arrives before then is held to 512-byte blocks. Call it
// right after opening a socket by other means and before handing it to
// Serve.
//
// A socket opened in another network namespace than the process's is not
// enough: pin/tftp opens a new socket per transfer, on whatever thread runs
// it, so every transfer would bind in the process's own namespace and
// fail. Run the server in a process inside the namespace (`ip netns exec`)
// instead.
func PacketInfo(conn *net.UDPConn) error {
	var err error
	// The same rule pin/tftp uses to pick the address family.
	if la, ok := conn.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() != nil {
		err = ipv4.NewPacketConn(conn).SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
	} else {
		err = ipv6.NewPacketConn(conn).SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
	}
	if err != nil {
		return fmt.Errorf("tftp: packet info: %w", err)
	}
	return nil
}

// Serve serves on conn (opened with Listen, or given PacketInfo) until ctx
// ends, then
// closes conn. It stops taking
// requests at once and returns when running transfers have finished, or
// have been aborted after ShutdownGrace. A Server serves once.
func (s *Server) Serve(ctx context.Context, conn *net.UDPConn) error {
	srv := pintftp.NewServer(s.read, nil)
	srv.SetTimeout(s.cfg.PacketTimeout)
	srv.SetRetries(s.cfg.Retries)
	if s.cfg.MaxBlockSize > 0 {
		srv.SetBlockSize(s.cfg.MaxBlockSize)
	}
	if s.cfg.SendAhead > 1 {
		srv.SetAnticipate(uint(s.cfg.SendAhead))
	}
	srv.SetHook(hook{s})

	s.log.Info().Str("listen", conn.LocalAddr().String()).Str("ipxeDir", s.cfg.IPXEDir).Str("assetDir", s.cfg.AssetDir).Msg("tftp serving")
	served := make(chan error, 1)
	go func() { served <- srv.Serve(conn) }()

	var err error
	select {
	case err = <-served:
		// Serve returns early only when it cannot use conn.
		conn.Close()
		return fmt.Errorf("tftp: %w", err)
	case <-ctx.Done():
	}
	// pin/tftp's Shutdown closes conn, then waits for every transfer.
	shut := make(chan struct{})
	go func() {
		srv.Shutdown()
		close(shut)
	}()
	grace := time.NewTimer(s.cfg.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-shut:
	case <-grace.C:
		s.log.Warn().Dur("grace", s.cfg.ShutdownGrace).Msg("tftp aborting running transfers")
		s.stop.Do(func() { close(s.abort) })
		<-shut
	}
	conn.Close()
	if err = <-served; err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	s.log.Info().Msg("tftp stopped")
	return nil
}

// errBusy and errAborted are sent to clients in error packets.
var (
	errBusy    = errors.New("server busy, try again")
	errAborted = errors.New("server shutting down")
	errTimeout = errors.New("transfer took too long")
)

// read is pin/tftp's read handler: it runs in the transfer's goroutine and
// returns when the transfer has ended.
func (s *Server) read(name string, rf io.ReaderFrom) (err error) {
	log := s.log.With().Str("file", name).Logger()
	if ot, ok := rf.(pintftp.OutgoingTransfer); ok {
		ra := ot.RemoteAddr()
		log = log.With().Str("remote", ra.String()).Logger()
	}
	defer func() {
		// A bug here must cost one transfer, not the daemon.
		if r := recover(); r != nil {
			log.Error().Interface("panic", r).Msg("tftp transfer panicked")
			s.failures.Add(1)
			err = errors.New("internal error")
		}
	}()
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		s.refused.Add(1)
		log.Warn().Int("maxTransfers", s.cfg.MaxTransfers).Msg("tftp transfer refused: too many running")
		return errBusy
	}
	f, size, err := s.open(name)
	if err != nil {
		s.refused.Add(1)
		log.Info().Err(err).Msg("tftp request refused")
		return ipxe.ErrNotFound
	}
	defer f.Close()
	s.transfers.Add(1)
	if ot, ok := rf.(pintftp.OutgoingTransfer); ok {
		ot.SetSize(size)
	}
	r := &boundedReader{r: f, deadline: time.Now().Add(s.cfg.Timeout), abort: s.abort}
	n, err := rf.ReadFrom(r)
	s.bytes.Add(uint64(n))
	if err != nil {
		// pin/tftp has already sent the client an error packet and called
		// the hook, which logs; returning nil keeps it from trying again.
		s.failures.Add(1)
	}
	return nil
}

// open finds name among the iPXE binaries, then in the asset tree.
func (s *Server) open(name string) (*os.File, int64, error) {
	if s.binaries != nil && ipxe.ValidBinaryName(name) {
		f, st, err := s.binaries.Open(name)
		if err == nil {
			return f, st.Size(), nil
		}
		if s.assets == nil {
			return nil, 0, err
		}
	}
	if s.assets == nil {
		return nil, 0, ipxe.ErrNotFound
	}
	f, st, err := s.assets.Open(name)
	if err != nil {
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// boundedReader fails a transfer that runs past its deadline or is aborted
// by the shutdown. pin/tftp reads one block at a time, so the check runs
// once per block.
type boundedReader struct {
	r        io.Reader
	deadline time.Time
	abort    <-chan struct{}
}

func (b *boundedReader) Read(p []byte) (int, error) {
	select {
	case <-b.abort:
		return 0, errAborted
	default:
	}
	if time.Now().After(b.deadline) {
		return 0, errTimeout
	}
	return b.r.Read(p)
}

// hook logs the end of each transfer.
type hook struct{ s *Server }

func (h hook) OnSuccess(st pintftp.TransferStats) {
	h.s.log.Debug().Str("file", st.Filename).Str("remote", st.RemoteAddr.String()).
		Dur("duration", st.Duration).Int("datagrams", st.DatagramsSent).Msg("tftp transfer done")
}

func (h hook) OnFailure(st pintftp.TransferStats, err error) {
	switch {
	case st.Filename == "":
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			// The transfer's socket could not be made: the server is
			// broken, not the client.
			h.s.log.Warn().Err(err).Str("remote", st.RemoteAddr.String()).Msg("tftp transfer could not start")
			return
		}
		// A packet that is not a valid request: pin/tftp drops it.
		h.s.log.Debug().Err(err).Msg("tftp bad packet")
		return
	case errors.Is(err, ipxe.ErrNotFound) || errors.Is(err, errBusy):
		return // read has logged it
	}
	h.s.log.Warn().Err(err).Str("file", st.Filename).Str("remote", st.RemoteAddr.String()).
		Dur("duration", st.Duration).Msg("tftp transfer failed")
}

// Stats counts what the server has done since it started.
type Stats struct {
	// Transfers started (the file was looked up).
	Transfers uint64
	// Failures: transfers that started and did not complete.
	Failures uint64
	// Refused requests: unknown or forbidden names, or too many transfers.
	Refused uint64
	// Bytes read from files and handed to clients.
	Bytes uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Transfers: s.transfers.Load(),
		Failures:  s.failures.Load(),
		Refused:   s.refused.Load(),
		Bytes:     s.bytes.Load(),
	}
}

// WriteMetrics writes the counters in Prometheus text format (see the
// reconciler API's MetricsWriter).
func (s *Server) WriteMetrics(w io.Writer) error {
	st := s.Stats()
	_, err := fmt.Fprintf(w, `# HELP gitmetal_tftp_transfers_total TFTP read transfers started.
# TYPE gitmetal_tftp_transfers_total counter
gitmetal_tftp_transfers_total %d
# HELP gitmetal_tftp_failures_total TFTP transfers that did not complete.
# TYPE gitmetal_tftp_failures_total counter
gitmetal_tftp_failures_total %d
# HELP gitmetal_tftp_refused_total TFTP requests refused (unknown or forbidden name, server busy).
# TYPE gitmetal_tftp_refused_total counter
gitmetal_tftp_refused_total %d
# HELP gitmetal_tftp_bytes_total Bytes sent by TFTP.
# TYPE gitmetal_tftp_bytes_total counter
gitmetal_tftp_bytes_total %d
`, st.Transfers, st.Failures, st.Refused, st.Bytes)
	return err
}

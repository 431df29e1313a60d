package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pintftp "github.com/pin/tftp/v3"
	"github.com/rs/zerolog"
)

// fixture is an iPXE directory and an asset tree with files of awkward
// sizes and symbolic links that stay in, and leave, their trees.
type fixture struct {
	ipxeDir, assetDir, outside string
	// files maps each servable request name to its content.
	files map[string][]byte
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t testing.TB, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{
		ipxeDir:  filepath.Join(base, "ipxe"),
		assetDir: filepath.Join(base, "assets"),
		outside:  filepath.Join(base, "outside"),
		files:    map[string][]byte{},
	}
	add := func(dir, name string, b []byte) {
		writeFile(t, filepath.Join(dir, filepath.FromSlash(name)), b)
		f.files[name] = b
	}
	add(f.ipxeDir, "undionly.kpxe", randomBytes(t, 74213))
	add(f.ipxeDir, "snponly.efi", randomBytes(t, 512*40)) // a multiple of 512: ends with an empty block
	add(f.ipxeDir, "empty.bin", nil)
	writeFile(t, filepath.Join(f.ipxeDir, ".hidden"), []byte("hidden"))
	// Debian's ipxe package links /usr/lib/ipxe/ipxe.efi to /boot/ipxe.efi:
	// a top-level link of the iPXE directory is followed.
	efi := randomBytes(t, 850528)
	writeFile(t, filepath.Join(base, "boot", "ipxe.efi"), efi)
	symlink(t, filepath.Join(base, "boot", "ipxe.efi"), filepath.Join(f.ipxeDir, "ipxe.efi"))
	f.files["ipxe.efi"] = efi

	add(f.assetDir, "a/b/file.txt", []byte("an asset\n"))
	add(f.assetDir, "grub/x86_64-efi/core.efi", randomBytes(t, 3000))
	symlink(t, "a/b/file.txt", filepath.Join(f.assetDir, "link-inside"))
	f.files["link-inside"] = f.files["a/b/file.txt"]

	writeFile(t, filepath.Join(f.outside, "secret"), []byte("secret\n"))
	symlink(t, filepath.Join(f.outside, "secret"), filepath.Join(f.assetDir, "link-out"))
	symlink(t, "../outside/secret", filepath.Join(f.assetDir, "link-up"))
	symlink(t, f.outside, filepath.Join(f.assetDir, "dir-out"))
	return f
}

func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

// startServer serves cfg on a loopback port until the test ends and
// returns the server and its address.
func startServer(t testing.TB, cfg Config) (*Server, *net.UDPAddr) {
	t.Helper()
	cfg.Log = testLogger(t)
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	conn, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return s, serveOn(t, s, conn)
}

// serveOn runs s.Serve on conn until the test ends.
func serveOn(t testing.TB, s *Server, conn *net.UDPConn) *net.UDPAddr {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("serve did not return 60 s after its context ended")
		}
		s.Close()
	})
	return conn.LocalAddr().(*net.UDPAddr)
}

// pinGet fetches name with the pin/tftp client.
func pinGet(addr string, name string, blksize int) ([]byte, int64, error) {
	c, err := pintftp.NewClient(addr)
	if err != nil {
		return nil, 0, err
	}
	c.SetTimeout(5 * time.Second)
	c.SetRetries(5)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(true)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, 0, err
	}
	size, _ := wt.(pintftp.IncomingTransfer).Size()
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), size, nil
}

// Raw TFTP packets, for what the clients cannot send.
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

func rrq(name, mode string, opts ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, opRRQ)
	for _, s := range append([]string{name, mode}, opts...) {
		b = append(append(b, s...), 0)
	}
	return b
}

func ack(block uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, opACK), block)
}

// rawClient is a UDP socket that talks TFTP by hand.
type rawClient struct {
	t    testing.TB
	conn *net.UDPConn
	peer *net.UDPAddr // the transfer's address once the server answered
}

func newRawClient(t testing.TB) *rawClient {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn}
}

func (c *rawClient) send(to *net.UDPAddr, b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP(b, to); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next packet's opcode and the rest of it.
func (c *rawClient) recv(timeout time.Duration) (uint16, []byte) {
	c.t.Helper()
	buf := make([]byte, 70000)
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	n, from, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		c.t.Fatalf("receive: %v", err)
	}
	if n < 2 {
		c.t.Fatalf("got a %d-byte packet, want at least 2", n)
	}
	c.peer = from
	return binary.BigEndian.Uint16(buf), buf[2:n]
}

// parseOptions parses an OACK body.
func parseOptions(b []byte) map[string]string {
	parts := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	m := map[string]string{}
	for i := 0; i+1 < len(parts); i += 2 {
		m[strings.ToLower(parts[i])] = parts[i+1]
	}
	return m
}

// errorMessage returns an ERROR packet body's message.
func errorMessage(b []byte) string {
	if len(b) < 2 {
		return ""
	}
	return strings.TrimRight(string(b[2:]), "\x00")
}

package tftp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pintftp "github.com/pin/tftp/v3"
	"github.com/rs/zerolog"
)

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no directories", Config{}, "one of IPXEDir and AssetDir is required"},
		{"missing ipxe dir", Config{IPXEDir: filepath.Join(f.ipxeDir, "nope")}, "no such file"},
		{"ipxe dir is a file", Config{IPXEDir: filepath.Join(f.ipxeDir, "undionly.kpxe")}, "not a directory"},
		{"missing asset dir", Config{AssetDir: filepath.Join(f.assetDir, "nope")}, "no such file"},
		{"block size too small", Config{IPXEDir: f.ipxeDir, MaxBlockSize: 100}, "MaxBlockSize 100"},
		{"block size too large", Config{IPXEDir: f.ipxeDir, MaxBlockSize: 70000}, "MaxBlockSize 70000"},
		{"negative timeout", Config{IPXEDir: f.ipxeDir, Timeout: -1}, "must not be negative"},
		{"negative retries", Config{IPXEDir: f.ipxeDir, Retries: -1}, "must not be negative"},
		{"send-ahead too large", Config{IPXEDir: f.ipxeDir, SendAhead: 61}, "SendAhead 61"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	t.Parallel()
	s, err := New(Config{IPXEDir: newFixture(t).ipxeDir, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := s.cfg
	if got.ListenAddr != ":69" || got.Timeout != DefaultTimeout || got.PacketTimeout != DefaultPacketTimeout ||
		got.Retries != DefaultRetries || got.MaxTransfers != DefaultMaxTransfers || got.ShutdownGrace != DefaultShutdownGrace {
		t.Errorf("got defaults %+v, want ListenAddr :69 and the Default constants", got)
	}
}

// TestFetchEveryFile fetches every servable file with pin/tftp's client at
// several block sizes and checks the content and the tsize option.
func TestFetchEveryFile(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, addr := startServer(t, Config{IPXEDir: f.ipxeDir, AssetDir: f.assetDir})
	names := make([]string, 0, len(f.files))
	for n := range f.files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, blksize := range []int{0, 1468, 8192, 65464} {
		for _, name := range names {
			t.Run(fmt.Sprintf("%s/blksize=%d", name, blksize), func(t *testing.T) {
				t.Parallel()
				got, size, err := pinGet(addr.String(), name, blksize)
				if err != nil {
					t.Fatalf("get: %v", err)
				}
				if want := f.files[name]; !bytes.Equal(got, want) {
					t.Errorf("got %d bytes, want the %d bytes of the file", len(got), len(want))
				}
				if size != int64(len(f.files[name])) && len(f.files[name]) > 0 {
					t.Errorf("got tsize %d, want %d", size, len(f.files[name]))
				}
			})
		}
	}
}

// TestRefusesOutsideNames asks for names that must not be served, over the
// wire, and checks each gets an error and the server counts it refused.
func TestRefusesOutsideNames(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s, addr := startServer(t, Config{IPXEDir: f.ipxeDir, AssetDir: f.assetDir})
	names := []string{
		"../outside/secret",
		"a/../../outside/secret",
		"a/../a/b/file.txt", // stays inside, but ".." is refused outright
		"/etc/passwd",
		"/" + filepath.Join(f.outside, "secret"),
		"link-out", // absolute link out of the tree
		"link-up",  // relative link out of the tree
		"dir-out/secret",
		"a",       // a directory
		"a/b",     // a directory
		".hidden", // hidden files of the iPXE directory
		"nonexistent.efi",
		`a\b\file.txt`,
		"a//b/file.txt",
		"./a/b/file.txt",
		"a/b/file.txt\x01",
	}
	for i, name := range names {
		_, _, err := pinGet(addr.String(), name, 0)
		if err == nil {
			t.Errorf("get %q: got no error, want file not found", name)
			continue
		}
		if !strings.Contains(err.Error(), "file not found") {
			t.Errorf("get %q: got error %v, want file not found", name, err)
		}
		if got := s.Stats().Refused; got != uint64(i+1) {
			t.Errorf("after %q: got %d refused, want %d", name, got, i+1)
		}
	}
	if st := s.Stats(); st.Transfers != 0 || st.Bytes != 0 {
		t.Errorf("got stats %+v, want no transfer and no byte sent", st)
	}
}

func TestRefusesWrites(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, addr := startServer(t, Config{IPXEDir: f.ipxeDir, AssetDir: f.assetDir})
	c, err := pintftp.NewClient(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	for _, name := range []string{"new.bin", "undionly.kpxe", "a/b/file.txt"} {
		rf, err := c.Send(name, "octet")
		if err == nil {
			_, err = rf.ReadFrom(bytes.NewReader([]byte("overwritten")))
		}
		if err == nil || !strings.Contains(err.Error(), "does not support write") {
			t.Errorf("put %q: got error %v, want a refusal", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(f.ipxeDir, "new.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("new.bin: got %v, want it not to exist", err)
	}
	for _, name := range []string{"undionly.kpxe", "a/b/file.txt"} {
		dir := f.ipxeDir
		if strings.Contains(name, "/") {
			dir = f.assetDir
		}
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil || !bytes.Equal(b, f.files[name]) {
			t.Errorf("%s changed after a refused write (err %v)", name, err)
		}
	}
}

// TestOptions checks the OACK by hand: blksize and tsize are acknowledged,
// windowsize is left out (pin/tftp does not negotiate it), and the first
// block has the negotiated size.
func TestOptions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, addr := startServer(t, Config{IPXEDir: f.ipxeDir, PacketTimeout: 200 * time.Millisecond, Retries: 1})
	tests := []struct {
		name    string
		opts    []string
		maxBlk  int
		wantBlk int
	}{
		{"blksize 1468", []string{"blksize", "1468", "tsize", "0", "windowsize", "8"}, 0, 1468},
		{"blksize 65464", []string{"blksize", "65464", "tsize", "0"}, 0, 65464},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newRawClient(t)
			c.send(addr, rrq("ipxe.efi", "octet", tc.opts...))
			op, body := c.recv(5 * time.Second)
			if op != opOACK {
				t.Fatalf("got opcode %d (%q), want OACK", op, body)
			}
			opts := parseOptions(body)
			want := map[string]string{"blksize": strconv.Itoa(tc.wantBlk), "tsize": strconv.Itoa(len(f.files["ipxe.efi"]))}
			if fmt.Sprint(opts) != fmt.Sprint(want) {
				t.Errorf("got OACK %v, want %v (no windowsize)", opts, want)
			}
			c.send(c.peer, ack(0))
			op, body = c.recv(5 * time.Second)
			if op != opDATA || len(body) != 2+tc.wantBlk {
				t.Fatalf("got opcode %d with %d bytes, want DATA with a %d-byte block", op, len(body)-2, tc.wantBlk)
			}
			if !bytes.Equal(body[2:], f.files["ipxe.efi"][:tc.wantBlk]) {
				t.Errorf("block 1 differs from the file's first %d bytes", tc.wantBlk)
			}
		})
	}
}

func TestMaxBlockSizeCapsBlksize(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, addr := startServer(t, Config{IPXEDir: f.ipxeDir, MaxBlockSize: 1024, PacketTimeout: 200 * time.Millisecond, Retries: 1})
	c := newRawClient(t)
	c.send(addr, rrq("undionly.kpxe", "octet", "blksize", "8192"))
	op, body := c.recv(5 * time.Second)
	if op != opOACK {
		t.Fatalf("got opcode %d, want OACK", op)
	}
	if got := parseOptions(body)["blksize"]; got != "1024" {
		t.Errorf("got blksize %q, want 1024", got)
	}
}

// TestManyConcurrentTransfers runs 32 transfers of the 850 kB file at once.
func TestManyConcurrentTransfers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s, addr := startServer(t, Config{IPXEDir: f.ipxeDir})
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			got, _, err := pinGet(addr.String(), "ipxe.efi", []int{0, 1468, 8192}[i%3])
			if err == nil && !bytes.Equal(got, f.files["ipxe.efi"]) {
				err = fmt.Errorf("transfer %d: content differs", i)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// The server counts a transfer when the last ACK is in, which can be
	// just after the client has returned.
	want := Stats{Transfers: n, Bytes: n * uint64(len(f.files["ipxe.efi"]))}
	if st := waitStats(s, func(st Stats) bool { return st == want }); st != want {
		t.Errorf("got stats %+v, want %+v", st, want)
	}
}

// TestMaxTransfers holds the only slot with a client that never ACKs, and
// checks a second request is refused until the first gives up.
func TestMaxTransfers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s, addr := startServer(t, Config{IPXEDir: f.ipxeDir, MaxTransfers: 1, PacketTimeout: 300 * time.Millisecond, Retries: 2})
	stalled := newRawClient(t)
	stalled.send(addr, rrq("ipxe.efi", "octet"))
	if op, _ := stalled.recv(5 * time.Second); op != opDATA {
		t.Fatalf("got opcode %d, want DATA", op)
	}
	_, _, err := pinGet(addr.String(), "undionly.kpxe", 0)
	if err == nil || !strings.Contains(err.Error(), "server busy") {
		t.Fatalf("got error %v, want server busy", err)
	}
	// The stalled transfer gives up after its retries; then the slot frees.
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _, err := pinGet(addr.String(), "undionly.kpxe", 0)
		if err == nil {
			if !bytes.Equal(got, f.files["undionly.kpxe"]) {
				t.Error("content differs")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused 30 s later: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := s.Stats(); st.Failures != 1 {
		t.Errorf("got %d failures, want 1 (the stalled transfer)", st.Failures)
	}
}

// waitStats returns the server's stats once ok accepts them, or after 10 s.
func waitStats(s *Server, ok func(Stats) bool) Stats {
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.Stats()
		if ok(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTransferTimeout ACKs slowly and checks the server ends the transfer
// with an error once Timeout has passed.
func TestTransferTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s, addr := startServer(t, Config{IPXEDir: f.ipxeDir, Timeout: 300 * time.Millisecond})
	c := newRawClient(t)
	c.send(addr, rrq("ipxe.efi", "octet"))
	for block := 1; block <= 100; block++ {
		op, body := c.recv(10 * time.Second)
		if op == opERROR {
			if msg := errorMessage(body); !strings.Contains(msg, "took too long") {
				t.Errorf("got error %q, want took too long", msg)
			}
			if st := waitStats(s, func(st Stats) bool { return st.Failures == 1 }); st.Failures != 1 {
				t.Errorf("got %d failures, want 1", st.Failures)
			}
			return
		}
		if op != opDATA {
			t.Fatalf("got opcode %d, want DATA or ERROR", op)
		}
		time.Sleep(100 * time.Millisecond)
		c.send(c.peer, ack(uint16(block)))
	}
	t.Fatal("100 slow blocks and no error: Timeout is not enforced")
}

// TestShutdown: Serve stops taking requests when its context ends, and a
// transfer still running after the grace period is aborted at its next
// block.
func TestShutdown(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s, err := New(Config{IPXEDir: f.ipxeDir, ShutdownGrace: 200 * time.Millisecond, PacketTimeout: 10 * time.Second, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := conn.LocalAddr().(*net.UDPAddr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()

	c := newRawClient(t)
	c.send(addr, rrq("ipxe.efi", "octet"))
	if op, _ := c.recv(5 * time.Second); op != opDATA {
		t.Fatalf("got opcode %d, want DATA", op)
	}
	cancel()
	select {
	case err := <-done:
		t.Fatalf("serve returned (%v) while a transfer was running", err)
	case <-time.After(500 * time.Millisecond):
	}
	// New requests are no longer read.
	_, _, err = pinGetQuick(addr.String(), "undionly.kpxe")
	if err == nil {
		t.Error("got a transfer after shutdown, want none")
	}
	c.send(c.peer, ack(1))
	if op, body := c.recv(5 * time.Second); op != opERROR || !strings.Contains(errorMessage(body), "shutting down") {
		t.Errorf("got opcode %d %q, want ERROR server shutting down", op, body)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return after the transfer was aborted")
	}
}

func pinGetQuick(addr, name string) ([]byte, int64, error) {
	c, err := pintftp.NewClient(addr)
	if err != nil {
		return nil, 0, err
	}
	c.SetTimeout(300 * time.Millisecond)
	c.SetRetries(1)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, 0, err
	}
	var buf bytes.Buffer
	_, err = wt.WriteTo(&buf)
	return buf.Bytes(), 0, err
}

// TestBadPacketsDoNotHurt sends malformed datagrams, then a good request.
func TestBadPacketsDoNotHurt(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, addr := startServer(t, Config{IPXEDir: f.ipxeDir, PacketTimeout: 200 * time.Millisecond, Retries: 1})
	c := newRawClient(t)
	bad := [][]byte{
		{}, {0}, {0, 1}, {0, 1, 0}, {0, 1, 'x'}, {0, 1, 'x', 0}, {0, 1, 'x', 0, 'o', 'c', 't', 'e', 't'},
		{0, 2}, {0, 3, 0, 1}, {0, 4}, {0, 5, 0}, {0, 6, 'a', 0}, {0, 9, 1, 2, 3}, {0xff, 0xff},
		rrq("ipxe.efi", "octet", "blksize"), rrq("ipxe.efi", "octet", "blksize", "x"),
		rrq("ipxe.efi", "octet", "blksize", "-1"), rrq("ipxe.efi", "octet", "blksize", "99999999999999999999"),
		rrq("ipxe.efi", "mail"), rrq("", "octet"), bytes.Repeat([]byte{0, 1}, 40000),
	}
	for _, b := range bad {
		if len(b) > 65000 {
			b = b[:65000]
		}
		c.send(addr, b)
	}
	got, _, err := pinGet(addr.String(), "undionly.kpxe", 1468)
	if err != nil || !bytes.Equal(got, f.files["undionly.kpxe"]) {
		t.Errorf("after bad packets: got %d bytes, err %v; want the file", len(got), err)
	}
}

// TestWildcardListen serves on a wildcard address (as with the default
// ":69") and fetches through 127.0.0.1.
func TestWildcardListen(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s, err := New(Config{IPXEDir: f.ipxeDir, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := Listen(":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := serveOn(t, s, conn)
	got, _, err := pinGet(net.JoinHostPort("127.0.0.1", strconv.Itoa(addr.Port)), "undionly.kpxe", 1468)
	if err != nil || !bytes.Equal(got, f.files["undionly.kpxe"]) {
		t.Errorf("got %d bytes, err %v; want the file", len(got), err)
	}
}

func TestRunListenError(t *testing.T) {
	t.Parallel()
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s, err := New(Config{IPXEDir: newFixture(t).ipxeDir, ListenAddr: busy.LocalAddr().String(), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("got %v, want address already in use", err)
	}
}

func TestWriteMetrics(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s, addr := startServer(t, Config{IPXEDir: f.ipxeDir})
	if _, _, err := pinGet(addr.String(), "undionly.kpxe", 0); err != nil {
		t.Fatal(err)
	}
	pinGet(addr.String(), "../x", 0)
	want := Stats{Transfers: 1, Refused: 1, Bytes: uint64(len(f.files["undionly.kpxe"]))}
	waitStats(s, func(st Stats) bool { return st == want })
	var b bytes.Buffer
	if err := s.WriteMetrics(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"gitmetal_tftp_transfers_total 1\n",
		"gitmetal_tftp_refused_total 1\n",
		"gitmetal_tftp_failures_total 0\n",
		fmt.Sprintf("gitmetal_tftp_bytes_total %d\n", len(f.files["undionly.kpxe"])),
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
}

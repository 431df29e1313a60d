package netlab

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestName(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"", "a", "dhcp", "averyveryverylongprefix"} {
		a, b := Name(prefix), Name(prefix)
		if a == b {
			t.Errorf("Name(%q) twice: got %q both times, want different names", prefix, a)
		}
		if len(a) > MaxNameLen {
			t.Errorf("Name(%q) = %q: got %d bytes, want at most %d", prefix, a, len(a), MaxNameLen)
		}
		if err := checkIfName(a); err != nil {
			t.Errorf("Name(%q) = %q is not an interface name: %v", prefix, a, err)
		}
	}
}

func TestCheckIfName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "a/b", "a b", "sixteen-bytes-xx", "a:b"} {
		if err := checkIfName(name); err == nil {
			t.Errorf("checkIfName(%q): got nil, want an error", name)
		}
	}
}

// TestPair builds the smallest lab, sends a datagram from a command run in
// the client namespace to a socket the test process opened in the server
// namespace, and checks that everything is gone after cleanup.
func TestPair(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var p *Pair
	t.Run("lab", func(t *testing.T) {
		p = NewPair(t, "nl")
		Must(t, p.Server.AddAddr(p.ServerIf, "10.231.0.1/24"))
		Must(t, p.Client.AddAddr(p.ClientIf, "10.231.0.2/24"))

		conn, err := p.Server.ListenPacket("udp4", "10.231.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		port := conn.LocalAddr().(*net.UDPAddr).Port

		// The address exists only in the server namespace: the socket was
		// bound there, not in the test's own namespace.
		if c, err := net.ListenPacket("udp4", "10.231.0.1:0"); err == nil {
			c.Close()
			t.Fatalf("binding 10.231.0.1 in the test's own namespace: got success, want an error")
		}

		// bash's /dev/udp sends one datagram from the client namespace.
		NeedTool(t, "bash")
		if _, err := p.Client.Run(ctx, "bash", "-c", "echo -n hello-netlab > /dev/udp/10.231.0.1/"+strconv.Itoa(port)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		Must(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if got, want := string(buf[:n]), "hello-netlab"; got != want {
			t.Errorf("datagram: got %q, want %q", got, want)
		}
		if got := from.(*net.UDPAddr).IP.String(); got != "10.231.0.2" {
			t.Errorf("sender: got %s, want 10.231.0.2", got)
		}

		// A bridge and a tap, enslaved, in the server namespace.
		br, tap := Name("br"), Name("tap")
		Must(t, p.Server.AddBridge(br))
		Must(t, p.Server.AddTap(tap))
		Must(t, p.Server.SetMaster(tap, br))
		out, err := p.Server.Run(ctx, "ip", "-o", "link", "show", "master", br)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, tap) {
			t.Errorf("bridge %s ports: got %q, want %s in it", br, out, tap)
		}
	})
	if p == nil {
		return // skipped before the lab was made
	}
	// The subtest's cleanups have run: both namespaces are gone.
	for _, n := range []*Netns{p.Server, p.Client} {
		if _, err := os.Stat(filepath.Join(netnsDir, n.Name)); !os.IsNotExist(err) {
			t.Errorf("netns %s after cleanup: got stat error %v, want not-exist", n.Name, err)
		}
	}
}

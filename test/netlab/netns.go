package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MaxNameLen is the longest interface name Linux accepts (IFNAMSIZ-1).
const MaxNameLen = 15

// suffixLen is the number of random hex digits Name appends.
const suffixLen = 6

// netnsDir is where `ip netns add` bind-mounts named namespaces.
const netnsDir = "/run/netns"

// cmdTimeout bounds one `ip` invocation, so a wedged command cannot hang a
// test; ip finishes in milliseconds.
const cmdTimeout = 30 * time.Second

// Name returns prefix followed by "-" and six random hex digits. The
// prefix is cut so the name fits MaxNameLen, which makes every Name usable
// as an interface name as well as a namespace name.
func Name(prefix string) string {
	var b [suffixLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on Linux; a constant suffix would
		// only risk a name clash, reported by ip.
		copy(b[:], "lab")
	}
	maxPrefix := MaxNameLen - suffixLen - 1
	if len(prefix) > maxPrefix {
		prefix = prefix[:maxPrefix]
	}
	return prefix + "-" + hex.EncodeToString(b[:])
}

// Netns is a named network namespace made by CreateNetns or NewNetns.
type Netns struct {
	// Name is the namespace's name, as `ip netns` knows it.
	Name string
}

// CreateNetns adds the namespace name and brings its loopback up. The
// caller deletes it with Delete.
func CreateNetns(name string) (*Netns, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		return nil, fmt.Errorf("netns name %q: want a non-empty name without slashes or spaces", name)
	}
	if out, err := ip(context.Background(), "netns", "add", name); err != nil {
		return nil, fmt.Errorf("add netns %s: %w: %s", name, err, out)
	}
	n := &Netns{Name: name}
	if err := n.SetUp("lo"); err != nil {
		return nil, errors.Join(err, n.Delete())
	}
	return n, nil
}

// Delete deletes the namespace and every interface in it. Processes still
// running in it keep it alive until they exit; a caller ends what it
// started first.
func (n *Netns) Delete() error {
	if out, err := ip(context.Background(), "netns", "del", n.Name); err != nil {
		return fmt.Errorf("delete netns %s: %w: %s", n.Name, err, out)
	}
	return nil
}

// Command returns a command that runs name with args inside the namespace
// (`ip netns exec NS name args...`). The process it starts is the command
// itself, since ip execs it, so killing cmd.Process ends the program.
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs the command args[0] with args[1:] inside the namespace and
// returns its combined output. A non-zero exit is an error that carries
// the output.
func (n *Netns) Run(ctx context.Context, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("run: no command")
	}
	out, err := n.Command(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("netns %s: %s: %w: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ipIn runs `ip -n NS args...`, bounded by cmdTimeout.
func (n *Netns) ipIn(args ...string) error {
	out, err := ip(context.Background(), append([]string{"-n", n.Name}, args...)...)
	if err != nil {
		return fmt.Errorf("netns %s: ip %s: %w: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return nil
}

// SetUp brings the interface dev up.
func (n *Netns) SetUp(dev string) error { return n.ipIn("link", "set", "dev", dev, "up") }

// SetMAC sets the hardware address of dev.
func (n *Netns) SetMAC(dev, mac string) error {
	return n.ipIn("link", "set", "dev", dev, "address", mac)
}

// AddAddr adds the address prefix (such as "10.0.0.1/24") to dev.
func (n *Netns) AddAddr(dev, prefix string) error {
	return n.ipIn("addr", "add", prefix, "dev", dev)
}

// FlushAddrs removes every IPv4 address of dev.
func (n *Netns) FlushAddrs(dev string) error {
	return n.ipIn("-4", "addr", "flush", "dev", dev)
}

// AddBridge adds a bridge without STP or forwarding delay, and brings it up.
func (n *Netns) AddBridge(name string) error {
	if err := checkIfName(name); err != nil {
		return err
	}
	if err := n.ipIn("link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0"); err != nil {
		return err
	}
	return n.SetUp(name)
}

// AddTap adds a persistent tap device (QEMU attaches with ifname=name) and
// brings it up.
func (n *Netns) AddTap(name string) error {
	if err := checkIfName(name); err != nil {
		return err
	}
	if err := n.ipIn("tuntap", "add", "dev", name, "mode", "tap"); err != nil {
		return err
	}
	return n.SetUp(name)
}

// SetMaster enslaves dev to bridge and brings dev up.
func (n *Netns) SetMaster(dev, bridge string) error {
	if err := n.ipIn("link", "set", "dev", dev, "master", bridge); err != nil {
		return err
	}
	return n.SetUp(dev)
}

// DisableIPv6 turns IPv6 off in the namespace, so that no router
// solicitation or duplicate address detection adds traffic to a test.
func (n *Netns) DisableIPv6() error {
	_, err := n.Run(context.Background(), "sysctl", "-qw",
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	return err
}

// AddVeth creates a veth pair with the end aName in a and the end bName in
// b, both down. The ends are created directly in their namespaces.
func AddVeth(a *Netns, aName string, b *Netns, bName string) error {
	if err := checkIfName(aName); err != nil {
		return err
	}
	if err := checkIfName(bName); err != nil {
		return err
	}
	out, err := ip(context.Background(), "link", "add", aName, "netns", a.Name, "type", "veth", "peer", "name", bName, "netns", b.Name)
	if err != nil {
		return fmt.Errorf("add veth %s@%s - %s@%s: %w: %s", aName, a.Name, bName, b.Name, err, out)
	}
	return nil
}

// Do runs fn on an OS thread switched into the namespace and returns its
// error. Sockets fn creates stay in the namespace for their whole life.
// fn must not rely on goroutines it starts being in the namespace.
func (n *Netns) Do(fn func() error) error {
	target, err := os.Open(filepath.Join(netnsDir, n.Name))
	if err != nil {
		return fmt.Errorf("open netns %s: %w", n.Name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	// A fresh goroutine, so the caller's thread is never switched and a
	// thread that cannot switch back dies with this goroutine.
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime terminates it when
			// this goroutine returns instead of reusing it.
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", n.Name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ListenPacket is net.ListenPacket inside the namespace.
func (n *Netns) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// Listen is net.Listen inside the namespace.
func (n *Netns) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

func checkIfName(name string) error {
	if name == "" || len(name) > MaxNameLen || strings.ContainsAny(name, "/ \t\n:") {
		return fmt.Errorf("interface name %q: want 1 to %d bytes without '/', ':' or spaces", name, MaxNameLen)
	}
	return nil
}

// ip runs iproute2's ip in the caller's namespace, bounded by cmdTimeout.
func ip(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

package netlab

import (
	"os"
	"os/exec"
	"testing"
)

// Require skips the test unless it runs as root with iproute2's ip
// available, or fails it when CI=true.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "network namespaces need root")
	}
	NeedTool(t, "ip")
}

// NeedTool returns the path of a program the test needs. A missing program
// skips the test, or fails it when CI=true (as gittest.NeedTool does).
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, name+" not found: "+err.Error())
	}
	return p
}

func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing (CI=true): %s", why)
	}
	t.Skipf("prerequisite missing: %s", why)
}

// Must fails the test when err is not nil.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// NewNetns calls Require, creates a namespace named Name(prefix) with IPv6
// off, and deletes it when the test ends.
func NewNetns(t testing.TB, prefix string) *Netns {
	t.Helper()
	Require(t)
	n, err := CreateNetns(Name(prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	Must(t, n.DisableIPv6())
	return n
}

// NewVeth creates a veth pair between a and b with unique names made from
// prefix, brings both ends up and returns their names. The pair goes away
// with either namespace.
func NewVeth(t testing.TB, a, b *Netns, prefix string) (aName, bName string) {
	t.Helper()
	aName, bName = Name(prefix), Name(prefix)
	Must(t, AddVeth(a, aName, b, bName))
	Must(t, a.SetUp(aName))
	Must(t, b.SetUp(bName))
	return aName, bName
}

// Pair is two namespaces joined by a veth pair, the smallest lab: a server
// side and a client side.
type Pair struct {
	Server, Client     *Netns
	ServerIf, ClientIf string
}

// NewPair creates a Pair; everything is deleted when the test ends. The
// interfaces are up and have no addresses.
func NewPair(t testing.TB, prefix string) *Pair {
	t.Helper()
	p := &Pair{Server: NewNetns(t, prefix+"s"), Client: NewNetns(t, prefix+"c")}
	p.ServerIf, p.ClientIf = NewVeth(t, p.Server, p.Client, prefix)
	return p
}

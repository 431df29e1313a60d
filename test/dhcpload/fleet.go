package dhcpload

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/gitmetal/gitmetal/schema"
)

// The synthetic fleet of the benchmark and the load tests: machine i has
// MAC 02:42:00:xx:xx:xx and address 10.200.(1 + i/250).(1 + i%250)/16, so
// up to 62,500 machines share 10.200.0.0/16 with the server (.0.1) and the
// generator (.0.2). Every interface has every option gitmetal serves.
const (
	// Network is the lab network of the fleet.
	Network = "10.200.0.0/16"
	// ServerAddr is the DHCP server's address in the lab.
	ServerAddr = "10.200.0.1"
	// RelayAddr is the generator's (relay's) address in the lab.
	RelayAddr = "10.200.0.2"
	// MaxMachines is the largest fleet that fits Network.
	MaxMachines = 62_500
)

// MAC returns the MAC of machine i.
func MAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x42, 0, byte(i >> 16), byte(i >> 8), byte(i)}
}

// Addr returns the reserved address of machine i.
func Addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 200, byte(1 + i/250), byte(1 + i%250)})
}

// Hostname returns the hostname of machine i.
func Hostname(i int) string { return fmt.Sprintf("node-%05d", i) }

// Fleet returns n machines with one fully configured interface each.
func Fleet(n int) (*schema.Fleet, error) {
	if n < 1 || n > MaxMachines {
		return nil, fmt.Errorf("fleet size %d: want 1 to %d", n, MaxMachines)
	}
	f := &schema.Fleet{
		Settings: &schema.Settings{LeaseTime: 86400, Domain: "bench.example"},
		Hardware: make(map[string]*schema.Hardware, n),
	}
	for i := range n {
		name := Hostname(i)
		f.Hardware[name] = &schema.Hardware{Name: name, Interfaces: []schema.Interface{{
			MAC:             MAC(i).String(),
			IP:              Addr(i).String() + "/16",
			Gateway:         ServerAddr,
			Nameservers:     []string{"10.200.0.53", "10.200.0.54"},
			Timeservers:     []string{"10.200.0.123"},
			Domain:          "bench.example",
			SearchDomains:   []string{"bench.example", "example"},
			Hostname:        name,
			LeaseTime:       3600,
			Arch:            "x86_64",
			UEFI:            true,
			ClasslessRoutes: []schema.Route{{Destination: "10.201.0.0/16", Router: "10.200.0.254"}},
			Netboot:         schema.Netboot{AllowPXE: true},
		}}}
	}
	return f, nil
}

// Clients returns the generator's clients for the first n machines;
// verify sets the address each must be offered.
func Clients(n int, verify bool) []Client {
	cs := make([]Client, n)
	for i := range cs {
		cs[i].MAC = MAC(i)
		if verify {
			cs[i].Want = Addr(i)
		}
	}
	return cs
}

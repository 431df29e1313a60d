// Package dhcp is gitmetal's DHCPv4 server: it answers the machines of the
// store with their reserved address and options (reservation mode), or
// hands PXE firmware boot information only, beside an existing DHCP server
// (proxy mode), and steers netboot clients into iPXE and then to their
// per-machine iPXE script over HTTP.
//
// Shape (smee's split, coredhcp's option chain):
//
//   - Server is the I/O: sockets on port 67 (and 4011 in proxy mode),
//     a bounded pool of workers that each read a batch of packets
//     (recvmmsg), parse each (parseInto: dhcpv4.FromBytes's result
//     without its copies, held to it by FuzzParse), hand it to the
//     Handler, and write the replies in one sendmmsg where RFC 2131 §4.1
//     says (replyDestination); a panic is recovered per packet, a reply
//     the kernel refuses is dropped alone; it counts requests by result,
//     replies sent and failures (WriteMetrics); Run returns when its
//     context ends. It holds no DHCP policy.
//     It is its own read loop rather than insomniacslk's server4, whose
//     Serve starts an unbounded goroutine per packet and allocates per
//     read; the bench (test/dhcpload/bench) measures both.
//   - Handler is the policy: a pure function of (request, Backend) that
//     looks the client's MAC up in the current store and builds the reply
//     from a fixed skeleton folded through an ordered, explicit list of
//     small option functions (see NewHandler). It does no I/O and reads
//     no clock; its one piece of state is the memo of each interface's
//     encoded options (memo.go), which cannot go stale, so golden-packet
//     tests and the fuzz test cover it completely.
//   - Backend is the data: the two lookups the handler needs and the
//     store's generation, satisfied by *store.Store. Every packet reads the
//     generation first, so a commit changes the next reply; the handler's
//     memo (memo.go) only reuses what it found at the same generation.
//
// What the package must not do: hand out an address that is not reserved
// in the repository (there is no pool and no lease database: reservations
// are static, so RELEASE and DECLINE are logged and change nothing), answer
// a MAC the store does not know (apart from proxy mode's ProxyUnknown,
// which gives any PXE client a discovery script and never an address),
// answer on an interface it was not given, or log every packet of an
// unknown client (one line per MAC per UnknownLogInterval).
//
// Netboot: a client is a netboot client when its vendor class (option 60)
// starts with PXEClient or HTTPClient, or its user class (option 77) is
// iPXE. Its architecture (option 93, or the Arch field of option 60) picks
// the iPXE binary: 0 (BIOS) → undionly.kpxe over TFTP; 6, 7, 9 (x86 UEFI)
// → ipxe.efi over TFTP; 11 (arm64 UEFI) → snp.efi over TFTP; 16 and 19
// (UEFI HTTP boot, x86-64 and arm64) → the HTTP URL of that binary, with
// option 60 "HTTPClient" echoed. A client that is already iPXE gets the
// HTTP URL of its iPXE script instead, which breaks the chainload loop,
// plus iPXE's encapsulated option 175.176 = 1 so it does not wait for
// ProxyDHCP offers. PXE clients get option 43 sub-option 6 = 8 (PXE
// discovery control: boot the file in this reply). Option 97 (client UUID)
// is echoed. allowPXE false means no boot file, no next-server and no
// netboot options. An interface's netboot.ipxe overrides win: binary
// replaces the per-architecture binary, url is the boot file of iPXE
// clients, script keeps the per-machine script URL (the HTTP side serves
// the inline script).
package dhcp

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/schema"
)

// Mode is what the server answers.
type Mode string

// The modes.
const (
	// ModeReservation answers known MACs with their reserved address, their
	// options and, for netboot clients, boot information.
	ModeReservation Mode = "reservation"
	// ModeProxy answers PXE clients with boot information only (no
	// address), beside another DHCP server, on ports 67 and 4011.
	ModeProxy Mode = "proxy"
	// ModeOff answers nothing: New opens no socket and Run returns at once.
	ModeOff Mode = "off"
)

// ParseMode returns the Mode called s, for flag parsing.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeReservation, ModeProxy, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("dhcp mode %q: want %s, %s or %s", s, ModeReservation, ModeProxy, ModeOff)
}

// Ports.
const (
	// ServerPort is the DHCP server port; relays also listen on it.
	ServerPort = 67
	// ClientPort is the DHCP client port.
	ClientPort = 68
	// PXEPort is the PXE boot server port proxy mode also answers on.
	PXEPort = 4011
)

// Backend is what the handler reads: the current store. *store.Store
// satisfies it. Both lookups return shared read-only values.
type Backend interface {
	// HardwareByMAC returns the machine with an interface whose MAC is
	// mac (lower-case colon form), or nil and no error when there is none.
	HardwareByMAC(ws memdb.WatchSet, mac string) (*schema.Hardware, error)
	// Settings returns the repository settings, never nil without an error.
	Settings(ws memdb.WatchSet) (*schema.Settings, error)
	// Generation returns a number that changes whenever what the lookups
	// return does, and is cheap to read: the handler reuses what it found
	// for a MAC while the generation stays the same (see memo.go). Lookups
	// made after reading it must see the store at that generation or later.
	Generation() uint64
}

// Binaries are the file names of the iPXE builds, as the TFTP server and
// HTTPBase+"/ipxe/bin/" serve them.
type Binaries struct {
	// BIOS is for architecture 0. Default "undionly.kpxe".
	BIOS string
	// EFI is for x86 UEFI (architectures 6, 7, 9 and HTTP boot 16).
	// Default "ipxe.efi".
	EFI string
	// ARM64 is for arm64 UEFI (architecture 11 and HTTP boot 19).
	// Default "snp.efi".
	ARM64 string
}

// Config configures a Server. The zero value of a field is its default.
type Config struct {
	// Mode is ModeReservation, ModeProxy or ModeOff. Required.
	Mode Mode
	// Interface is the network interface to serve. Sockets are bound to
	// it (SO_BINDTODEVICE), so broadcasts come in and go out there only.
	// Required unless Mode is ModeOff.
	Interface string
	// ListenAddr is the address the sockets bind to, with port 67 unless
	// a port is given. Default 0.0.0.0:67, which is what receives
	// broadcasts; a specific address only receives relayed (unicast)
	// requests. Proxy mode also binds port 4011 on the same address.
	ListenAddr netip.AddrPort
	// AdvertiseAddr is this server's address as clients and relays reach
	// it: the server identifier (option 54) and next-server (siaddr).
	// Required unless Mode is ModeOff.
	AdvertiseAddr netip.Addr
	// HTTPBase is the base URL of gitmetal's boot HTTP server, such as
	// "http://10.0.0.1:8080". The iPXE script of the machine with MAC m
	// is HTTPBase+"/ipxe/"+m+"/boot.ipxe", binaries for UEFI HTTP boot
	// are HTTPBase+"/ipxe/bin/"+name, and ProxyUnknown clients get
	// HTTPBase+DiscoveryScriptPath. Required unless Mode is ModeOff.
	HTTPBase string
	// Binaries names the iPXE builds; empty fields take their defaults.
	Binaries Binaries
	// ProxyUnknown, in proxy mode, answers PXE clients the store does not
	// know with boot information that leads to the discovery script. It
	// never gives them an address. Default false: unknown MACs get nothing.
	ProxyUnknown bool
	// Workers is how many goroutines serve each socket: each reads a
	// batch of packets, answers them and writes the replies. The handler
	// never waits, so more workers than processors only add switching.
	// Default GOMAXPROCS.
	Workers int
	// UnknownLogInterval is how often an unknown MAC is logged at most.
	// Default one minute.
	UnknownLogInterval time.Duration
	// Backend is the store the handler reads. Required unless Mode is
	// ModeOff.
	Backend Backend
	// Log is the logger; the server adds component=dhcp. Default: no logs.
	Log zerolog.Logger
}

// DiscoveryScriptPath is the path under HTTPBase of the iPXE script that
// proxy mode's ProxyUnknown gives machines the store does not know.
const DiscoveryScriptPath = "/ipxe/discover.ipxe"

// Defaults.
const (
	DefaultBIOSBinary         = "undionly.kpxe"
	DefaultEFIBinary          = "ipxe.efi"
	DefaultARM64Binary        = "snp.efi"
	DefaultUnknownLogInterval = time.Minute
	// maxWorkers bounds Workers, so a typo cannot start a million
	// goroutines.
	maxWorkers = 1024
)

// withDefaults validates c and returns it with its defaults filled in.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if _, err := ParseMode(string(c.Mode)); err != nil {
		errs = append(errs, err)
	}
	if c.Mode == ModeOff {
		return c, errors.Join(errs...)
	}
	if c.Interface == "" {
		errs = append(errs, errors.New("dhcp interface: required (DHCP is only served on an interface it is given)"))
	}
	if !c.ListenAddr.IsValid() {
		c.ListenAddr = netip.AddrPortFrom(netip.IPv4Unspecified(), ServerPort)
	} else if c.ListenAddr.Port() == 0 {
		c.ListenAddr = netip.AddrPortFrom(c.ListenAddr.Addr(), ServerPort)
	}
	if !c.ListenAddr.Addr().Is4() {
		errs = append(errs, fmt.Errorf("dhcp listen address %s: want an IPv4 address", c.ListenAddr))
	}
	if !c.AdvertiseAddr.Is4() || c.AdvertiseAddr.IsUnspecified() {
		errs = append(errs, fmt.Errorf("dhcp advertise address %q: want the server's IPv4 address as clients reach it", c.AdvertiseAddr))
	}
	if u, err := url.Parse(c.HTTPBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		errs = append(errs, fmt.Errorf("dhcp http base %q: want an http:// or https:// URL such as http://10.0.0.1:8080", c.HTTPBase))
	}
	c.HTTPBase = strings.TrimSuffix(c.HTTPBase, "/")
	if c.Binaries.BIOS == "" {
		c.Binaries.BIOS = DefaultBIOSBinary
	}
	if c.Binaries.EFI == "" {
		c.Binaries.EFI = DefaultEFIBinary
	}
	if c.Binaries.ARM64 == "" {
		c.Binaries.ARM64 = DefaultARM64Binary
	}
	for _, b := range []string{c.Binaries.BIOS, c.Binaries.EFI, c.Binaries.ARM64} {
		// The boot file field holds 127 bytes; names are plain file names.
		if len(b) > 100 || strings.ContainsAny(b, "/\\ \x00") {
			errs = append(errs, fmt.Errorf("dhcp binary name %q: want a plain file name of at most 100 bytes", b))
		}
	}
	switch {
	case c.Workers == 0:
		c.Workers = runtime.GOMAXPROCS(0)
	case c.Workers < 0 || c.Workers > maxWorkers:
		errs = append(errs, fmt.Errorf("dhcp workers %d: want 1 to %d", c.Workers, maxWorkers))
	}
	if c.UnknownLogInterval == 0 {
		c.UnknownLogInterval = DefaultUnknownLogInterval
	} else if c.UnknownLogInterval < 0 {
		errs = append(errs, fmt.Errorf("dhcp unknown log interval %s: want a positive duration", c.UnknownLogInterval))
	}
	if c.Backend == nil {
		errs = append(errs, errors.New("dhcp backend: required"))
	}
	if c.ProxyUnknown && c.Mode != ModeProxy {
		errs = append(errs, fmt.Errorf("dhcp proxy-unknown: only meaningful in %s mode, not %s", ModeProxy, c.Mode))
	}
	return c, errors.Join(errs...)
}

package tinkerbell

import (
	"net"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The Tinkerbell Hardware spec, as far as gitmetal has a place for it.
// Fields not declared here are reported as not imported.
type hwSpec struct {
	Interfaces []hwInterface `yaml:"interfaces"`
	Metadata   yaml.Node     `yaml:"metadata"`
	Disks      []hwDisk      `yaml:"disks"`
	UserData   *string       `yaml:"userData"`
	VendorData *string       `yaml:"vendorData"`
}

type hwDisk struct {
	Device string `yaml:"device"`
}

type hwInterface struct {
	DHCP        *hwDHCP    `yaml:"dhcp"`
	Netboot     *hwNetboot `yaml:"netboot"`
	DisableDHCP bool       `yaml:"disableDhcp"`
}

type hwDHCP struct {
	MAC                   string    `yaml:"mac"`
	Hostname              string    `yaml:"hostname"`
	DomainName            string    `yaml:"domain_name"`
	LeaseTime             int64     `yaml:"lease_time"`
	NameServers           []string  `yaml:"name_servers"`
	TimeServers           []string  `yaml:"time_servers"`
	Arch                  string    `yaml:"arch"`
	UEFI                  bool      `yaml:"uefi"`
	IP                    *hwIP     `yaml:"ip"`
	VLANID                string    `yaml:"vlan_id"`
	ClasslessStaticRoutes []hwRoute `yaml:"classless_static_routes"`
}

type hwIP struct {
	Address string `yaml:"address"`
	Netmask string `yaml:"netmask"`
	Gateway string `yaml:"gateway"`
	Family  int64  `yaml:"family"`
}

type hwRoute struct {
	DestinationDescriptor string `yaml:"destination_descriptor"`
	Router                string `yaml:"router"`
}

type hwNetboot struct {
	AllowPXE      *bool   `yaml:"allowPXE"`
	AllowWorkflow *bool   `yaml:"allowWorkflow"`
	IPXE          *hwIPXE `yaml:"ipxe"`
	OSIE          *hwOSIE `yaml:"osie"`
}

type hwIPXE struct {
	URL      string `yaml:"url"`
	Contents string `yaml:"contents"`
	Binary   string `yaml:"binary"`
}

type hwOSIE struct {
	BaseURL      string   `yaml:"baseURL"`
	Kernel       string   `yaml:"kernel"`
	Initrd       string   `yaml:"initrd"`
	KernelParams []string `yaml:"kernelParams"`
}

// The gitmetal hardware file. Field order is the order in the file.
type hwOut struct {
	Name       string            `json:"name"`
	Site       string            `json:"site,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Interfaces []ifaceOut        `json:"interfaces"`
	Disks      []hwDiskOut       `json:"disks,omitempty"`
	Metadata   map[string]any    `json:"metadata,omitempty"`
	UserData   string            `json:"userData,omitempty"`
	VendorData string            `json:"vendorData,omitempty"`
	SSHKeys    []string          `json:"sshKeys,omitempty"`
}

type hwDiskOut struct {
	Device string `json:"device"`
}

type ifaceOut struct {
	MAC             string      `json:"mac"`
	IP              string      `json:"ip,omitempty"`
	Gateway         string      `json:"gateway,omitempty"`
	Nameservers     []string    `json:"nameservers,omitempty"`
	Timeservers     []string    `json:"timeservers,omitempty"`
	Domain          string      `json:"domain,omitempty"`
	Hostname        string      `json:"hostname,omitempty"`
	LeaseTime       int64       `json:"leaseTime,omitempty"`
	VLAN            int         `json:"vlan,omitempty"`
	Arch            string      `json:"arch,omitempty"`
	UEFI            bool        `json:"uefi,omitempty"`
	ClasslessRoutes []routeOut  `json:"classlessRoutes,omitempty"`
	DisableDHCP     bool        `json:"disableDHCP,omitempty"`
	Netboot         *netbootOut `json:"netboot,omitempty"`
}

type routeOut struct {
	Destination string `json:"destination"`
	Router      string `json:"router"`
}

type netbootOut struct {
	// AllowPXE is always written: Tinkerbell's default is false, gitmetal's
	// true.
	AllowPXE  bool          `json:"allowPXE"`
	IPXE      *ipxeOut      `json:"ipxe,omitempty"`
	Installer *installerOut `json:"installer,omitempty"`
}

type ipxeOut struct {
	URL    string `json:"url,omitempty"`
	Script string `json:"script,omitempty"`
	Binary string `json:"binary,omitempty"`
}

type installerOut struct {
	Kernel string `json:"kernel,omitempty"`
	Initrd string `json:"initrd,omitempty"`
	Args   string `json:"args,omitempty"`
}

// The limits of gitmetal's schema (schema/cue/defs.cue) that a Tinkerbell
// value can break.
const (
	minLeaseTime = 60
	maxLeaseTime = 31536000
	maxHostname  = 253
)

var (
	hostnameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$`)
	labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_./]{0,61}[A-Za-z0-9])?$`)
	urlRE      = regexp.MustCompile(`^(https?|tftp)://[^ ]+$`)
	binaryRE   = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9_.]*$`)
	deviceRE   = regexp.MustCompile(`^/dev/[^ ]+$`)
	sshKeyRE   = regexp.MustCompile(`^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( .*)?$`)
)

// decode decodes the node at field into v and warns about every key v does
// not declare.
func (c *converter) decode(o *object, field string, n *yaml.Node, v any) error {
	if n == nil {
		return nil
	}
	if err := n.Decode(v); err != nil {
		line, yerr := splitYAMLError(err)
		return &Error{File: c.path, Line: line, Doc: o.doc, Object: o.label(), Field: o.prefix + field, Err: yerr}
	}
	unknownFields(n, reflect.TypeOf(v), field, func(line int, path string) {
		c.warnAt(line, o, path, "not imported: gitmetal has no equivalent")
	})
	return nil
}

func (c *converter) hardware(o *object, meta *yaml.Node) (outFile, error) {
	name, err := c.objectName(o)
	if err != nil {
		return outFile{}, err
	}
	var spec hwSpec
	if err := c.decode(o, "spec", lookup(o.root, "spec"), &spec); err != nil {
		return outFile{}, err
	}
	h := hwOut{Name: name, Site: c.site}

	if err := c.labels(o, meta, &h); err != nil {
		return outFile{}, err
	}
	hostnames := map[string]int{}
	macs := map[string]int{}
	pxe := false
	for n := range spec.Interfaces {
		in, ok, err := c.iface(o, n, &spec.Interfaces[n])
		if err != nil {
			return outFile{}, err
		}
		if !ok {
			continue
		}
		p := "spec.interfaces[" + strconv.Itoa(n) + "].dhcp"
		if prev, dup := macs[in.MAC]; dup {
			return outFile{}, c.errorf(o, p+".mac", "%s is also the MAC of spec.interfaces[%d]", in.MAC, prev)
		}
		macs[in.MAC] = n
		// gitmetal gives a hostname to one interface only: DHCP, DNS and
		// the metadata service find a machine by it.
		if in.Hostname != "" {
			if prev, dup := hostnames[in.Hostname]; dup {
				c.warnf(o, p+".hostname", "not imported: spec.interfaces[%d] has the same hostname, and a hostname names one interface in gitmetal", prev)
				in.Hostname = ""
			} else {
				hostnames[in.Hostname] = n
			}
		}
		pxe = pxe || in.Netboot.AllowPXE
		h.Interfaces = append(h.Interfaces, in)
	}
	if len(h.Interfaces) == 0 {
		return outFile{}, c.errorf(o, "spec.interfaces", "no interface with a dhcp.mac: gitmetal needs at least one")
	}
	if !pxe {
		c.warnf(o, "spec.interfaces", "no interface has netboot.allowPXE true (Tinkerbell's default is false), so gitmetal will never netboot this machine and its workflows cannot run; "+
			"gitmetal boots a machine into the installer only while it has a run pending, so allowPXE: true is safe to set")
	}

	for n, d := range spec.Disks {
		p := "spec.disks[" + strconv.Itoa(n) + "].device"
		switch {
		case d.Device == "":
			c.warnf(o, p, "not imported: empty")
		case !deviceRE.MatchString(d.Device):
			return outFile{}, c.errorf(o, p, "%q is not a device path (want /dev/...)", d.Device)
		default:
			h.Disks = append(h.Disks, hwDiskOut{Device: d.Device})
		}
	}

	if err := c.metadata(o, &spec, &h, hostnames); err != nil {
		return outFile{}, err
	}
	if spec.UserData != nil {
		h.UserData = *spec.UserData
	}
	if spec.VendorData != nil {
		h.VendorData = *spec.VendorData
	}

	dir := "imported"
	if c.site != "" {
		dir = c.site
	}
	return outFile{kind: "hardware", path: "hardware/" + dir + "/" + name + ".cue", value: h}, nil
}

// labels carries metadata.labels over as the machine's labels.
func (c *converter) labels(o *object, meta *yaml.Node, h *hwOut) error {
	n := lookup(meta, "labels")
	if n == nil {
		return nil
	}
	var labels map[string]string
	if err := n.Decode(&labels); err != nil {
		line, yerr := splitYAMLError(err)
		return &Error{File: c.path, Line: line, Doc: o.doc, Object: o.label(), Field: o.prefix + "metadata.labels", Err: yerr}
	}
	for k, v := range labels {
		if !labelKeyRE.MatchString(k) {
			c.warnf(o, "metadata.labels."+k, "not imported: gitmetal label keys are letters, digits, '-', '_', '.' and '/', at most 63 characters")
			continue
		}
		if h.Labels == nil {
			h.Labels = map[string]string{}
		}
		h.Labels[k] = v
	}
	return nil
}

// iface converts interface n; ok is false when it is skipped.
func (c *converter) iface(o *object, n int, in *hwInterface) (out ifaceOut, ok bool, err error) {
	p := "spec.interfaces[" + strconv.Itoa(n) + "]"
	d := in.DHCP
	if d == nil || d.MAC == "" {
		c.warnf(o, p, "not imported: no dhcp.mac, and gitmetal knows an interface by its MAC")
		return out, false, nil
	}
	p += ".dhcp"
	mac, err := net.ParseMAC(d.MAC)
	if err != nil || len(mac) != 6 {
		return out, false, c.errorf(o, p+".mac", "%q is not a MAC address (want 6 octets such as 52:54:00:12:34:56)", d.MAC)
	}
	out.MAC = mac.String() // lower-case, ':'-separated

	if ip := d.IP; ip != nil {
		if ip.Family != 0 && ip.Family != 4 {
			return out, false, c.errorf(o, p+".ip.family", "%d is not supported: gitmetal hands out IPv4 addresses only", ip.Family)
		}
		if ip.Address != "" {
			a, err := netip.ParseAddr(ip.Address)
			if err != nil || !a.Is4() {
				return out, false, c.errorf(o, p+".ip.address", "%q is not an IPv4 address", ip.Address)
			}
			if ip.Netmask == "" {
				return out, false, c.errorf(o, p+".ip.netmask", "required with ip.address: gitmetal needs the prefix length")
			}
			bits, ok := maskBits(ip.Netmask)
			if !ok {
				return out, false, c.errorf(o, p+".ip.netmask", "%q is not a contiguous IPv4 netmask such as 255.255.255.0", ip.Netmask)
			}
			out.IP = netip.PrefixFrom(a, bits).String()
		} else if ip.Netmask != "" {
			c.warnf(o, p+".ip.netmask", "not imported: there is no ip.address")
		}
		if ip.Gateway != "" {
			if !isIPv4(ip.Gateway) {
				return out, false, c.errorf(o, p+".ip.gateway", "%q is not an IPv4 address", ip.Gateway)
			}
			out.Gateway = ip.Gateway
		}
	}

	if d.Hostname != "" {
		out.Hostname = strings.ToLower(d.Hostname)
		if !isHostname(out.Hostname) {
			return out, false, c.errorf(o, p+".hostname", "%q is not a host name (RFC 1123: letters, digits and '-', labels separated by '.')", d.Hostname)
		}
	}
	if d.DomainName != "" {
		out.Domain = strings.ToLower(d.DomainName)
		if !isHostname(out.Domain) {
			return out, false, c.errorf(o, p+".domain_name", "%q is not a domain name", d.DomainName)
		}
	}
	// 0 is what Tinkerbell made of an omitted lease time; leaving it out
	// lets the repository's default apply.
	switch lt := d.LeaseTime; {
	case lt == 0:
	case lt < minLeaseTime || lt > maxLeaseTime:
		return out, false, c.errorf(o, p+".lease_time", "%d is out of range (want %d to %d seconds, or 0 for the repository's default)", lt, minLeaseTime, maxLeaseTime)
	default:
		out.LeaseTime = lt
	}
	for i, s := range d.NameServers {
		if !isIPv4(s) {
			return out, false, c.errorf(o, p+".name_servers["+strconv.Itoa(i)+"]", "%q is not an IPv4 address", s)
		}
		out.Nameservers = append(out.Nameservers, s)
	}
	for i, s := range d.TimeServers {
		if !isIPv4(s) {
			s = strings.ToLower(s)
			if !isHostname(s) {
				return out, false, c.errorf(o, p+".time_servers["+strconv.Itoa(i)+"]", "%q is neither an IPv4 address nor a host name", d.TimeServers[i])
			}
		}
		out.Timeservers = append(out.Timeservers, s)
	}
	switch d.Arch {
	case "":
	case "x86_64", "amd64":
		out.Arch = "x86_64"
	case "aarch64", "arm64":
		out.Arch = "aarch64"
	default:
		return out, false, c.errorf(o, p+".arch", "%q is not supported (want x86_64 or aarch64)", d.Arch)
	}
	out.UEFI = d.UEFI
	if v := strings.TrimSpace(d.VLANID); v != "" && v != "0" {
		id, err := strconv.Atoi(v)
		if err != nil || id < 1 || id > 4094 {
			return out, false, c.errorf(o, p+".vlan_id", "%q is not a VLAN ID (want one number from 1 to 4094)", d.VLANID)
		}
		out.VLAN = id
	}
	for i, r := range d.ClasslessStaticRoutes {
		rp := p + ".classless_static_routes[" + strconv.Itoa(i) + "]"
		if pfx, err := netip.ParsePrefix(r.DestinationDescriptor); err != nil || !pfx.Addr().Is4() {
			return out, false, c.errorf(o, rp+".destination_descriptor", "%q is not an IPv4 network such as 10.0.0.0/8", r.DestinationDescriptor)
		}
		if !isIPv4(r.Router) {
			return out, false, c.errorf(o, rp+".router", "%q is not an IPv4 address", r.Router)
		}
		out.ClasslessRoutes = append(out.ClasslessRoutes, routeOut{Destination: r.DestinationDescriptor, Router: r.Router})
	}
	out.DisableDHCP = in.DisableDHCP

	nb, err := c.netboot(o, "spec.interfaces["+strconv.Itoa(n)+"].netboot", in.Netboot)
	if err != nil {
		return out, false, err
	}
	out.Netboot = nb
	return out, true, nil
}

func (c *converter) netboot(o *object, p string, in *hwNetboot) (*netbootOut, error) {
	out := &netbootOut{}
	if in == nil {
		return out, nil
	}
	if in.AllowPXE != nil {
		out.AllowPXE = *in.AllowPXE
	}
	if in.AllowWorkflow != nil && !*in.AllowWorkflow {
		c.warnf(o, p+".allowWorkflow", "not imported: gitmetal runs a machine's workflows whenever it netboots; suspend a workflow to hold it")
	}
	if x := in.IPXE; x != nil && (x.URL != "" || x.Contents != "" || x.Binary != "") {
		ipxe := &ipxeOut{URL: x.URL, Script: x.Contents, Binary: x.Binary}
		if x.URL != "" && !urlRE.MatchString(x.URL) {
			return nil, c.errorf(o, p+".ipxe.url", "%q is not an http, https or tftp URL", x.URL)
		}
		if x.URL != "" && x.Contents != "" {
			// Smee chains to the URL when both are set.
			c.warnf(o, p+".ipxe.contents", "not imported: ipxe.url is set too, and wins, as in Tinkerbell")
			ipxe.Script = ""
		}
		if x.Binary != "" && !binaryRE.MatchString(x.Binary) {
			return nil, c.errorf(o, p+".ipxe.binary", "%q is not a file name", x.Binary)
		}
		out.IPXE = ipxe
	}
	if s := in.OSIE; s != nil {
		inst := &installerOut{Kernel: s.Kernel, Initrd: s.Initrd, Args: strings.Join(s.KernelParams, " ")}
		if s.BaseURL != "" {
			// Smee loads ${baseURL}/${kernel}.
			base := strings.TrimSuffix(s.BaseURL, "/")
			if inst.Kernel != "" && !strings.Contains(inst.Kernel, "://") {
				inst.Kernel = base + "/" + strings.TrimPrefix(inst.Kernel, "/")
			}
			if inst.Initrd != "" && !strings.Contains(inst.Initrd, "://") {
				inst.Initrd = base + "/" + strings.TrimPrefix(inst.Initrd, "/")
			}
			if s.Kernel == "" || s.Initrd == "" {
				c.warnf(o, p+".osie.baseURL", "not imported for the kernel or initrd it does not name: Tinkerbell's default file names under it are Hook's, and gitmetal uses its repository settings instead")
			}
		}
		if *inst != (installerOut{}) {
			out.Installer = inst
			c.warnf(o, p+".osie", "imported as netboot.installer, but it names Tinkerbell's installer (Hook): gitmetal boots its own kernel and agent initramfs, so check these values or remove them to use the repository's settings")
		}
	}
	return out, nil
}

// metadata copies spec.metadata as it is, takes metadata.instance.ssh_keys
// as the machine's sshKeys, and gives metadata.instance.hostname to the
// first interface when no interface has a hostname.
func (c *converter) metadata(o *object, spec *hwSpec, h *hwOut, hostnames map[string]int) error {
	n := &spec.Metadata
	if n.Kind == 0 || n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return c.errorf(o, "spec.metadata", "want a mapping")
	}
	v, err := toJSONValue(n)
	if err != nil {
		return c.wrap(o, "spec.metadata", err)
	}
	if m := v.(map[string]any); len(m) > 0 {
		h.Metadata = m
	}

	var md struct {
		Instance struct {
			Hostname string `yaml:"hostname"`
			SSHKeys  []any  `yaml:"ssh_keys"`
		} `yaml:"instance"`
	}
	if err := n.Decode(&md); err != nil {
		line, yerr := splitYAMLError(err)
		return &Error{File: c.path, Line: line, Doc: o.doc, Object: o.label(), Field: o.prefix + "spec.metadata.instance", Err: yerr}
	}
	seen := map[string]bool{}
	for i, k := range md.Instance.SSHKeys {
		p := "spec.metadata.instance.ssh_keys[" + strconv.Itoa(i) + "]"
		s, _ := k.(string)
		s = strings.TrimSpace(s)
		if !sshKeyRE.MatchString(s) {
			c.warnf(o, p, "not imported as an SSH key: not an OpenSSH public key (kept in metadata)")
			continue
		}
		if !seen[s] {
			seen[s] = true
			h.SSHKeys = append(h.SSHKeys, s)
		}
	}
	if hn := md.Instance.Hostname; hn != "" && len(hostnames) == 0 {
		lower := strings.ToLower(hn)
		if isHostname(lower) {
			h.Interfaces[0].Hostname = lower
		} else {
			c.warnf(o, "spec.metadata.instance.hostname", "not given to the first interface: %q is not a host name (kept in metadata)", hn)
		}
	}
	return nil
}

func isIPv4(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is4()
}

func isHostname(s string) bool {
	return len(s) <= maxHostname && hostnameRE.MatchString(s)
}

// maskBits returns the prefix length of a contiguous IPv4 netmask.
func maskBits(netmask string) (int, bool) {
	m, err := netip.ParseAddr(netmask)
	if err != nil || !m.Is4() {
		return 0, false
	}
	ones, bits := net.IPMask(m.AsSlice()).Size()
	return ones, bits != 0
}

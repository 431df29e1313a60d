package hegel

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/gitmetal/gitmetal/schema"
)

// node is what a path of the EC2 tree holds: a directory listing or a
// leaf's value.
type node struct {
	dir   bool
	items []string // a directory's entries; subdirectories end in '/'
	value string   // a leaf's value
}

func leaf(v string) (node, bool)          { return node{value: v}, true }
func listing(items []string) (node, bool) { return node{dir: true, items: items}, true }

// body is the node as EC2 writes it: one entry a line, no final newline.
func (n node) body() string {
	if n.dir {
		return strings.Join(n.items, "\n")
	}
	return n.value
}

// serveEC2 answers a GET in the EC2 tree: "/" lists the versions,
// /<version>/ lists what the version holds, meta-data/... is the metadata
// tree, user-data and vendor-data the machine's data (404 when empty, as
// EC2 answers for an instance without user data).
func (s *Server) serveEC2(w http.ResponseWriter, c caller, path string) {
	if path == "/" {
		s.ok(w, typeText, "2009-04-04\nlatest")
		return
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(path, "/latest"), "/2009-04-04")
	switch {
	case rest == "" || rest == "/":
		items := []string{"meta-data"}
		if c.hw.UserData != "" {
			items = append(items, "user-data")
		}
		if c.hw.VendorData != "" {
			items = append(items, "vendor-data")
		}
		s.ok(w, typeText, strings.Join(items, "\n"))
	case rest == "/user-data" && c.hw.UserData != "":
		s.ok(w, typeBinary, c.hw.UserData)
	case rest == "/vendor-data" && c.hw.VendorData != "":
		s.ok(w, typeBinary, c.hw.VendorData)
	case rest == "/meta-data" || strings.HasPrefix(rest, "/meta-data/"):
		n, found := metaData(c, strings.TrimPrefix(rest, "/meta-data"))
		if !found {
			s.metrics.count(resultNotFound)
			notFound(w)
			return
		}
		s.ok(w, typeText, n.body())
	default:
		s.metrics.count(resultNotFound)
		notFound(w)
	}
}

func (s *Server) ok(w http.ResponseWriter, ctype, body string) {
	s.metrics.count(resultOK)
	write(w, http.StatusOK, ctype, body)
}

// Names of the meta-data entries hegel makes itself. The free-form
// metadata fills the rest of meta-data/, but never replaces these.
const (
	mdInstanceID    = "instance-id"
	mdHostname      = "hostname"
	mdLocalHostname = "local-hostname"
	mdLocalIPv4     = "local-ipv4"
	mdPublicIPv4    = "public-ipv4"
	mdMAC           = "mac"
	mdNetwork       = "network"
	mdPublicKeys    = "public-keys"
	mdPlacement     = "placement"
	mdTags          = "tags"
)

func reserved(name string) bool {
	switch name {
	case mdInstanceID, mdHostname, mdLocalHostname, mdLocalIPv4, mdPublicIPv4, mdMAC,
		mdNetwork, mdPublicKeys, mdPlacement, mdTags:
		return true
	}
	return false
}

// metaData resolves rest, the path below meta-data ("" or "/..."). A
// directory is found with or without its trailing slash; a leaf only
// without one.
func metaData(c caller, rest string) (node, bool) {
	if rest == "" || rest == "/" {
		return listing(metaDataItems(c))
	}
	segs, trailing, ok := split(rest[1:])
	if !ok {
		return node{}, false
	}
	n, found := metaDataAt(c, segs)
	if !found || (trailing && !n.dir) {
		return node{}, false
	}
	return n, true
}

// split splits a relative path into its segments; trailing reports a
// final slash. Empty segments ("a//b") are not part of the tree.
func split(p string) (segs []string, trailing, ok bool) {
	if strings.HasSuffix(p, "/") {
		p, trailing = p[:len(p)-1], true
	}
	segs = strings.Split(p, "/")
	for _, s := range segs {
		if s == "" {
			return nil, false, false
		}
	}
	return segs, trailing, true
}

// metaDataItems lists meta-data/: hegel's entries that have a value, and
// the free-form metadata's top-level keys that do not collide with them.
func metaDataItems(c caller) []string {
	items := []string{mdHostname, mdInstanceID, mdLocalHostname, mdMAC, mdNetwork + "/"}
	if c.ifc.Addr() != "" {
		items = append(items, mdLocalIPv4)
	}
	if publicIPv4(c) != "" {
		items = append(items, mdPublicIPv4)
	}
	if len(c.hw.SSHKeys) > 0 {
		items = append(items, mdPublicKeys+"/")
	}
	if c.hw.Site != "" {
		items = append(items, mdPlacement+"/")
	}
	if len(tagKeys(c)) > 0 {
		items = append(items, mdTags+"/")
	}
	for _, it := range freeformItems(c.hw.Metadata) {
		if !reserved(strings.TrimSuffix(it, "/")) {
			items = append(items, it)
		}
	}
	slices.Sort(items)
	return items
}

func metaDataAt(c caller, segs []string) (node, bool) {
	head, tail := segs[0], segs[1:]
	if !reserved(head) {
		return freeform(c.hw.Metadata, segs)
	}
	if len(tail) > 0 {
		switch head {
		case mdNetwork:
			return networkAt(c, tail)
		case mdPublicKeys:
			return publicKeyAt(c, tail)
		case mdPlacement:
			if len(tail) == 1 && tail[0] == "availability-zone" && c.hw.Site != "" {
				return leaf(c.hw.Site)
			}
		case mdTags:
			return tagsAt(c, tail)
		}
		return node{}, false
	}
	switch head {
	case mdInstanceID:
		return leaf(instanceID(c.hw))
	case mdHostname, mdLocalHostname:
		return leaf(hostname(c))
	case mdLocalIPv4:
		if a := c.ifc.Addr(); a != "" {
			return leaf(a)
		}
	case mdPublicIPv4:
		if a := publicIPv4(c); a != "" {
			return leaf(a)
		}
	case mdMAC:
		return leaf(c.ifc.MAC)
	case mdNetwork:
		return listing([]string{"interfaces/"})
	case mdPublicKeys:
		if len(c.hw.SSHKeys) > 0 {
			items := make([]string, len(c.hw.SSHKeys))
			for i, k := range c.hw.SSHKeys {
				items[i] = strconv.Itoa(i) + "=" + keyName(k, i)
			}
			return listing(items)
		}
	case mdPlacement:
		if c.hw.Site != "" {
			return listing([]string{"availability-zone"})
		}
	case mdTags:
		if len(tagKeys(c)) > 0 {
			return listing([]string{"instance/"})
		}
	}
	return node{}, false
}

// networkAt resolves network/<tail>: interfaces/macs/<mac>/<field>, for
// every interface of the machine, keyed by MAC as EC2 does.
func networkAt(c caller, tail []string) (node, bool) {
	if tail[0] != "interfaces" {
		return node{}, false
	}
	switch len(tail) {
	case 1:
		return listing([]string{"macs/"})
	case 2:
		if tail[1] != "macs" {
			return node{}, false
		}
		items := make([]string, 0, len(c.hw.Interfaces))
		for i := range c.hw.Interfaces {
			items = append(items, c.hw.Interfaces[i].MAC+"/")
		}
		slices.Sort(items)
		return listing(items)
	}
	if tail[1] != "macs" || len(tail) > 4 {
		return node{}, false
	}
	for i := range c.hw.Interfaces {
		ifc := &c.hw.Interfaces[i]
		if ifc.MAC != tail[2] {
			continue
		}
		fields := interfaceFields(i, ifc)
		if len(tail) == 3 {
			items := make([]string, 0, len(fields))
			for k := range fields {
				items = append(items, k)
			}
			slices.Sort(items)
			return listing(items)
		}
		if v, ok := fields[tail[3]]; ok {
			return leaf(v)
		}
	}
	return node{}, false
}

// interfaceFields are the EC2 fields of network/interfaces/macs/<mac>/
// that a machine's interface has values for.
func interfaceFields(n int, ifc *schema.Interface) map[string]string {
	f := map[string]string{
		"device-number": strconv.Itoa(n),
		"mac":           ifc.MAC,
	}
	if ifc.Hostname != "" {
		f["local-hostname"] = fqdn(ifc.Hostname, ifc.Domain)
	}
	if p, ok := ifc.Prefix(); ok {
		f["local-ipv4s"] = p.Addr().String()
		f["subnet-ipv4-cidr-block"] = p.Masked().String()
		if p.Addr().Is6() {
			// EC2 keeps IPv6 addresses apart from the IPv4 ones.
			delete(f, "local-ipv4s")
			delete(f, "subnet-ipv4-cidr-block")
			f["ipv6s"] = p.Addr().String()
			f["subnet-ipv6-cidr-blocks"] = p.Masked().String()
		}
	}
	return f
}

// publicKeyAt resolves public-keys/<n>[/openssh-key].
func publicKeyAt(c caller, tail []string) (node, bool) {
	i, ok := index(tail[0], len(c.hw.SSHKeys))
	if !ok || len(tail) > 2 {
		return node{}, false
	}
	if len(tail) == 1 {
		return listing([]string{"openssh-key"})
	}
	if tail[1] != "openssh-key" {
		return node{}, false
	}
	return leaf(strings.TrimSpace(c.hw.SSHKeys[i]))
}

// keyName names SSH key i in the public-keys/ listing ("0=name"): its
// comment when it has a usable one, as EC2 lists the key pair's name.
func keyName(key string, i int) string {
	f := strings.Fields(key)
	if len(f) >= 3 && !strings.ContainsAny(f[2], "=/") {
		return f[2]
	}
	return "key-" + strconv.Itoa(i)
}

// tagsAt resolves tags/instance[/<key>] from the machine's labels.
func tagsAt(c caller, tail []string) (node, bool) {
	if tail[0] != "instance" || len(tail) > 2 {
		return node{}, false
	}
	keys := tagKeys(c)
	if len(keys) == 0 {
		return node{}, false
	}
	if len(tail) == 1 {
		return listing(keys)
	}
	if !segment(tail[1]) {
		return node{}, false
	}
	v, ok := c.hw.Labels[tail[1]]
	if !ok {
		return node{}, false
	}
	return leaf(v)
}

// tagKeys returns the label keys that can be path segments, sorted. EC2
// itself refuses instance tags with a '/' in the metadata tree.
func tagKeys(c caller) []string {
	if len(c.hw.Labels) == 0 {
		return nil
	}
	keys := make([]string, 0, len(c.hw.Labels))
	for k := range c.hw.Labels {
		if segment(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// segment reports whether name can be one path segment of the tree.
func segment(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00\n\r")
}

// index parses s as an index below n: decimal, no sign, no leading zero.
func index(s string, n int) (int, bool) {
	if s == "" || len(s) > 9 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	i := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, false
		}
		i = i*10 + int(r-'0')
	}
	return i, i < n
}

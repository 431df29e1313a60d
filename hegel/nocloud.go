package hegel

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/gitmetal/gitmetal/schema"
)

// serveNoCloud answers cloud-init's NoCloud seed files, for
// ds=nocloud;s=http://HOST:PORT/nocloud/. cloud-init reads meta-data,
// user-data and vendor-data and fails the seed when user-data is missing,
// so user-data and vendor-data are answered (empty) even when the machine
// has none; network-config is optional, and 404 when there is none.
func (s *Server) serveNoCloud(w http.ResponseWriter, c caller, path string) {
	switch path {
	case "/nocloud/meta-data":
		b, err := yaml.Marshal(noCloudMeta(c))
		if err != nil {
			s.fail(w, c, err, "encode nocloud meta-data")
			return
		}
		s.ok(w, typeText, string(b))
	case "/nocloud/user-data":
		s.ok(w, typeBinary, c.hw.UserData)
	case "/nocloud/vendor-data":
		s.ok(w, typeBinary, c.hw.VendorData)
	case "/nocloud/network-config":
		nc := networkConfig(c.hw)
		if nc == nil {
			s.metrics.count(resultNotFound)
			notFound(w)
			return
		}
		b, err := yaml.Marshal(nc)
		if err != nil {
			s.fail(w, c, err, "encode nocloud network-config")
			return
		}
		s.ok(w, typeText, string(b))
	default:
		s.metrics.count(resultNotFound)
		notFound(w)
	}
}

// fail answers 500 for an error of hegel's own, logging it.
func (s *Server) fail(w http.ResponseWriter, c caller, err error, msg string) {
	s.metrics.count(resultError)
	s.log.Error().Err(err).Str("hardware", c.hw.Name).Str("revision", c.rev.ID).Msg(msg)
	text(w, http.StatusInternalServerError, bodyInternal)
}

// noCloudMetaData is NoCloud's meta-data, with the keys cloud-init reads:
// instance-id (required), local-hostname, public-keys (a list of OpenSSH
// keys) and availability-zone.
type noCloudMetaData struct {
	InstanceID       string   `yaml:"instance-id"`
	LocalHostname    string   `yaml:"local-hostname"`
	AvailabilityZone string   `yaml:"availability-zone,omitempty"`
	PublicKeys       []string `yaml:"public-keys,omitempty"`
}

func noCloudMeta(c caller) noCloudMetaData {
	md := noCloudMetaData{
		InstanceID:       instanceID(c.hw),
		LocalHostname:    hostname(c),
		AvailabilityZone: c.hw.Site,
	}
	for _, k := range c.hw.SSHKeys {
		md.PublicKeys = append(md.PublicKeys, strings.TrimSpace(k))
	}
	return md
}

// networkConfig returns the machine's declared network configuration, or
// nil when it declares none: the metadata's "network-config" object as it
// is (the operator wrote a cloud-init network config), else, when an
// interface has DHCP disabled and an address, a version 2 config that
// gives those interfaces their addresses, gateways and DNS statically and
// runs DHCP on the others. A machine whose interfaces all use gitmetal's
// DHCP declares nothing: cloud-init's default (DHCP) is already right.
func networkConfig(h *schema.Hardware) any {
	if v, ok := lookup(h.Metadata, "network-config"); ok {
		if m, ok := v.(map[string]any); ok {
			return m
		}
	}
	static := false
	for i := range h.Interfaces {
		if h.Interfaces[i].DisableDHCP && h.Interfaces[i].IP != "" {
			static = true
		}
	}
	if !static {
		return nil
	}
	eths := make(map[string]v2Ethernet, len(h.Interfaces))
	for i := range h.Interfaces {
		ifc := &h.Interfaces[i]
		e := v2Ethernet{Match: v2Match{MACAddress: ifc.MAC}}
		p, ok := ifc.Prefix()
		if !ifc.DisableDHCP || !ok {
			if p.Addr().Is6() {
				e.DHCP6 = new(true)
			} else {
				e.DHCP4 = new(true)
			}
		} else {
			e.DHCP4 = new(false)
			e.Addresses = []string{p.String()}
			if gw, err := netip.ParseAddr(ifc.Gateway); err == nil {
				to := "0.0.0.0/0"
				if gw.Is6() {
					to = "::/0"
				}
				e.Routes = []v2Route{{To: to, Via: gw.String()}}
			}
			if len(ifc.Nameservers) > 0 || len(ifc.SearchDomains) > 0 {
				e.Nameservers = &v2Nameservers{Addresses: ifc.Nameservers, Search: ifc.SearchDomains}
			}
		}
		eths[fmt.Sprintf("nic%d", i)] = e
	}
	return v2Config{Version: 2, Ethernets: eths}
}

// The parts of a network config version 2 (netplan's format, which
// cloud-init documents as its v2) that hegel writes.
type (
	v2Config struct {
		Version   int                   `yaml:"version"`
		Ethernets map[string]v2Ethernet `yaml:"ethernets"`
	}
	v2Ethernet struct {
		Match       v2Match        `yaml:"match"`
		DHCP4       *bool          `yaml:"dhcp4,omitempty"`
		DHCP6       *bool          `yaml:"dhcp6,omitempty"`
		Addresses   []string       `yaml:"addresses,omitempty"`
		Routes      []v2Route      `yaml:"routes,omitempty"`
		Nameservers *v2Nameservers `yaml:"nameservers,omitempty"`
	}
	v2Match struct {
		MACAddress string `yaml:"macaddress"`
	}
	v2Route struct {
		To  string `yaml:"to"`
		Via string `yaml:"via"`
	}
	v2Nameservers struct {
		Addresses []string `yaml:"addresses,omitempty"`
		Search    []string `yaml:"search,omitempty"`
	}
)

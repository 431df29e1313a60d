package plan

import (
	"slices"

	"github.com/gitmetal/gitmetal/schema"
)

// The settings the loader applies to machines as defaults, by field name.
const (
	settingSite        = "site"
	settingLeaseTime   = "leaseTime"
	settingNameservers = "nameservers"
	settingTimeservers = "timeservers"
	settingDomain      = "domain"
)

// hardwareDiffer diffs two versions of one machine.
type hardwareDiffer struct {
	base, head *schema.Settings
	// settings are the settings changes; a machine field that moved from
	// the old setting's value to the new one is marked as inherited.
	settings []SettingChange
	// inherited collects the settings this machine inherited a change from.
	inherited []string
}

// diff fills m's field changes from old to cur; either may be nil.
func (d *hardwareDiffer) diff(old, cur *schema.Hardware, m *Machine) {
	// An added or removed machine has no settings to inherit a change from.
	both := old != nil && cur != nil
	if old == nil {
		old = &schema.Hardware{}
	}
	if cur == nil {
		cur = &schema.Hardware{}
	}
	var dhcp, netboot, meta changes

	olds, curs := interfacesByMAC(old.Interfaces), interfacesByMAC(cur.Interfaces)
	for _, mac := range unionKeys(olds, curs) {
		oi, ni := olds[mac], curs[mac]
		path := "interfaces[" + mac + "]"
		switch {
		case oi == nil:
			dhcp.add(path, nil, ni)
			continue
		case ni == nil:
			dhcp.add(path, oi, nil)
			continue
		}
		p := path + "."
		dhcp.add(p+"ip", oi.IP, ni.IP)
		dhcp.add(p+"gateway", oi.Gateway, ni.Gateway)
		d.inherit(&dhcp, both, settingNameservers, p+"nameservers", oi.Nameservers, ni.Nameservers)
		d.inherit(&dhcp, both, settingTimeservers, p+"timeservers", oi.Timeservers, ni.Timeservers)
		d.inherit(&dhcp, both, settingDomain, p+"domain", oi.Domain, ni.Domain)
		dhcp.add(p+"searchDomains", oi.SearchDomains, ni.SearchDomains)
		dhcp.add(p+"hostname", oi.Hostname, ni.Hostname)
		d.inherit(&dhcp, both, settingLeaseTime, p+"leaseTime", oi.LeaseTime, ni.LeaseTime)
		dhcp.add(p+"vlan", vlan(oi.VLAN), vlan(ni.VLAN))
		dhcp.add(p+"classlessRoutes", oi.ClasslessRoutes, ni.ClasslessRoutes)
		dhcp.add(p+"disableDHCP", oi.DisableDHCP, ni.DisableDHCP)

		netboot.add(p+"arch", oi.Arch, ni.Arch)
		netboot.add(p+"uefi", oi.UEFI, ni.UEFI)
		on, nn := &oi.Netboot, &ni.Netboot
		netboot.add(p+"netboot.allowPXE", on.AllowPXE, nn.AllowPXE)
		ox, nx := deref(on.IPXE), deref(nn.IPXE)
		netboot.add(p+"netboot.ipxe.url", ox.URL, nx.URL)
		netboot.add(p+"netboot.ipxe.script", ox.Script, nx.Script)
		netboot.add(p+"netboot.ipxe.binary", ox.Binary, nx.Binary)
		oinst, ninst := deref(on.Installer), deref(nn.Installer)
		netboot.add(p+"netboot.installer.kernel", oinst.Kernel, ninst.Kernel)
		netboot.add(p+"netboot.installer.initrd", oinst.Initrd, ninst.Initrd)
		netboot.add(p+"netboot.installer.args", oinst.Args, ninst.Args)
	}

	addMap(&meta, "metadata", old.Metadata, cur.Metadata)
	meta.add("userData", old.UserData, cur.UserData)
	meta.add("vendorData", old.VendorData, cur.VendorData)
	addKeys(&meta, old.SSHKeys, cur.SSHKeys)
	addMap(&meta, "labels", old.Labels, cur.Labels)
	d.inherit(&meta, both, settingSite, "site", old.Site, cur.Site)
	meta.add("disks", devices(old.Disks), devices(cur.Disks))
	meta.add("bmc", old.BMC, cur.BMC)

	m.DHCP, m.Netboot, m.Metadata = dhcp, netboot, meta
}

// inherit records a change of a field the loader defaults from a setting,
// marked FromSettings when the setting changed and the field followed it.
func (d *hardwareDiffer) inherit(c *changes, both bool, setting, path string, old, cur any) {
	n := len(*c)
	c.add(path, old, cur)
	if !both || len(*c) == n {
		return
	}
	for _, s := range d.settings {
		if s.Field != setting {
			continue
		}
		ob, hb := settingValue(d.base, setting), settingValue(d.head, setting)
		if value(old) == value(ob) && value(cur) == value(hb) {
			(*c)[n].FromSettings = true
			if !slices.Contains(d.inherited, setting) {
				d.inherited = append(d.inherited, setting)
			}
		}
	}
}

// settingValue returns the value a setting gives machines by default.
func settingValue(s *schema.Settings, field string) any {
	switch field {
	case settingSite:
		return s.Site
	case settingLeaseTime:
		return s.LeaseTime
	case settingNameservers:
		return s.Nameservers
	case settingTimeservers:
		return s.Timeservers
	case settingDomain:
		return s.Domain
	}
	return nil
}

// addKeys records SSH keys added and removed; the list is a set.
func addKeys(c *changes, old, cur []string) {
	for _, k := range old {
		if !slices.Contains(cur, k) {
			*c = append(*c, FieldChange{Field: "sshKeys", Old: sshKey(k)})
		}
	}
	for _, k := range cur {
		if !slices.Contains(old, k) {
			*c = append(*c, FieldChange{Field: "sshKeys", New: sshKey(k)})
		}
	}
}

func interfacesByMAC(is []schema.Interface) map[string]*schema.Interface {
	m := make(map[string]*schema.Interface, len(is))
	for n := range is {
		m[is[n].MAC] = &is[n]
	}
	return m
}

func devices(ds []schema.Disk) []string {
	out := make([]string, len(ds))
	for n, d := range ds {
		out[n] = d.Device
	}
	return out
}

// vlan returns the VLAN for display; 0 is no VLAN.
func vlan(v int) any {
	if v == 0 {
		return nil
	}
	return v
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

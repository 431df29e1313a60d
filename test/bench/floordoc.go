package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gitmetal/gitmetal/schema"
)

// The floor's documents and per-file rules: Go structs mirroring the closed
// CUE definitions of schema/cue, and the checks CUE makes on one file,
// written by hand.

// The patterns of schema/cue/defs.cue.
var (
	nameRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$`)
	macRE      = regexp.MustCompile(`^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$`)
	hostnameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$`)
	labelRE    = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_./]{0,61}[A-Za-z0-9])?$`)
	durationRE = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`)
	urlRE      = regexp.MustCompile(`^(https?|tftp)://[^ ]+$`)
	binaryRE   = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9_.]*$`)
	deviceRE   = regexp.MustCompile(`^/dev/[^ ]+$`)
	sshKeyRE   = regexp.MustCompile(`^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( .*)?$`)
	envNameRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	stepNameRE = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9_. ]{0,62}$`)
	ociRefRE   = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$`)
)

// The documents of the four kinds. Pointers mark fields whose absence
// means the default while an explicit zero is an error.
type (
	hardwareDoc struct {
		Name       string            `json:"name"`
		Site       *string           `json:"site,omitempty"`
		Labels     map[string]string `json:"labels,omitempty"`
		Interfaces []interfaceDoc    `json:"interfaces"`
		Disks      []diskDoc         `json:"disks,omitempty"`
		Metadata   map[string]any    `json:"metadata,omitempty"`
		UserData   string            `json:"userData,omitempty"`
		VendorData string            `json:"vendorData,omitempty"`
		SSHKeys    []string          `json:"sshKeys,omitempty"`
		BMC        *bmcDoc           `json:"bmc,omitempty"`
	}
	interfaceDoc struct {
		MAC             string     `json:"mac"`
		IP              *string    `json:"ip,omitempty"`
		Netmask         *string    `json:"netmask,omitempty"`
		Gateway         *string    `json:"gateway,omitempty"`
		Nameservers     []string   `json:"nameservers,omitempty"`
		Timeservers     []string   `json:"timeservers,omitempty"`
		Domain          *string    `json:"domain,omitempty"`
		SearchDomains   []string   `json:"searchDomains,omitempty"`
		Hostname        *string    `json:"hostname,omitempty"`
		LeaseTime       *int       `json:"leaseTime,omitempty"`
		VLAN            *int       `json:"vlan,omitempty"`
		Arch            *string    `json:"arch,omitempty"`
		UEFI            bool       `json:"uefi"`
		ClasslessRoutes []routeDoc `json:"classlessRoutes,omitempty"`
		DisableDHCP     bool       `json:"disableDHCP"`
		Netboot         netbootDoc `json:"netboot"`
	}
	routeDoc struct {
		Destination string `json:"destination"`
		Router      string `json:"router"`
	}
	netbootDoc struct {
		AllowPXE  *bool         `json:"allowPXE,omitempty"`
		IPXE      *ipxeDoc      `json:"ipxe,omitempty"`
		Installer *installerDoc `json:"installer,omitempty"`
	}
	ipxeDoc struct {
		URL    *string `json:"url,omitempty"`
		Script *string `json:"script,omitempty"`
		Binary *string `json:"binary,omitempty"`
	}
	installerDoc struct {
		Kernel *string `json:"kernel,omitempty"`
		Initrd *string `json:"initrd,omitempty"`
		Args   string  `json:"args,omitempty"`
	}
	diskDoc struct {
		Device string `json:"device"`
	}
	bmcDoc struct {
		Address      string  `json:"address"`
		Protocol     *string `json:"protocol,omitempty"`
		Username     string  `json:"username,omitempty"`
		PasswordFile string  `json:"passwordFile,omitempty"`
	}
	templateDoc struct {
		Name    string            `json:"name"`
		Timeout *durationDoc      `json:"timeout,omitempty"`
		Env     map[string]string `json:"env,omitempty"`
		Actions []actionDoc       `json:"actions"`
	}
	stepDoc struct {
		Name       string            `json:"name"`
		Uses       string            `json:"uses"`
		Env        map[string]string `json:"env,omitempty"`
		Args       []string          `json:"args,omitempty"`
		Timeout    *durationDoc      `json:"timeout,omitempty"`
		Retries    int               `json:"retries"`
		Background bool              `json:"background"`
	}
	actionDoc struct {
		stepDoc
		OnFailure []stepDoc `json:"onFailure,omitempty"`
	}
	workflowDoc struct {
		Name       string         `json:"name"`
		Hardware   string         `json:"hardware"`
		Template   string         `json:"template"`
		Values     map[string]any `json:"values,omitempty"`
		Policy     *string        `json:"policy,omitempty"`
		Generation int            `json:"generation"`
		Suspend    bool           `json:"suspend"`
	}
	settingsDoc struct {
		Site        *string       `json:"site,omitempty"`
		LeaseTime   *int          `json:"leaseTime,omitempty"`
		Nameservers []string      `json:"nameservers,omitempty"`
		Timeservers []string      `json:"timeservers,omitempty"`
		Domain      *string       `json:"domain,omitempty"`
		Installer   *installerDoc `json:"installer,omitempty"`
		Rollout     *struct {
			MaxInFlight int `json:"maxInFlight"`
		} `json:"rollout,omitempty"`
	}
)

// durationDoc is a duration as the schema allows it: whole seconds above
// zero, or a Go-like duration string.
type durationDoc struct{ raw json.RawMessage }

// UnmarshalJSON checks the duration's form.
func (d *durationDoc) UnmarshalJSON(b []byte) error {
	var secs int64
	if err := json.Unmarshal(b, &secs); err == nil {
		if secs <= 0 {
			return fmt.Errorf("duration %d: want seconds above 0", secs)
		}
		d.raw = slices.Clone(b)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil || !durationRE.MatchString(s) {
		return fmt.Errorf("duration %s: want seconds or a string such as \"10m\"", b)
	}
	d.raw = slices.Clone(b)
	return nil
}

// MarshalJSON writes the duration as it was read.
func (d durationDoc) MarshalJSON() ([]byte, error) { return d.raw, nil }

// issues collects the problems of one file.
type issues struct {
	path string
	list []string
}

// newIssues returns an empty collector for the file at path.
func newIssues(path string) *issues { return &issues{path: path} }

// add records a problem with field.
func (v *issues) add(field, msg string) {
	v.list = append(v.list, v.path+": "+field+": "+msg)
}

// check records msg unless ok; it returns ok.
func (v *issues) check(ok bool, field, msg string) bool {
	if !ok {
		v.add(field, msg)
	}
	return ok
}

// required checks that a required field is present.
func (v *issues) required(field string, present bool) bool {
	return v.check(present, field, "field is required")
}

// match checks s against re.
func (v *issues) match(re *regexp.Regexp, field, s string) bool {
	return v.check(re.MatchString(s), field, fmt.Sprintf("%q does not match %s", s, re))
}

// optMatch checks an optional string against re.
func (v *issues) optMatch(re *regexp.Regexp, field string, s *string) {
	if s != nil {
		v.match(re, field, *s)
	}
}

// between checks that n is in [lo, hi].
func (v *issues) between(field string, n, lo, hi int) {
	v.check(n >= lo && n <= hi, field, fmt.Sprintf("%d is out of range %d to %d", n, lo, hi))
}

// oneOf checks an optional enum.
func (v *issues) oneOf(field string, s *string, allowed ...string) {
	if s != nil {
		v.check(slices.Contains(allowed, *s), field, fmt.Sprintf("%q: allowed: %s", *s, strings.Join(allowed, ", ")))
	}
}

// ipv4 checks that s is a dotted-quad IPv4 address.
func (v *issues) ipv4(field, s string) bool {
	a, err := netip.ParseAddr(s)
	return v.check(err == nil && a.Is4(), field, fmt.Sprintf("%q is not an IPv4 address", s))
}

// hostname checks an RFC 1123 name.
func (v *issues) hostname(field, s string) {
	if v.check(utf8.RuneCountInString(s) <= 253, field, "longer than 253 characters") {
		v.match(hostnameRE, field, s)
	}
}

// ipv4OrHostname checks a timeserver.
func (v *issues) ipv4OrHostname(field, s string) {
	if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
		return
	}
	v.hostname(field, s)
}

// validateHardware checks a machine against #Hardware.
func validateHardware(v *issues, h *hardwareDoc) {
	v.match(nameRE, "hardware.name", h.Name)
	v.optMatch(nameRE, "hardware.site", h.Site)
	for k := range h.Labels {
		v.match(labelRE, "hardware.labels", k)
	}
	v.check(len(h.Interfaces) > 0, "hardware.interfaces", "at least one interface is required")
	for n := range h.Interfaces {
		validateInterface(v, "hardware.interfaces."+strconv.Itoa(n)+".", &h.Interfaces[n])
	}
	for n, d := range h.Disks {
		v.match(deviceRE, "hardware.disks."+strconv.Itoa(n)+".device", d.Device)
	}
	for n, k := range h.SSHKeys {
		v.match(sshKeyRE, "hardware.sshKeys."+strconv.Itoa(n), k)
	}
	if h.BMC != nil {
		v.check(h.BMC.Address != "", "hardware.bmc.address", "field is required")
		v.oneOf("hardware.bmc.protocol", h.BMC.Protocol, "ipmi", "redfish")
	}
}

// validateInterface checks a NIC against #Interface; at prefixes its fields.
func validateInterface(v *issues, at string, i *interfaceDoc) {
	v.match(macRE, at+"mac", i.MAC)
	validateIP(v, at, i)
	if i.Gateway != nil {
		v.ipv4(at+"gateway", *i.Gateway)
	}
	for n, s := range i.Nameservers {
		v.ipv4(at+"nameservers."+strconv.Itoa(n), s)
	}
	for n, s := range i.Timeservers {
		v.ipv4OrHostname(at+"timeservers."+strconv.Itoa(n), s)
	}
	if i.Domain != nil {
		v.hostname(at+"domain", *i.Domain)
	}
	for n, s := range i.SearchDomains {
		v.hostname(at+"searchDomains."+strconv.Itoa(n), s)
	}
	if i.Hostname != nil {
		v.hostname(at+"hostname", *i.Hostname)
	}
	if i.LeaseTime != nil {
		v.between(at+"leaseTime", *i.LeaseTime, 60, 31536000)
	}
	if i.VLAN != nil {
		v.between(at+"vlan", *i.VLAN, 1, 4094)
	}
	v.oneOf(at+"arch", i.Arch, "x86_64", "aarch64")
	for n, r := range i.ClasslessRoutes {
		p, err := netip.ParsePrefix(r.Destination)
		v.check(err == nil && p.Addr().Is4(), at+"classlessRoutes."+strconv.Itoa(n)+".destination", "not an IPv4 prefix")
		v.ipv4(at+"classlessRoutes."+strconv.Itoa(n)+".router", r.Router)
	}
	validateNetboot(v, at+"netboot.", &i.Netboot)
}

// validateIP checks the address: with a /prefix and no netmask, or bare
// with a netmask.
func validateIP(v *issues, at string, i *interfaceDoc) {
	if i.IP == nil {
		if i.Netmask != nil {
			validateNetmask(v, at+"netmask", *i.Netmask)
		}
		return
	}
	if strings.Contains(*i.IP, "/") {
		p, err := netip.ParsePrefix(*i.IP)
		v.check(err == nil && p.Addr().Is4(), at+"ip", fmt.Sprintf("%q is not an IPv4 address with a prefix", *i.IP))
		v.check(i.Netmask == nil, at+"netmask", "not allowed when ip has a /prefix")
		return
	}
	v.ipv4(at+"ip", *i.IP)
	if v.check(i.Netmask != nil, at+"netmask", "required when ip has no /prefix") {
		validateNetmask(v, at+"netmask", *i.Netmask)
	}
}

// validateNetmask checks a contiguous IPv4 netmask such as 255.255.255.0.
func validateNetmask(v *issues, field, s string) {
	a, err := netip.ParseAddr(s)
	ok := err == nil && a.Is4()
	if ok {
		b := a.As4()
		inv := ^(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
		ok = inv&(inv+1) == 0 // the host part is all ones from the right
	}
	v.check(ok, field, fmt.Sprintf("%q is not a contiguous IPv4 netmask", s))
}

// validateNetboot checks an interface's #Netboot.
func validateNetboot(v *issues, at string, nb *netbootDoc) {
	if x := nb.IPXE; x != nil {
		v.optMatch(urlRE, at+"ipxe.url", x.URL)
		v.check(x.URL == nil || x.Script == nil, at+"ipxe.script", "not allowed together with url")
		v.optMatch(binaryRE, at+"ipxe.binary", x.Binary)
	}
	validateInstaller(v, at+"installer.", nb.Installer)
}

// validateInstaller checks an optional #Installer.
func validateInstaller(v *issues, at string, in *installerDoc) {
	if in == nil {
		return
	}
	v.check(in.Kernel == nil || *in.Kernel != "", at+"kernel", "must not be empty")
	v.check(in.Initrd == nil || *in.Initrd != "", at+"initrd", "must not be empty")
}

// validateTemplate checks a template against #Template and its action uses.
func validateTemplate(v *issues, t *templateDoc) {
	v.match(nameRE, "template.name", t.Name)
	for k := range t.Env {
		v.match(envNameRE, "template.env", k)
	}
	v.check(len(t.Actions) > 0, "template.actions", "at least one action is required")
	for n, a := range t.Actions {
		at := "template.actions." + strconv.Itoa(n) + "."
		validateStep(v, at, &a.stepDoc)
		for m := range a.OnFailure {
			validateStep(v, at+"onFailure."+strconv.Itoa(m)+".", &a.OnFailure[m])
		}
	}
}

// validateStep checks an action or failure step against #Step.
func validateStep(v *issues, at string, s *stepDoc) {
	v.match(stepNameRE, at+"name", s.Name)
	v.check(schema.IsBuiltin(s.Uses) || ociRefRE.MatchString(s.Uses), at+"uses",
		fmt.Sprintf("unknown action %q: allowed: %s, or an OCI image reference", s.Uses, strings.Join(schema.Builtins[:], ", ")))
	for k := range s.Env {
		v.match(envNameRE, at+"env", k)
	}
	v.between(at+"retries", s.Retries, 0, 100)
}

// validateWorkflow checks a workflow against #Workflow.
func validateWorkflow(v *issues, w *workflowDoc) {
	v.match(nameRE, "workflow.name", w.Name)
	v.match(nameRE, "workflow.hardware", w.Hardware)
	v.match(nameRE, "workflow.template", w.Template)
	v.oneOf("workflow.policy", w.Policy, "onChange", "once", "manual")
	v.check(w.Generation >= 0, "workflow.generation", "must not be negative")
}

// validateSettings checks the repository settings against #Settings.
func validateSettings(v *issues, s *settingsDoc) {
	v.optMatch(nameRE, "settings.site", s.Site)
	if s.LeaseTime != nil {
		v.between("settings.leaseTime", *s.LeaseTime, 60, 31536000)
	}
	for n, a := range s.Nameservers {
		v.ipv4("settings.nameservers."+strconv.Itoa(n), a)
	}
	for n, a := range s.Timeservers {
		v.ipv4OrHostname("settings.timeservers."+strconv.Itoa(n), a)
	}
	if s.Domain != nil {
		v.hostname("settings.domain", *s.Domain)
	}
	validateInstaller(v, "settings.installer.", s.Installer)
	if s.Rollout != nil {
		v.check(s.Rollout.MaxInFlight >= 0, "settings.rollout.maxInFlight", "must not be negative")
	}
}

package schema

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Kind is the kind of object a repository file defines. A file's kind comes
// from where it lives: fleet/hardware/**, fleet/templates/**,
// fleet/workflows/** and the top-level gitmetal.cue.
type Kind uint8

// The kinds of repository file.
const (
	KindUnknown Kind = iota
	KindHardware
	KindTemplate
	KindWorkflow
	KindSettings
)

// String returns the kind's name as it appears as the top-level field of a file.
func (k Kind) String() string {
	switch k {
	case KindHardware:
		return "hardware"
	case KindTemplate:
		return "template"
	case KindWorkflow:
		return "workflow"
	case KindSettings:
		return "settings"
	}
	return "unknown"
}

// Position is a place in a repository file. Line and Column are 1-based;
// zero means unknown.
type Position struct {
	File   string `json:"file"`
	Line   int    `json:"line,omitempty"`
	Column int    `json:"column,omitempty"`
}

func (p Position) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.Column == 0:
		return p.File + ":" + strconv.Itoa(p.Line)
	}
	return p.File + ":" + strconv.Itoa(p.Line) + ":" + strconv.Itoa(p.Column)
}

// Source says where an object was defined: the repository path and the git
// blob hash of the file's content.
type Source struct {
	Path string `json:"path"`
	Blob string `json:"blob"`
	// fields holds the line and column of the fields the cross-file rules
	// report on (mac, ip, hostname, references), keyed by CUE path relative
	// to the object, e.g. "interfaces.0.mac" (CUE's dotted form).
	fields map[string]lineCol
}

type lineCol struct{ line, col int32 }

// Pos returns the position of the field at path (relative to the object,
// e.g. "interfaces.0.mac"), or of the file when the field's place is not
// recorded.
func (s Source) Pos(path string) Position {
	if lc, ok := s.fields[path]; ok {
		return Position{File: s.Path, Line: int(lc.line), Column: int(lc.col)}
	}
	return Position{File: s.Path}
}

// Hardware is one machine. Its meaning follows Tinkerbell's Hardware.
// Values returned by the loader and the store are shared and read-only.
type Hardware struct {
	Name       string            `json:"name"`
	Site       string            `json:"site,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Interfaces []Interface       `json:"interfaces"`
	Disks      []Disk            `json:"disks,omitempty"`
	Metadata   map[string]any    `json:"metadata,omitempty"`
	UserData   string            `json:"userData,omitempty"`
	VendorData string            `json:"vendorData,omitempty"`
	SSHKeys    []string          `json:"sshKeys,omitempty"`
	BMC        *BMC              `json:"bmc,omitempty"`

	Source Source `json:"-"`
}

func (h *Hardware) source() Source { return h.Source }

// Interface is one NIC of a machine and what DHCP and netboot give it.
type Interface struct {
	// MAC is normalised to lower-case colon form.
	MAC string `json:"mac"`
	// IP is normalised to address/prefix form (a netmask in the file is
	// folded into the prefix); empty when the interface has no reservation.
	IP string `json:"ip,omitempty"`
	// Netmask is folded into IP by the loader and always empty after.
	Netmask         string   `json:"netmask,omitempty"`
	Gateway         string   `json:"gateway,omitempty"`
	Nameservers     []string `json:"nameservers,omitempty"`
	Timeservers     []string `json:"timeservers,omitempty"`
	Domain          string   `json:"domain,omitempty"`
	SearchDomains   []string `json:"searchDomains,omitempty"`
	Hostname        string   `json:"hostname,omitempty"`
	LeaseTime       int      `json:"leaseTime,omitempty"`
	VLAN            int      `json:"vlan,omitempty"`
	Arch            string   `json:"arch"`
	UEFI            bool     `json:"uefi"`
	ClasslessRoutes []Route  `json:"classlessRoutes,omitempty"`
	DisableDHCP     bool     `json:"disableDHCP"`
	Netboot         Netboot  `json:"netboot"`
}

// Prefix returns the interface's address and prefix; ok is false when the
// interface has no address.
func (i *Interface) Prefix() (p netip.Prefix, ok bool) {
	if i.IP == "" {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(i.IP)
	return p, err == nil
}

// Addr returns the interface's address without the prefix, or "".
func (i *Interface) Addr() string {
	if p, ok := i.Prefix(); ok {
		return p.Addr().String()
	}
	return ""
}

// Route is a classless static route (DHCP option 121).
type Route struct {
	Destination string `json:"destination"`
	Router      string `json:"router"`
}

// Netboot says whether and how an interface network-boots.
type Netboot struct {
	AllowPXE  bool       `json:"allowPXE"`
	IPXE      *IPXE      `json:"ipxe,omitempty"`
	Installer *Installer `json:"installer,omitempty"`
}

// IPXE overrides gitmetal's iPXE choices for one interface.
type IPXE struct {
	URL    string `json:"url,omitempty"`
	Script string `json:"script,omitempty"`
	Binary string `json:"binary,omitempty"`
}

// Installer names the kernel, initrd and extra kernel arguments of the
// installer environment; empty fields fall back to the repository settings.
type Installer struct {
	Kernel string `json:"kernel,omitempty"`
	Initrd string `json:"initrd,omitempty"`
	Args   string `json:"args,omitempty"`
}

// Disk is a disk of a machine, preferably by a stable name.
type Disk struct {
	Device string `json:"device"`
}

// BMC is reserved for power control.
type BMC struct {
	Address      string `json:"address"`
	Protocol     string `json:"protocol"`
	Username     string `json:"username,omitempty"`
	PasswordFile string `json:"passwordFile,omitempty"`
}

// Template is a workflow template: an ordered list of actions. Its strings
// are Go text/template text rendered per workflow.
type Template struct {
	Name    string            `json:"name"`
	Timeout Duration          `json:"timeout,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Actions []Action          `json:"actions"`

	Source Source `json:"-"`
}

func (t *Template) source() Source { return t.Source }

// Step is one action without failure handlers.
type Step struct {
	Name       string            `json:"name"`
	Uses       string            `json:"uses"`
	Env        map[string]string `json:"env,omitempty"`
	Args       []string          `json:"args,omitempty"`
	Timeout    Duration          `json:"timeout,omitempty"`
	Retries    int               `json:"retries"`
	Background bool              `json:"background"`
}

// Action is a step of a template; OnFailure steps run when it fails.
type Action struct {
	Step
	OnFailure []Step `json:"onFailure,omitempty"`
}

// Workflow binds a template to a machine with values.
type Workflow struct {
	Name       string         `json:"name"`
	Hardware   string         `json:"hardware"`
	Template   string         `json:"template"`
	Values     map[string]any `json:"values,omitempty"`
	Policy     Policy         `json:"policy"`
	Generation int            `json:"generation"`
	Suspend    bool           `json:"suspend"`

	Source Source `json:"-"`
}

func (w *Workflow) source() Source { return w.Source }

// Policy says when a workflow runs again.
type Policy string

// The workflow policies.
const (
	// PolicyOnChange: a run starts when the rendered workflow differs from
	// the last successful run's.
	PolicyOnChange Policy = "onChange"
	// PolicyOnce: never run again after a success.
	PolicyOnce Policy = "once"
	// PolicyManual: run only when the generation is bumped.
	PolicyManual Policy = "manual"
)

// Settings are the repository-wide defaults from gitmetal.cue.
type Settings struct {
	Site        string     `json:"site,omitempty"`
	LeaseTime   int        `json:"leaseTime"`
	Nameservers []string   `json:"nameservers,omitempty"`
	Timeservers []string   `json:"timeservers,omitempty"`
	Domain      string     `json:"domain,omitempty"`
	Installer   *Installer `json:"installer,omitempty"`
	Rollout     Rollout    `json:"rollout"`

	Source Source `json:"-"`
}

// Rollout limits how many machines provision at once.
type Rollout struct {
	// MaxInFlight is the most machines with a running workflow; 0 is no limit.
	MaxInFlight int `json:"maxInFlight"`
}

// DefaultLeaseTime is the lease time in seconds when neither the interface
// nor the repository settings give one.
const DefaultLeaseTime = 86400

// DefaultSettings returns the settings of a repository without gitmetal.cue.
func DefaultSettings() *Settings {
	return &Settings{LeaseTime: DefaultLeaseTime}
}

// Duration is a length of time written as whole seconds (Tinkerbell's form)
// or as a Go duration string ("10m").
type Duration time.Duration

// UnmarshalJSON accepts a number of seconds or a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var secs int64
	if err := json.Unmarshal(b, &secs); err == nil {
		*d = Duration(time.Duration(secs) * time.Second)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want seconds or a string such as \"10m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

package pid1

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Settings are what the installer reads from the kernel command line,
// which the boot service's iPXE script writes:
//
//	gitmetal.server=URL    the runner's base URL (required)
//	gitmetal.token=TOKEN   this boot's agent token (required)
//	gitmetal.mac=MAC       the NIC the machine booted from
//	BOOTIF=01-aa-bb-...    the same in PXELINUX's form, when gitmetal.mac is absent
//	gitmetal.debug=1       debug logs, and a shell on the consoles when /bin/sh exists
type Settings struct {
	Server string
	Token  string
	// MAC is the boot NIC's address in lower-case colon form, or "" when
	// the command line names none (then every NIC is tried).
	MAC   string
	Debug bool
}

// ParseCmdline reads Settings from a kernel command line. Values may be
// double-quoted, as the kernel allows. The error says what is missing or
// malformed; the Settings returned with it hold whatever was valid.
func ParseCmdline(cmdline string) (Settings, error) {
	var s Settings
	var errs []error
	var bootif string
	for _, arg := range splitCmdline(cmdline) {
		k, v, _ := strings.Cut(arg, "=")
		switch k {
		case "gitmetal.server":
			s.Server = v
		case "gitmetal.token":
			s.Token = v
		case "gitmetal.mac":
			mac, err := net.ParseMAC(v)
			if err != nil || len(mac) != 6 {
				errs = append(errs, fmt.Errorf("gitmetal.mac=%q: want a MAC address such as 52:54:00:12:34:56", v))
				continue
			}
			s.MAC = mac.String()
		case "BOOTIF":
			bootif = v
		case "gitmetal.debug":
			s.Debug = v == "" || v == "1" || v == "true" || v == "yes"
		}
	}
	if s.MAC == "" && bootif != "" {
		// PXELINUX's form: the ARP hardware type (01, Ethernet) and the
		// address with dashes.
		mac, err := net.ParseMAC(strings.ReplaceAll(strings.TrimPrefix(bootif, "01-"), "-", ":"))
		if err != nil || len(mac) != 6 || !strings.HasPrefix(bootif, "01-") {
			errs = append(errs, fmt.Errorf("BOOTIF=%q: want 01-aa-bb-cc-dd-ee-ff", bootif))
		} else {
			s.MAC = mac.String()
		}
	}
	if s.Server == "" {
		errs = append(errs, errors.New("no gitmetal.server= on the kernel command line"))
	} else if u, err := url.Parse(s.Server); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("gitmetal.server=%q: want an http:// or https:// URL", s.Server))
		s.Server = ""
	}
	if s.Token == "" {
		errs = append(errs, errors.New("no gitmetal.token= on the kernel command line"))
	}
	return s, errors.Join(errs...)
}

// splitCmdline splits at white space outside double quotes and removes
// the quotes, as the kernel's own parser does.
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

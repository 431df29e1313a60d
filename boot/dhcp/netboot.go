package dhcp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Vendor classes (option 60) of netboot clients, and the user class
// (option 77) iPXE sends.
const (
	vendorPXE  = "PXEClient"
	vendorHTTP = "HTTPClient"
	userIPXE   = "iPXE"
)

// Netboot options that dhcpv4 has no constants for.
const (
	// optionIPXEEncap is iPXE's encapsulated option space (175).
	optionIPXEEncap = 175
	// ipxeNoPXEDHCP is iPXE's sub-option 176 "no-pxedhcp": 1 makes
	// iPXE skip its ~2 s wait for ProxyDHCP offers.
	ipxeNoPXEDHCP = 176
	// pxeDiscoveryControl is PXE sub-option 6 of option 43; value 8
	// means "boot the file named in this reply, no boot server
	// discovery" (PXE 2.1 spec, table 2-1).
	pxeDiscoveryControl = 6
	// maxFileField is the longest boot file the BOOTP file field holds;
	// a longer URL goes into option 67.
	maxFileField = 127
)

// boot is the boot information a netboot client gets; the zero value is
// none.
type boot struct {
	// file is a TFTP file name or an HTTP URL.
	file string
	// vendorClass is echoed in option 60: PXEClient or HTTPClient.
	vendorClass string
	// ipxe: the client is iPXE; it gets option 175.176.
	ipxe bool
}

// isNetbootClient reports whether req comes from PXE or UEFI HTTP boot
// firmware, or from iPXE.
func isNetbootClient(req *dhcpv4.DHCPv4) bool {
	vc := req.Options.Get(dhcpv4.OptionClassIdentifier)
	return bytes.HasPrefix(vc, []byte(vendorPXE)) || bytes.HasPrefix(vc, []byte(vendorHTTP)) || isIPXE(req)
}

// isIPXE reports whether the user class (77) says iPXE, in RFC 3004 form
// or as the raw string iPXE sends.
func isIPXE(req *dhcpv4.DHCPv4) bool {
	raw := req.Options.Get(dhcpv4.OptionUserClassInformation)
	if raw == nil {
		return false
	}
	if string(raw) == userIPXE {
		return true
	}
	for _, uc := range req.UserClass() {
		if uc == userIPXE {
			return true
		}
	}
	return false
}

// clientArch returns the client's architecture from option 93, or else
// from the "Arch:NNNNN" field of a PXEClient/HTTPClient vendor class.
func clientArch(req *dhcpv4.DHCPv4) (iana.Arch, bool) {
	// Option 93 is a list of 16-bit types (RFC 4578 §2.1); the first counts.
	if v := req.Options.Get(dhcpv4.OptionClientSystemArchitectureType); len(v) >= 2 && len(v)%2 == 0 {
		return iana.Arch(binary.BigEndian.Uint16(v)), true
	}
	// PXEClient:Arch:00000:UNDI:002001
	f := strings.Split(req.ClassIdentifier(), ":")
	if len(f) >= 3 && f[1] == "Arch" {
		if n, err := strconv.ParseUint(f[2], 10, 16); err == nil {
			return iana.Arch(n), true
		}
	}
	return 0, false
}

// decideBoot returns the boot information for r, or the zero boot and why
// there is none (empty when r is simply not a netboot client).
func (h *Handler) decideBoot(r *request) (boot, string) {
	if !isNetbootClient(r.req) {
		return boot{}, ""
	}
	if r.iface != nil && !r.iface.Netboot.AllowPXE {
		return boot{}, "allowPXE is false"
	}
	vc := vendorPXE
	if bytes.HasPrefix(r.req.Options.Get(dhcpv4.OptionClassIdentifier), []byte(vendorHTTP)) {
		vc = vendorHTTP
	}
	// An inline script override (netboot.ipxe.script) needs nothing here:
	// the HTTP side serves it at the machine's script URL.
	var url, binary string
	if r.iface != nil && r.iface.Netboot.IPXE != nil {
		url, binary = r.iface.Netboot.IPXE.URL, r.iface.Netboot.IPXE.Binary
	}

	if isIPXE(r.req) {
		b := boot{vendorClass: vc, ipxe: true}
		switch {
		case r.iface == nil:
			b.file = h.httpBase + DiscoveryScriptPath
		case url != "":
			b.file = url
		default:
			b.file = h.httpBase + "/ipxe/" + r.mac + "/boot.ipxe"
		}
		return b, ""
	}

	arch, ok := clientArch(r.req)
	if !ok {
		return boot{}, "no client architecture (option 93)"
	}
	http := vc == vendorHTTP
	if binary == "" {
		switch arch {
		case iana.INTEL_X86PC:
			binary = h.bin.BIOS
		case iana.EFI_IA32, iana.EFI_X86_64, iana.EFI_BC:
			binary = h.bin.EFI
		case iana.EFI_ARM64:
			binary = h.bin.ARM64
		case iana.EFI_X86_64_HTTP:
			binary, http = h.bin.EFI, true
		case iana.EFI_ARM64_HTTP:
			binary, http = h.bin.ARM64, true
		default:
			return boot{}, fmt.Sprintf("no iPXE binary for client architecture %d (%s)", uint16(arch), arch)
		}
	} else if arch == iana.EFI_X86_64_HTTP || arch == iana.EFI_ARM64_HTTP {
		http = true
	}
	if http {
		// UEFI HTTP boot: the firmware wants an URL and takes the offer
		// only with option 60 HTTPClient.
		return boot{file: h.httpBase + "/ipxe/bin/" + binary, vendorClass: vendorHTTP}, ""
	}
	return boot{file: binary, vendorClass: vendorPXE}, ""
}

// netboot adds the boot information r.boot holds: next-server (siaddr),
// the boot file (the file field, or option 67 when it is too long), the
// vendor class echo (60), PXE discovery control (43), the client UUID
// echo (97) and, for iPXE, 175.176 = 1.
func (h *Handler) netboot(r *request, resp *Reply) {
	b := r.boot
	if b.file == "" {
		return
	}
	resp.Siaddr = h.serverID
	if len(b.file) <= maxFileField {
		resp.File = b.file
	} else {
		resp.add(dhcpv4.OptionBootfileName.Code(), []byte(b.file))
	}
	resp.add(dhcpv4.OptionClassIdentifier.Code(), []byte(b.vendorClass))
	if b.vendorClass == vendorPXE {
		resp.add(dhcpv4.OptionVendorSpecificInformation.Code(), []byte{pxeDiscoveryControl, 1, 8, 255})
	}
	if uuid := r.req.Options.Get(dhcpv4.OptionClientMachineIdentifier); uuid != nil {
		resp.add(dhcpv4.OptionClientMachineIdentifier.Code(), uuid)
	}
	if b.ipxe {
		resp.add(optionIPXEEncap, []byte{ipxeNoPXEDHCP, 1, 1})
	}
}

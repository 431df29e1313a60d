package pid1

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// settleDisks waits until the block devices in dir (/sys/block) have not
// changed for quiet, or until limit, and returns their names (without
// loop and ram devices). Disk drivers
// such as ahci and virtio_scsi scan their buses asynchronously after the
// module loads; without udev there is no event to wait for, so the agent's
// inventory would otherwise race the scan. It polls every 100 ms.
func settleDisks(dir string, quiet, limit time.Duration) []string {
	deadline := time.Now().Add(limit)
	list := func() []string {
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			if n := e.Name(); !strings.HasPrefix(n, "loop") && !strings.HasPrefix(n, "ram") {
				names = append(names, n)
			}
		}
		return names
	}
	last := list()
	stable := time.Now()
	for time.Now().Before(deadline) && time.Since(stable) < quiet {
		time.Sleep(100 * time.Millisecond)
		if cur := list(); !slices.Equal(cur, last) {
			last, stable = cur, time.Now()
		}
	}
	return last
}

// linkDisks makes the /dev/disk/by-id links that udev would make for
// the disks whose stable names sysfs alone gives (there is no udev in the
// installer): virtio-<serial> for virtio disks with a serial, and
// nvme-<model>_<serial> and nvme-<wwid> for NVMe namespaces, spelled as
// udev's 60-persistent-storage rules spell them. SCSI and SATA names
// need the disk's own identify data (udev's ata_id and scsi_id) and are
// not made; templates can use the kernel name, or the serial the
// inventory reports. It returns the links made.
func linkDisks(sysBlock, byID string, disks []string) []string {
	var made []string
	link := func(name, disk string) {
		name = udevEscape(name)
		if name == "" {
			return
		}
		if err := os.MkdirAll(byID, 0o755); err != nil {
			return
		}
		p := filepath.Join(byID, name)
		os.Remove(p)
		if os.Symlink("../../"+disk, p) == nil {
			made = append(made, p)
		}
	}
	read := func(disk, attr string) string {
		b, _ := os.ReadFile(filepath.Join(sysBlock, disk, attr))
		return strings.TrimSpace(string(b))
	}
	for _, d := range disks {
		switch {
		case strings.HasPrefix(d, "vd"):
			if s := read(d, "serial"); s != "" {
				link("virtio-"+s, d)
			}
		case strings.HasPrefix(d, "nvme"):
			model, serial := read(d, "device/model"), read(d, "device/serial")
			if model != "" && serial != "" {
				link("nvme-"+model+"_"+serial, d)
			}
			if w := read(d, "wwid"); w != "" {
				link("nvme-"+w, d)
			}
		}
	}
	return made
}

// udevEscape makes a string a link name the way udev does: white space
// becomes "_", and characters outside udev's plain set are dropped (udev
// hex-escapes them; such serials are rare, and a missing link is better
// than a wrong one).
func udevEscape(s string) string {
	var b strings.Builder
	for _, r := range strings.TrimSpace(s) {
		switch {
		case r == ' ' || r == '\t':
			b.WriteByte('_')
		case r >= '0' && r <= '9', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', strings.ContainsRune("#+-.:=@_", r):
			b.WriteRune(r)
		default:
			return ""
		}
	}
	return b.String()
}

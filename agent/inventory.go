package agent

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/gitmetal/gitmetal/runner/protocol"
)

// ReadInventory describes the machine from root's /proc, /sys and /dev
// (root is "/" on a real machine). It is best effort: whatever cannot be
// read is left empty, and it never fails.
func ReadInventory(root string) protocol.Inventory {
	var inv protocol.Inventory
	inv.Hostname = readTrim(root, "proc/sys/kernel/hostname")
	inv.Kernel = readTrim(root, "proc/sys/kernel/osrelease")
	inv.CPU = readCPU(root)
	inv.MemoryBytes = readMemTotal(root)
	inv.Disks = readDisks(root)
	inv.NICs = readNICs(root)
	return inv
}

func readTrim(root, path string) string {
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readCPU(root string) protocol.CPU {
	var c protocol.CPU
	f, err := os.Open(filepath.Join(root, "proc/cpuinfo"))
	if err != nil {
		return c
	}
	defer f.Close()
	cores := map[string]bool{}
	sockets := map[string]bool{}
	var phys string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			c.Threads++
		case "model name":
			if c.Model == "" {
				c.Model = v
			}
		case "physical id":
			phys = v
			sockets[v] = true
		case "core id":
			cores[phys+"/"+v] = true
		}
	}
	c.Cores, c.Sockets = len(cores), len(sockets)
	return c
}

func readMemTotal(root string) uint64 {
	b, err := os.ReadFile(filepath.Join(root, "proc/meminfo"))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				return 0
			}
			kb, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}

// virtualDisk reports block devices that are not disks to install on.
func virtualDisk(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func readDisks(root string) []protocol.Disk {
	entries, err := os.ReadDir(filepath.Join(root, "sys/block"))
	if err != nil {
		return nil
	}
	byID := diskLinks(root)
	var out []protocol.Disk
	for _, e := range entries {
		name := e.Name()
		if virtualDisk(name) {
			continue
		}
		dir := filepath.Join(root, "sys/block", name)
		sectors, _ := strconv.ParseUint(readTrim(dir, "size"), 10, 64)
		d := protocol.Disk{
			Name:       name,
			SizeBytes:  sectors * 512, // the kernel counts 512-byte sectors here whatever the disk's
			Model:      readTrim(dir, "device/model"),
			Serial:     readTrim(dir, "device/serial"),
			ByID:       byID[name],
			Rotational: readTrim(dir, "queue/rotational") == "1",
			Removable:  readTrim(dir, "removable") == "1",
		}
		if d.Serial == "" {
			d.Serial = vpdSerial(filepath.Join(dir, "device/vpd_pg80"))
		}
		if d.Serial == "" {
			// virtio-blk keeps its serial on the disk, not the device.
			d.Serial = readTrim(dir, "serial")
		}
		out = append(out, d)
	}
	return out
}

// vpdSerial reads a SCSI unit serial number VPD page (0x80): a 4-byte
// header whose last byte is the length, then the serial.
func vpdSerial(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(b[3])
	if 4+n > len(b) {
		n = len(b) - 4
	}
	return string(bytes.TrimSpace(bytes.Trim(b[4:4+n], "\x00")))
}

// diskLinks maps each kernel disk name to the /dev/disk/by-id links that
// point at it.
func diskLinks(root string) map[string][]string {
	dir := filepath.Join(root, "dev/disk/by-id")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[string][]string{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		name := filepath.Base(target)
		out[name] = append(out[name], "/dev/disk/by-id/"+e.Name())
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

func readNICs(root string) []protocol.NIC {
	dir := filepath.Join(root, "sys/class/net")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []protocol.NIC
	for _, e := range entries {
		name := e.Name()
		if name == "lo" {
			continue
		}
		p := filepath.Join(dir, name)
		n := protocol.NIC{
			Name:  name,
			MAC:   readTrim(p, "address"),
			State: readTrim(p, "operstate"),
		}
		n.MTU, _ = strconv.Atoi(readTrim(p, "mtu"))
		if s, err := strconv.Atoi(readTrim(p, "speed")); err == nil && s > 0 {
			n.SpeedMbps = s
		}
		if drv, err := os.Readlink(filepath.Join(p, "device/driver")); err == nil {
			n.Driver = filepath.Base(drv)
		}
		out = append(out, n)
	}
	return out
}

package agent_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gitmetal/gitmetal/agent"
	"github.com/gitmetal/gitmetal/runner/protocol"
)

// tree writes files (path → content; content "-> target" makes a
// symbolic link) under a new root.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := cutLink(content); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func cutLink(s string) (string, bool) {
	if len(s) > 3 && s[:3] == "-> " {
		return s[3:], true
	}
	return "", false
}

// The kernel's files of a two-socket machine with a SATA disk, an NVMe
// disk, a loop device and two NICs, laid out as /proc, /sys and /dev have
// them.
func TestReadInventory(t *testing.T) {
	t.Parallel()
	root := tree(t, map[string]string{
		"proc/sys/kernel/hostname":  "installer\n",
		"proc/sys/kernel/osrelease": "6.1.0-18-amd64\n",
		"proc/cpuinfo": `processor	: 0
model name	: Intel(R) Xeon(R) Gold 6130
physical id	: 0
core id		: 0

processor	: 1
model name	: Intel(R) Xeon(R) Gold 6130
physical id	: 0
core id		: 0

processor	: 2
model name	: Intel(R) Xeon(R) Gold 6130
physical id	: 1
core id		: 0

processor	: 3
model name	: Intel(R) Xeon(R) Gold 6130
physical id	: 1
core id		: 1
`,
		"proc/meminfo":                                  "MemTotal:       16318480 kB\nMemFree:         1000 kB\n",
		"sys/block/sda/size":                            "3907029168\n",
		"sys/block/sda/device/model":                    "ST2000DM008-2FR1\n",
		"sys/block/sda/device/vpd_pg80":                 "\x00\x80\x00\x08ZFL1ABCD",
		"sys/block/sda/queue/rotational":                "1\n",
		"sys/block/sda/removable":                       "0\n",
		"sys/block/nvme0n1/size":                        "1000215216\n",
		"sys/block/nvme0n1/device/model":                "Samsung SSD 980 1TB\n",
		"sys/block/nvme0n1/device/serial":               "S649NX0R123456  \n",
		"sys/block/nvme0n1/queue/rotational":            "0\n",
		"sys/block/loop0/size":                          "0\n",
		"sys/block/vdb/size":                            "2048\n",
		"sys/block/vdb/serial":                          "gitmetal-data\n",
		"sys/block/vdb/queue/rotational":                "1\n",
		"dev/disk/by-id/ata-ST2000DM008_ZFL1ABCD":       "-> ../../sda",
		"dev/disk/by-id/ata-ST2000DM008_ZFL1ABCD-part1": "-> ../../sda1",
		"dev/disk/by-id/wwn-0x5000c500a1b2c3d4":         "-> ../../sda",
		"dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S649":  "-> ../../nvme0n1",
		"sys/class/net/lo/address":                      "00:00:00:00:00:00\n",
		"sys/class/net/eno1/address":                    "52:54:00:12:34:56\n",
		"sys/class/net/eno1/operstate":                  "up\n",
		"sys/class/net/eno1/mtu":                        "1500\n",
		"sys/class/net/eno1/speed":                      "10000\n",
		"sys/class/net/eno1/device/driver":              "-> ../../../bus/pci/drivers/ixgbe",
		"sys/class/net/eno2/address":                    "52:54:00:12:34:57\n",
		"sys/class/net/eno2/operstate":                  "down\n",
		"sys/class/net/eno2/speed":                      "-1\n",
	})
	want := protocol.Inventory{
		Hostname:    "installer",
		Kernel:      "6.1.0-18-amd64",
		CPU:         protocol.CPU{Model: "Intel(R) Xeon(R) Gold 6130", Threads: 4, Cores: 3, Sockets: 2},
		MemoryBytes: 16318480 * 1024,
		Disks: []protocol.Disk{
			{Name: "nvme0n1", SizeBytes: 1000215216 * 512, Model: "Samsung SSD 980 1TB", Serial: "S649NX0R123456",
				ByID: []string{"/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S649"}},
			{Name: "sda", SizeBytes: 3907029168 * 512, Model: "ST2000DM008-2FR1", Serial: "ZFL1ABCD", Rotational: true,
				ByID: []string{"/dev/disk/by-id/ata-ST2000DM008_ZFL1ABCD", "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"}},
			{Name: "vdb", SizeBytes: 2048 * 512, Serial: "gitmetal-data", Rotational: true},
		},
		NICs: []protocol.NIC{
			{Name: "eno1", MAC: "52:54:00:12:34:56", Driver: "ixgbe", State: "up", SpeedMbps: 10000, MTU: 1500},
			{Name: "eno2", MAC: "52:54:00:12:34:57", State: "down"},
		},
	}
	if diff := cmp.Diff(want, agent.ReadInventory(root)); diff != "" {
		t.Errorf("inventory (-want +got):\n%s", diff)
	}
}

// Nothing to read is an empty inventory, not a failure.
func TestReadInventoryEmpty(t *testing.T) {
	t.Parallel()
	if diff := cmp.Diff(protocol.Inventory{}, agent.ReadInventory(t.TempDir())); diff != "" {
		t.Errorf("inventory of an empty root (-want +got):\n%s", diff)
	}
}

// This machine's own inventory has at least memory, processors and a NIC
// or a disk.
func TestReadInventoryHost(t *testing.T) {
	t.Parallel()
	inv := agent.ReadInventory("/")
	if inv.MemoryBytes == 0 || inv.CPU.Threads == 0 || inv.Kernel == "" {
		t.Errorf("got %+v, want memory, CPUs and the kernel release", inv)
	}
}

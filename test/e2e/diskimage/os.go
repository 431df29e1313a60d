package diskimage

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gitmetal/gitmetal/agent/initramfs"
	"github.com/gitmetal/gitmetal/test/qemu"
)

// kernelCmdline is the installed OS's kernel command line, for both boot
// loaders. panic=-1 turns a panic into a reboot, which QEMU's -no-reboot
// turns into an exit, so a broken OS ends its VM at once.
const kernelCmdline = "console=ttyS0,115200 panic=-1"

// osModules are the drivers the OS loads, with their dependencies: the
// virtio NIC and disk, and ext4 for the data partition. ext4 finds its
// checksum through the crypto API (crc32c), a soft dependency that
// .modinfo's depends= does not name, and nothing would load it on demand
// (there is no modprobe): crc32c_generic is listed first.
var osModules = []string{"virtio_pci", "virtio_net", "virtio_blk", "crc32c_generic", "ext4"}

// osParts is the OS's kernel and initramfs, and what goes on its data
// partition.
type osParts struct {
	kernel    string // path of vmlinuz
	initramfs []byte // gzip-compressed newc cpio
	abi       string
	// rootfs, when set, is the directory the data partition is made from
	// (the Debian image's root file system), and rootfsKey names its
	// contents for the cache key; otherwise the data partition holds a
	// README only.
	rootfs, rootfsKey string
	// dataMiB is the data partition's size.
	dataMiB int
}

// buildOS makes the OS's initramfs from test/qemu's kernel package and
// busybox-static, with init(modules) as its /init.
func buildOS(ctx context.Context, cfg Config, init func(modules []string) string) (*osParts, error) {
	k, err := qemu.Kernel(ctx, cfg.KernelCacheDir, cfg.KernelABI)
	if err != nil {
		return nil, err
	}
	bb, err := qemu.Busybox(ctx, cfg.KernelCacheDir)
	if err != nil {
		return nil, err
	}
	mods, err := qemu.ModuleOrder(k.ModulesDir, osModules...)
	if err != nil {
		return nil, err
	}
	// The kernel opens /dev/console for init before devtmpfs is mounted.
	files := []initramfs.File{{Name: "dev/console", Mode: initramfs.ModeChar | 0o600, RdevMajor: 5, RdevMinor: 1}}
	for _, d := range []string{"bin", "dev", "etc", "lib", "lib/modules", "mnt", "proc", "root", "sys", "tmp"} {
		files = append(files, initramfs.File{Name: d, Mode: initramfs.ModeDir | 0o755})
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		return nil, err
	}
	files = append(files, initramfs.File{Name: "bin/busybox", Mode: initramfs.ModeFile | 0o755, Data: b})
	var load []string
	for _, m := range mods {
		b, err := os.ReadFile(filepath.Join(k.ModulesDir, m))
		if err != nil {
			return nil, err
		}
		name := filepath.Base(m)
		files = append(files, initramfs.File{Name: "lib/modules/" + name, Mode: initramfs.ModeFile | 0o644, Data: b})
		load = append(load, name)
	}
	files = append(files,
		initramfs.File{Name: "init", Mode: initramfs.ModeFile | 0o755, Data: []byte(init(load))},
		initramfs.File{Name: "etc/udhcpc.script", Mode: initramfs.ModeFile | 0o755, Data: []byte(udhcpcScript)},
	)
	// Reproducible (sorted entries, fixed owners and times, a gzip header
	// without name or time): the cache key hashes these bytes.
	var raw, gz bytes.Buffer
	if err := initramfs.WriteCPIO(&raw, files); err != nil {
		return nil, err
	}
	if err := initramfs.Gzip(&gz, raw.Bytes()); err != nil {
		return nil, err
	}
	return &osParts{kernel: k.Vmlinuz, initramfs: gz.Bytes(), abi: k.ABI, dataMiB: dataSizeMiB}, nil
}

// InitScript is the OS's /init for version, loading modules (file names
// under /lib/modules) in order. It prints progress lines (ProgressMarker)
// and exactly one result line (see ResultLine), then powers off.
func InitScript(version string, modules []string) string {
	var b strings.Builder
	b.WriteString(initHead(version, modules))
	fmt.Fprintf(&b, `ip link set lo up
IF=""
for i in $(seq 1 100); do
  for d in /sys/class/net/*; do n=${d##*/}; [ "$n" = lo ] && continue; IF=$n; break; done
  [ -n "$IF" ] && break
  sleep 0.1
done
[ -n "$IF" ] || fail "no NIC"
ip link set "$IF" up
udhcpc -i "$IF" -f -q -n -t 15 -T 2 -A 1 -s /etc/udhcpc.script >/tmp/udhcpc.log 2>&1 || { cat /tmp/udhcpc.log; fail "dhcp on $IF"; }
. /tmp/lease
p "dhcp if=$IF ip=$ip server=$serverid"
md="http://$serverid:%d"
# get PATH prints the metadata service's answer for PATH, trying a few times.
get() {
  for i in 1 2 3 4 5; do
    if timeout 10 wget -q -O /tmp/get "$md$1" 2>/dev/null; then cat /tmp/get; return 0; fi
    sleep 1
  done
  return 1
}
hostname=$(get /latest/meta-data/hostname) || fail "metadata $md/latest/meta-data/hostname"
userdata=$(get /latest/user-data) || fail "metadata $md/latest/user-data"
p "metadata $md hostname=$hostname"
hostname "$hostname"
%smount -t ext4 -o ro "$dev" /mnt || fail "mount $dev"
if [ -f /mnt%s ]; then written=$(cat /mnt%s); else written=MISSING; fi
umount /mnt
echo "%s os=$OS firmware=$fw ip=$ip hostname=$(one "$hostname") userdata=$(one "$userdata") written=$(one "$written")"
sync
poweroff -f
sleep 600
`, MetadataPort, findDataPartition(), WrittenPath, WrittenPath, Marker)
	return b.String()
}

// initHead is how both OSes' /init begin: busybox's applets, the helpers
// p (a progress line), fail (the FAIL result line, then power off) and one
// (a value squeezed onto the result line: newlines become '|'), /proc,
// /sys and /dev, output to the serial console, the first progress line,
// then the modules (file names under /lib/modules) loaded in order.
func initHead(version string, modules []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
OS=%s
p() { echo "%s $*"; }
fail() { echo "%s os=$OS FAIL $*"; sync; poweroff -f; sleep 600; }
# one squeezes a value onto the result line: newlines become '|'.
one() { printf '%%s' "$1" | tr '\n\r' '||'; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
[ -c /dev/ttyS0 ] && exec >/dev/ttyS0 2>&1
fw=bios
[ -d /sys/firmware/efi ] && fw=uefi
p "init os=$OS firmware=$fw kernel=$(uname -r)"
`, version, ProgressMarker, Marker)
	for _, m := range modules {
		fmt.Fprintf(&b, "insmod /lib/modules/%s 2>/dev/null\n", m)
	}
	return b.String()
}

// findDataPartition sets $dev to the data partition, found by its label
// or, while the kernel has not read it yet, by its number on the virtio
// disk; it fails after 10 s.
func findDataPartition() string {
	return fmt.Sprintf(`dev=""
for i in $(seq 1 100); do
  dev=$(findfs LABEL=%s 2>/dev/null)
  [ -n "$dev" ] && break
  [ -b /dev/vda%d ] && { dev=/dev/vda%d; break; }
  sleep 0.1
done
[ -n "$dev" ] || fail "no data partition (label %s)"
`, DataLabel, DataPartition, DataPartition, DataLabel)
}

// udhcpcScript sets the address only (no routes, no resolv.conf) and
// records the lease for /init.
const udhcpcScript = `#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "ip=$ip serverid=$serverid" >/tmp/lease ;;
esac
exit 0
`

// Result is what the OS's result line says.
type Result struct {
	OS, Firmware, IP, Hostname, UserData, Written string
	// Fail is what went wrong, for a FAIL line; empty otherwise.
	Fail string
}

// ResultLine is the line the OS prints for r: Marker, then os=, firmware=,
// ip=, hostname=, userdata= and written= in that order; a value's newlines
// are printed as '|'. A failed OS prints Marker, os= and "FAIL <what>".
func ResultLine(r Result) string {
	if r.Fail != "" {
		return fmt.Sprintf("%s os=%s FAIL %s", Marker, r.OS, r.Fail)
	}
	flat := strings.NewReplacer("\r\n", "|", "\n", "|", "\r", "|")
	return fmt.Sprintf("%s os=%s firmware=%s ip=%s hostname=%s userdata=%s written=%s",
		Marker, r.OS, r.Firmware, r.IP, flat.Replace(r.Hostname), flat.Replace(r.UserData), flat.Replace(r.Written))
}

// ParseResult parses a result line (leading text before Marker, such as
// kernel log noise on the same line, is ignored). Values are split at the
// next key, so they may hold spaces.
func ParseResult(line string) (Result, error) {
	i := strings.Index(line, Marker+" os=")
	if i < 0 {
		return Result{}, errNoMarker
	}
	rest := line[i+len(Marker+" os="):]
	var r Result
	if os, fail, ok := strings.Cut(rest, " FAIL "); ok && !strings.Contains(os, " ") {
		r.OS, r.Fail = os, fail
		return r, nil
	}
	keys := []string{" firmware=", " ip=", " hostname=", " userdata=", " written="}
	dst := []*string{&r.OS, &r.Firmware, &r.IP, &r.Hostname, &r.UserData, &r.Written}
	for k, key := range keys {
		j := strings.Index(rest, key)
		if j < 0 {
			return Result{}, fmt.Errorf("result line %q: no %q", line, strings.TrimSpace(key))
		}
		*dst[k] = rest[:j]
		rest = rest[j+len(key):]
	}
	r.Written = rest
	return r, nil
}

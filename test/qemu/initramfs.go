package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gitmetal/gitmetal/agent/initramfs"
)

// DefaultMarker starts every line the test init prints on the serial
// console.
const DefaultMarker = "GITMETAL-TEST"

// nicModules are the NIC drivers the test init loads (with their
// dependencies): virtio and Intel e1000/e1000e, QEMU's usual NICs.
var nicModules = []string{"virtio_pci", "virtio_net", "e1000", "e1000e"}

// ImageConfig says what test kernel and initramfs to build.
type ImageConfig struct {
	// CacheDir keeps downloads and built images. Default DefaultCacheDir().
	CacheDir string
	// KernelABI picks the kernel package. Default: the one
	// linux-image-amd64 depends on.
	KernelABI string
	// Marker starts every line init prints. Default DefaultMarker.
	Marker string
	// DHCP makes init run udhcpc on the first NIC and print
	// "<marker> dhcp-ok <address>" (or "<marker> FAIL dhcp").
	DHCP bool
	// Script is shell (busybox ash) that init runs after the network is up
	// and before it prints "<marker> done" and powers off. It can use
	// $MARKER, $IF (the NIC), and the function m, which prints a marker
	// line. Optional.
	Script string
}

// Image is a built test kernel and initramfs.
type Image struct {
	Kernel string // vmlinuz
	Initrd string // gzip-compressed cpio (newc)
	ABI    string
	Marker string
}

// BuildImage returns the test kernel and an initramfs built from busybox,
// the NIC modules and an /init that prints marker lines on the console:
//
//	<marker> init-start kernel=<release>
//	<marker> cmdline <every gitmetal.* argument of the kernel command line>
//	<marker> nic <if> mac=<mac>                 (or "<marker> no-nic")
//	<marker> dhcp-ok <address>                  (with DHCP)
//	... what Script prints ...
//	<marker> done
//
// and then powers the machine off. The initramfs is named after the hash
// of its content, so a second build with the same inputs reuses the file.
func BuildImage(ctx context.Context, cfg ImageConfig) (*Image, error) {
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir()
	}
	if cfg.Marker == "" {
		cfg.Marker = DefaultMarker
	}
	if strings.ContainsAny(cfg.Marker, " \t\n'\"$`\\") {
		return nil, fmt.Errorf("marker %q: want one word without quotes", cfg.Marker)
	}
	k, err := Kernel(ctx, cfg.CacheDir, cfg.KernelABI)
	if err != nil {
		return nil, err
	}
	bb, err := Busybox(ctx, cfg.CacheDir)
	if err != nil {
		return nil, err
	}
	mods, err := ModuleOrder(k.ModulesDir, nicModules...)
	if err != nil {
		return nil, err
	}
	var files []initramfs.File
	add := func(name string, mode uint32, data []byte) {
		files = append(files, initramfs.File{Name: name, Mode: mode, Data: data})
	}
	for _, d := range []string{"bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp"} {
		add(d, initramfs.ModeDir|0o755, nil)
	}
	// The kernel opens /dev/console for init before devtmpfs is mounted.
	files = append(files, initramfs.File{Name: "dev/console", Mode: initramfs.ModeChar | 0o600, RdevMajor: 5, RdevMinor: 1})
	b, err := os.ReadFile(bb)
	if err != nil {
		return nil, err
	}
	add("bin/busybox", initramfs.ModeFile|0o755, b)
	var load []string
	for _, m := range mods {
		b, err := os.ReadFile(filepath.Join(k.ModulesDir, m))
		if err != nil {
			return nil, err
		}
		name := filepath.Base(m)
		add("lib/modules/"+name, initramfs.ModeFile|0o644, b)
		load = append(load, name)
	}
	add("init", initramfs.ModeFile|0o755, []byte(initScript(cfg, load)))
	add("etc/udhcpc.script", initramfs.ModeFile|0o755, []byte(udhcpcScript))

	var raw bytes.Buffer
	if err := initramfs.WriteCPIO(&raw, files); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw.Bytes())
	dst := filepath.Join(cfg.CacheDir, "initramfs", "initramfs-"+hex.EncodeToString(sum[:8])+".cpio.gz")
	if _, err := os.Stat(dst); err != nil {
		var gz bytes.Buffer
		if err := initramfs.Gzip(&gz, raw.Bytes()); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		if err := initramfs.WriteFileAtomic(dst, gz.Bytes()); err != nil {
			return nil, err
		}
	}
	return &Image{Kernel: k.Vmlinuz, Initrd: dst, ABI: k.ABI, Marker: cfg.Marker}, nil
}

// initScript is the test init: mount, load the NIC modules, optionally
// DHCP, run cfg.Script, print the markers, power off.
func initScript(cfg ImageConfig, modules []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
MARKER=%s
m() { echo "$MARKER $*"; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The last console= of the command line is /dev/console; with gitmetal's
# "console=ttyS0,115200 console=tty0" that is the screen. The tests read
# the serial port, so init writes there whenever there is one.
[ -c /dev/ttyS0 ] && exec >/dev/ttyS0 2>&1
m "init-start kernel=$(uname -r)"
m "cmdline $(tr ' ' '\n' </proc/cmdline | grep '^gitmetal\.' | tr '\n' ' ')"
`, cfg.Marker)
	for _, mod := range modules {
		fmt.Fprintf(&b, "insmod /lib/modules/%s 2>/dev/null\n", mod)
	}
	b.WriteString(`IF=""
for i in $(seq 1 50); do
  for d in /sys/class/net/*; do n=${d##*/}; [ "$n" = lo ] && continue; IF=$n; break; done
  [ -n "$IF" ] && break
  sleep 0.1
done
ip link set lo up
if [ -n "$IF" ]; then
  m "nic $IF mac=$(cat /sys/class/net/$IF/address)"
  ip link set "$IF" up
else
  m "no-nic"
fi
`)
	if cfg.DHCP {
		b.WriteString(`if [ -n "$IF" ] && udhcpc -i "$IF" -f -q -n -t 10 -T 1 -A 1 -s /etc/udhcpc.script >/tmp/udhcpc.log 2>&1; then
  m "dhcp-ok $(ip -4 -o addr show dev $IF | awk '{print $4}')"
else
  cat /tmp/udhcpc.log 2>/dev/null
  m "FAIL dhcp"
fi
`)
	}
	if cfg.Script != "" {
		b.WriteString(cfg.Script)
		if !strings.HasSuffix(cfg.Script, "\n") {
			b.WriteString("\n")
		}
	}
	b.WriteString("m done\nsync\npoweroff -f\n")
	return b.String()
}

// udhcpcScript sets the address only: no routes, no resolv.conf.
const udhcpcScript = `#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew) ip -4 addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface" ;;
esac
exit 0
`

package diskimage

// The Debian OS (Config.Debian): the end-to-end story's stretch goal, a
// real distribution that learns who it is from gitmetal through cloud-init.
//
//   - The root file system is debootstrap's minbase variant of Debian 12
//     with systemd, udev, ifupdown, isc-dhcp-client, iproute2 and
//     cloud-init (debootstrap does not resolve virtual packages, so
//     python3-cffi-backend, which python3-cryptography needs through one,
//     is named too). It is built once into the cache, as root (debootstrap
//     chroots), trimmed of package caches, documentation and translations,
//     and becomes the image's partition 2 through mkfs.ext4 -d: no mount,
//     no loop device.
//   - It boots Debian's kernel with the same busybox initramfs as the
//     busybox OS, whose /init here only loads the virtio and ext4 modules,
//     mounts partition 2 and switches to systemd. The root file system has
//     no kernel modules: what the VM needs is loaded by then.
//   - Nothing in the image says where gitmetal is. cloud-init's
//     configuration comes from the workflow, as in Tinkerbell's: a
//     writefile action puts CloudConfig (the EC2 datasource at the
//     metadata service's URL, without the check that the platform is
//     Amazon's) in /etc/cloud/cloud.cfg.d/. Without it cloud-init finds no
//     datasource and the result line never comes.
//   - The machine's user-data is a #cloud-config whose runcmd runs
//     ReportCommand, baked into the image: it prints the result line
//     (firmware, address, the local-hostname cloud-init read from the
//     metadata service, the user-data as cloud-init read it, the file the
//     workflow wrote) on the serial console, where no login prompt
//     competes with it (serial-getty@ttyS0 is masked). The user-data then powers the
//     machine off through cloud-init's power_state.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// The Debian the image is made of. debootstrap takes it from the mirror
// apt uses (aptMirror), else from defaultMirror, through apt's proxy if
// it has one.
const (
	debianSuite   = "bookworm"
	defaultMirror = "http://deb.debian.org/debian"
)

// debianPackages are added to debootstrap's minbase variant.
var debianPackages = []string{
	"systemd-sysv", "udev", "ifupdown", "isc-dhcp-client", "iproute2",
	"cloud-init", "python3-cffi-backend",
}

// ReportCommand is the Debian OS's program that prints the result line; a
// machine's user-data runs it (see DebianUserData).
const ReportCommand = "/usr/local/sbin/gitmetal-e2e-report"

// CloudConfigPath is where the workflow writes CloudConfig into the Debian
// OS's root file system (partition DataPartition).
const CloudConfigPath = "/etc/cloud/cloud.cfg.d/95-gitmetal.cfg"

// CloudConfig is cloud-init's configuration for a machine whose metadata
// service is at url: the EC2 datasource alone (cloud-init's ds-identify
// then uses it without probing), on a platform that is not Amazon's.
func CloudConfig(url string) string {
	return fmt.Sprintf(`# Written by gitmetal's workflow: metadata from gitmetal's EC2 service.
datasource_list: [ Ec2, None ]
datasource:
  Ec2:
    metadata_urls: [ %q ]
    strict_id: false
    timeout: 5
    max_wait: 120
`, url)
}

// DebianUserData is a #cloud-config that runs ReportCommand and powers the
// machine off; comment is a line of the machine's own, so that the result
// line shows the user-data cloud-init read was this machine's.
func DebianUserData(comment string) string {
	return fmt.Sprintf(`#cloud-config
# %s
runcmd:
  - [ %s ]
power_state:
  mode: poweroff
  message: gitmetal e2e done
  timeout: 60
`, comment, ReportCommand)
}

// reportScript is ReportCommand for OS version.
func reportScript(version string) string {
	return fmt.Sprintf(`#!/bin/sh
# Prints the gitmetal end-to-end test's result line on the serial console:
# what cloud-init learnt from gitmetal's metadata service.
one() { printf '%%s' "$1" | tr '\n\r' '||'; }
fw=bios
[ -d /sys/firmware/efi ] && fw=uefi
ip=$(ip -4 -o addr show scope global | sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p' | head -n 1)
hostname=$(cloud-init query ds.meta_data.local_hostname 2>&1)
userdata=$(cloud-init query userdata 2>&1)
if [ -f %s ]; then written=$(cat %s); else written=MISSING; fi
echo "%s os=%s firmware=$fw ip=$ip hostname=$(one "$hostname") userdata=$(one "$userdata") written=$(one "$written")" >/dev/ttyS0
`, WrittenPath, WrittenPath, Marker, version)
}

// debianInit is the initramfs's /init for the Debian OS: load modules
// (file names under /lib/modules), mount the root partition, switch to
// systemd.
func debianInit(version string, modules []string) string {
	return initHead(version, modules) + findDataPartition() + `mount -t ext4 -o rw "$dev" /root || fail "mount $dev"
# /sbin/init is an absolute link, to be resolved in the new root.
[ -x /root/lib/systemd/systemd ] || fail "no systemd on $dev"
p "root $dev: starting systemd"
umount /proc /sys
mount --move /dev /root/dev || umount /dev
exec switch_root /root /sbin/init </root/dev/console >/root/dev/console 2>&1
`
}

// MissingDebian is what the Debian OS needs beyond Missing: debootstrap.
func MissingDebian() []string {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return []string{"debootstrap (apt-get install -y debootstrap)"}
	}
	return nil
}

// buildDebian makes the Debian OS's parts: the initramfs, and its root
// file system from the cache or debootstrap. Build has checked Missing.
func buildDebian(ctx context.Context, cfg Config) (*osParts, error) {
	if m := MissingDebian(); len(m) > 0 {
		return nil, fmt.Errorf("diskimage: the Debian OS needs %s", strings.Join(m, ", "))
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("diskimage: the Debian OS needs root (debootstrap chroots into the new system)")
	}
	o, err := buildOS(ctx, cfg, func(modules []string) string { return debianInit(cfg.Version, modules) })
	if err != nil {
		return nil, err
	}
	root, key, err := debianRootfs(ctx, cfg)
	if err != nil {
		return nil, err
	}
	size, err := treeSize(root)
	if err != nil {
		return nil, err
	}
	// Room for ext4's own structures, the journal, and what the OS
	// writes while it runs (cloud-init's state, the journal, logs).
	o.rootfs, o.rootfsKey = root, key
	o.dataMiB = int(size/mib)*5/4 + 128
	return o, nil
}

// debianRootfs returns the Debian root file system for cfg.Version (its
// report script says os=<Version>), from the cache or built there, and a
// key naming its contents.
func debianRootfs(ctx context.Context, cfg Config) (dir, key string, err error) {
	files := debianFiles(cfg.Version)
	h := sha256.New()
	mirror := aptMirror()
	fmt.Fprintf(h, "gitmetal-e2e-debian 1\nsuite %s\nmirror %s\npackages %s\n", debianSuite, mirror, strings.Join(debianPackages, ","))
	for _, f := range files {
		fmt.Fprintf(h, "file %s %o %q %d\n%s\n", f.path, f.mode, f.link, len(f.content), f.content)
	}
	key = hex.EncodeToString(h.Sum(nil))[:16]
	dir = filepath.Join(cfg.CacheDir, "debian", "rootfs-"+key)
	if built(dir) {
		return dir, key, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", "", err
	}
	// A mirror that drops a download fails debootstrap as a whole: a
	// second attempt starts over in a fresh directory.
	var tmp string
	for attempt := 1; ; attempt++ {
		if tmp, err = os.MkdirTemp(filepath.Dir(dir), ".build-"); err != nil {
			return "", "", err
		}
		defer removeTree(tmp)
		err = debootstrap(ctx, tmp, mirror)
		if err == nil {
			break
		}
		if attempt == 2 || ctx.Err() != nil {
			return "", "", err
		}
		removeTree(tmp)
	}
	if err := trimRootfs(tmp); err != nil {
		return "", "", err
	}
	for _, f := range files {
		p := filepath.Join(tmp, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", "", err
		}
		if f.link != "" {
			if err := os.Symlink(f.link, p); err != nil {
				return "", "", err
			}
			continue
		}
		if err := os.WriteFile(p, []byte(f.content), f.mode); err != nil {
			return "", "", err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return "", "", err
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if built(dir) { // another builder won
			return dir, key, nil
		}
		return "", "", err
	}
	return dir, key, nil
}

// built reports whether dir holds a finished root file system (it is
// renamed into place whole). Debian's /sbin/init is an absolute link, so
// the test is on what it points to.
func built(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "usr", "lib", "systemd", "systemd"))
	return err == nil
}

// debootstrap installs Debian into dir from mirror.
func debootstrap(ctx context.Context, dir, mirror string) error {
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase",
		"--include="+strings.Join(debianPackages, ","), debianSuite, dir, mirror)
	cmd.Env = os.Environ()
	if p := aptConfig("Acquire::http::Proxy"); p != "" && os.Getenv("http_proxy") == "" {
		cmd.Env = append(cmd.Env, "http_proxy="+p)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "debootstrap", "debootstrap.log"))
		return fmt.Errorf("debootstrap %s: %w\n%s\ndebootstrap.log (end):\n%s", debianSuite, err, tail(out, 2000), tail(log, 4000))
	}
	return nil
}

// rootfsFile is a file the image adds to, or replaces in, Debian's: a
// regular file with content, or a symbolic link to link.
type rootfsFile struct {
	path    string
	mode    os.FileMode
	content string
	link    string
}

// debianFiles are the image's own files: the report program, and the
// identity a fresh machine must not inherit from the build host.
func debianFiles(version string) []rootfsFile {
	return []rootfsFile{
		{strings.TrimPrefix(ReportCommand, "/"), 0o755, reportScript(version), ""},
		// systemd makes a machine ID at each boot; cloud-init sets the
		// hostname from the metadata.
		{"etc/machine-id", 0o444, "", ""},
		{"etc/hostname", 0o644, "localhost\n", ""},
		{"etc/fstab", 0o644, "# the root file system is mounted by the initramfs\n", ""},
		{"etc/systemd/system/serial-getty@ttyS0.service", 0, "", "/dev/null"},
	}
}

// trimRootfs removes what a booted image never reads: downloaded packages,
// package lists, documentation, manual pages and translations.
func trimRootfs(root string) error {
	var errs []error
	for _, d := range []string{"var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info"} {
		p := filepath.Join(root, d)
		entries, err := os.ReadDir(p)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.Name() == "partial" || e.Name() == "lock" {
				continue
			}
			errs = append(errs, os.RemoveAll(filepath.Join(p, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// removeTree removes a failed build's directory. debootstrap mounts proc
// and sys inside the new system while it works and may leave them mounted
// when it fails: those are unmounted first, so that nothing outside the
// directory is touched.
func removeTree(dir string) {
	for _, m := range []string{"proc", "sys", "dev/pts"} {
		p := filepath.Join(dir, m)
		if mounted(p) {
			exec.Command("umount", "-l", p).Run()
		}
	}
	for _, m := range []string{"proc", "sys", "dev/pts"} {
		if mounted(filepath.Join(dir, m)) {
			return // leave it rather than walk a mounted file system
		}
	}
	os.RemoveAll(dir)
}

// mounted reports whether path is a mount point, from /proc/self/mountinfo.
func mounted(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return true // cannot tell: assume the worst
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// treeSize is the bytes the files under root take, each rounded up to a
// 4 KiB block.
func treeSize(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n += (info.Size() + 4095) &^ 4095
		return nil
	})
	return n, err
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// aptMirror is the URI apt fetches debianSuite's main archive from, or
// defaultMirror.
func aptMirror() string {
	var paths []string
	if m, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources"); m != nil {
		paths = append(paths, m...)
	}
	paths = append(paths, "/etc/apt/sources.list")
	if m, _ := filepath.Glob("/etc/apt/sources.list.d/*.list"); m != nil {
		paths = append(paths, m...)
	}
	var sources []aptSource
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			sources = append(sources, aptSource{deb822: strings.HasSuffix(p, ".sources"), text: string(b)})
		}
	}
	return mirrorOf(sources)
}

// aptSource is the text of one of apt's source files: deb822 stanzas (a
// .sources file) or one-line entries (a .list file).
type aptSource struct {
	deb822 bool
	text   string
}

// mirrorOf returns the first http(s) URI of a "deb" source for debianSuite
// in sources, or defaultMirror.
func mirrorOf(sources []aptSource) string {
	for _, src := range sources {
		if src.deb822 {
			// Stanzas of "Field: value" lines, apart by blank lines.
			for _, stanza := range strings.Split(src.text, "\n\n") {
				fields := map[string]string{}
				for _, line := range strings.Split(stanza, "\n") {
					if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
						fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
					}
				}
				uris := strings.Fields(fields["URIs"])
				if len(uris) > 0 && strings.HasPrefix(uris[0], "http") && fields["Enabled"] != "no" &&
					slices.Contains(strings.Fields(fields["Types"]), "deb") &&
					slices.Contains(strings.Fields(fields["Suites"]), debianSuite) {
					return uris[0]
				}
			}
			continue
		}
		for _, line := range strings.Split(src.text, "\n") {
			// deb [options] URI suite components...
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "deb" {
				continue
			}
			f = f[1:]
			if len(f) > 0 && strings.HasPrefix(f[0], "[") {
				for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
					f = f[1:]
				}
				if len(f) > 0 {
					f = f[1:]
				}
			}
			if len(f) >= 2 && strings.HasPrefix(f[0], "http") && f[1] == debianSuite {
				return f[0]
			}
		}
	}
	return defaultMirror
}

// aptConfig is apt's value of key, or "".
func aptConfig(key string) string {
	out, err := exec.Command("apt-config", "shell", "V", key).Output()
	if err != nil {
		return ""
	}
	// V='value'
	v, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "V='")
	if !ok {
		return ""
	}
	return strings.TrimSuffix(v, "'")
}

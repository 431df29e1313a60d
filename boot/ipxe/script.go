package ipxe

import (
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/gitmetal/gitmetal/schema"
)

// Kind says which script a machine got.
type Kind string

// The kinds of script.
const (
	// KindLocalDisk: exit to the firmware, which boots the next device.
	KindLocalDisk Kind = "local-disk"
	// KindInstaller: load gitmetal's installer kernel and initrd.
	KindInstaller Kind = "installer"
	// KindCustomScript: the interface's netboot.ipxe.script.
	KindCustomScript Kind = "custom-script"
	// KindChain: chain to the interface's netboot.ipxe.url.
	KindChain Kind = "chain"
	// KindMisconfigured: the installer was wanted but cannot be loaded as
	// configured; the script says why and exits to the local disk.
	KindMisconfigured Kind = "misconfigured"
)

// Attempts is how many times an installer script tries to download each
// of the kernel and the initrd, RetryDelay seconds apart, before it gives
// up and exits to the local disk.
const (
	Attempts   = 5
	RetryDelay = 5
)

// scriptInput is everything a script is made from; scripts are a pure
// function of it, which is what the golden files pin down.
type scriptInput struct {
	Revision string
	Hardware string // machine name
	MAC      string
	Reason   string // why the machine gets this script, for the comment
}

// header starts every script gitmetal writes: the iPXE magic line, then
// the revision and the machine, so that a console log or a captured script
// says which commit decided it.
func header(in scriptInput) string {
	return fmt.Sprintf("#!ipxe\n# gitmetal revision %s\n# machine %s interface %s: %s\n",
		oneLine(in.Revision), oneLine(in.Hardware), in.MAC, oneLine(in.Reason))
}

// localDiskScript exits iPXE with a failure. On BIOS the firmware then
// tries its next boot device; on UEFI the boot manager takes its next boot
// option — only after a failure: EDK2 treats a boot option that returns
// success as done and opens its setup menu (the e2e test caught this).
// iPXE's "sanboot --drive 0x80" would work on BIOS only.
func localDiskScript(in scriptInput) string {
	return header(in) + fmt.Sprintf("echo gitmetal: %s: booting from the local disk\nexit 1\n", oneLine(in.Reason))
}

// misconfiguredScript tells the console why the installer cannot be booted
// and leaves to the local disk after a pause long enough to read it.
func misconfiguredScript(in scriptInput, problem string) string {
	return header(in) + fmt.Sprintf("echo gitmetal: cannot boot the installer: %s\necho gitmetal: booting from the local disk in 10 s\nsleep 10\nexit 1\n", oneLine(problem))
}

// customScript is the interface's own script, with the magic line added when
// it is missing and gitmetal's comments after it.
func customScript(in scriptInput, script string) string {
	body := script
	if first, rest, _ := strings.Cut(script, "\n"); strings.TrimRight(first, "\r \t") == "#!ipxe" {
		body = rest
	}
	if body != "" && !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	return header(in) + body
}

// chainScript chains to the interface's own URL, with retries.
func chainScript(in scriptInput, target string) string {
	var b strings.Builder
	b.WriteString(header(in))
	writeRetry(&b, "chain", "chain --autofree "+target, "done", "the script at "+target)
	// A chained script that returns without booting anything: local disk.
	b.WriteString(":done\nexit 1\n")
	writeFailed(&b)
	return b.String()
}

// installer is the resolved installer of one boot.
type installer struct {
	kernelURL, initrdURL, initrdName string
	args                             string // the whole kernel command line
}

// installerScript loads the kernel and the initrd, each with retries, and
// boots them. The initrd gets an explicit name, and initrd=<name> is on the
// command line: the EFI stub of Linux finds the initrd by that name when
// iPXE runs on UEFI (harmless on BIOS).
func installerScript(in scriptInput, inst installer) string {
	var b strings.Builder
	b.WriteString(header(in))
	fmt.Fprintf(&b, "echo gitmetal: booting the installer for %s (%s)\n", oneLine(in.Hardware), in.MAC)
	writeRetry(&b, "kernel", "kernel "+inst.kernelURL+" "+inst.args, "initrd", "the installer kernel")
	writeRetry(&b, "initrd", "initrd --name "+inst.initrdName+" "+inst.initrdURL, "boot", "the installer initrd")
	b.WriteString(":boot\nboot || goto failed\n")
	writeFailed(&b)
	return b.String()
}

// writeRetry writes section label: a loop that runs cmd until it succeeds
// (then goes to next) or has failed Attempts times (then goes to failed).
// iPXE aborts a script at the first failed command unless "||" follows it,
// and goto finds the first line with the label, so labels are unique.
func writeRetry(b *strings.Builder, label, cmd, next, what string) {
	counter := label + "-tries"
	fmt.Fprintf(b, ":%s\n", label)
	fmt.Fprintf(b, "set %s:int32 0\n", counter)
	fmt.Fprintf(b, ":%s-try\n", label)
	fmt.Fprintf(b, "%s && goto %s ||\n", cmd, next)
	fmt.Fprintf(b, "inc %s\n", counter)
	fmt.Fprintf(b, "iseq ${%s} %d && goto failed ||\n", counter, Attempts)
	fmt.Fprintf(b, "echo gitmetal: could not load %s (attempt ${%s} of %d), retrying in %d s\n", oneLine(what), counter, Attempts, RetryDelay)
	fmt.Fprintf(b, "sleep %d\n", RetryDelay)
	fmt.Fprintf(b, "goto %s-try\n", label)
}

func writeFailed(b *strings.Builder) {
	b.WriteString(":failed\necho gitmetal: giving up, booting from the local disk in 10 s\nsleep 10\nexit 1\n")
}

// resolveInstaller merges the interface's installer over the settings' one
// field by field and builds the URLs and the command line. It returns a
// problem, for the console, when the result cannot be booted.
func resolveInstaller(base string, iface *schema.Interface, settings *schema.Settings, token string) (installer, string) {
	var kernel, initrd, args string
	if settings != nil && settings.Installer != nil {
		kernel, initrd, args = settings.Installer.Kernel, settings.Installer.Initrd, settings.Installer.Args
	}
	if o := iface.Netboot.Installer; o != nil {
		if o.Kernel != "" {
			kernel = o.Kernel
		}
		if o.Initrd != "" {
			initrd = o.Initrd
		}
		if o.Args != "" {
			args = o.Args
		}
	}
	if kernel == "" || initrd == "" {
		return installer{}, "no installer kernel and initrd configured (settings.installer in gitmetal.cue, or netboot.installer on the interface)"
	}
	kURL, err := fileURL(base, kernel)
	if err != nil {
		return installer{}, "installer kernel: " + err.Error()
	}
	iURL, err := fileURL(base, initrd)
	if err != nil {
		return installer{}, "installer initrd: " + err.Error()
	}
	if bad := unsafeScriptChars(args); bad != "" {
		return installer{}, fmt.Sprintf("installer args: the %s is not allowed in an iPXE command line", bad)
	}
	name := initrdName(iURL)
	cmdline := []string{
		"gitmetal.server=" + base,
		"gitmetal.token=" + token,
		"gitmetal.mac=" + iface.MAC,
		"console=ttyS0,115200",
		"console=tty0",
	}
	if a := strings.Join(strings.Fields(args), " "); a != "" {
		cmdline = append(cmdline, a)
	}
	cmdline = append(cmdline, "initrd="+name)
	return installer{kernelURL: kURL, initrdURL: iURL, initrdName: name, args: strings.Join(cmdline, " ")}, ""
}

// fileURL turns an installer file into the URL iPXE fetches: an absolute
// http, https or tftp URL is used as it is; anything else is a path under
// /installer/ on base.
func fileURL(base, name string) (string, error) {
	if strings.Contains(name, "://") {
		u, err := url.Parse(name)
		if err != nil {
			return "", fmt.Errorf("%s is not a valid URL", name)
		}
		switch u.Scheme {
		case "http", "https", "tftp":
		default:
			return "", fmt.Errorf("%s: scheme %s not allowed (http, https, tftp)", name, u.Scheme)
		}
		if u.Host == "" {
			return "", fmt.Errorf("%s has no host", name)
		}
		if bad := unsafeScriptChars(name); bad != "" {
			return "", fmt.Errorf("%s: the %s is not allowed in an iPXE URL", name, bad)
		}
		if strings.ContainsAny(name, " \t") {
			return "", fmt.Errorf("%s: spaces are not allowed in an iPXE URL", name)
		}
		return name, nil
	}
	if !ValidTreePath(name) {
		return "", fmt.Errorf("%s is neither an http(s) or tftp URL nor a relative file name without ..", name)
	}
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	u := base + "/installer/" + strings.Join(segs, "/")
	if bad := unsafeScriptChars(u); bad != "" {
		return "", fmt.Errorf("%s: the %s is not allowed in an iPXE URL", name, bad)
	}
	return u, nil
}

// initrdName is the name iPXE gives the initrd: the last element of the
// URL's path, or "initrd" when there is none.
func initrdName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "initrd"
	}
	n := path.Base(u.Path)
	if n == "." || n == "/" || n == "" || unsafeScriptChars(n) != "" || strings.ContainsAny(n, " %") {
		return "initrd"
	}
	return n
}

// scriptSpecial names the characters iPXE's script parser interprets: "${"
// expands a setting, "&&" and "||" chain commands, quotes and backslashes
// change word splitting.
var scriptSpecial = map[rune]string{
	'$': "dollar sign", '&': "ampersand", '|': "vertical bar", '"': "double quote",
	'\'': "single quote", '\\': "backslash", '`': "backquote",
}

// unsafeScriptChars names the first character of s that iPXE would
// interpret or that would end the line, or returns "" when there is none.
func unsafeScriptChars(s string) string {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return "control character"
		}
		if name, ok := scriptSpecial[r]; ok {
			return name
		}
	}
	return ""
}

// oneLine makes s safe for a comment or an echo line: control and special
// characters become spaces, so nothing breaks the line or is expanded.
func oneLine(s string) string {
	var b strings.Builder
	for _, r := range s {
		if _, special := scriptSpecial[r]; special || r < 0x20 || r == 0x7f {
			r = ' '
		}
		b.WriteRune(r)
	}
	return b.String()
}

package ipxe

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/gitmetal/gitmetal/reconciler/store"

	"github.com/gitmetal/gitmetal/schema"
)

// ourExpansions are the only settings gitmetal's own scripts expand.
var ourExpansions = regexp.MustCompile(`\$\{(kernel|initrd|chain)-tries\}`)

// checkScript fails when a generated script could do something its inputs
// did not intend: a line break, a control character or a setting
// expansion that gitmetal did not write.
func checkScript(t *testing.T, script string) {
	t.Helper()
	if !strings.HasPrefix(script, "#!ipxe\n") || !strings.HasSuffix(script, "\n") {
		t.Fatalf("script lacks the magic line or the final newline:\n%s", script)
	}
	for _, line := range strings.Split(strings.TrimSuffix(script, "\n"), "\n") {
		for _, r := range line {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("control character %q in line %q", r, line)
			}
		}
		rest := ourExpansions.ReplaceAllString(line, "")
		for _, c := range []string{"$", `"`, "'", `\`, "`"} {
			if strings.Contains(rest, c) {
				t.Fatalf("%s in line %q", c, line)
			}
		}
		// && and || only in gitmetal's own retry and boot lines.
		if (strings.Contains(rest, "&") || strings.Contains(rest, "|")) &&
			!strings.HasSuffix(line, "||") && !strings.HasSuffix(line, "|| goto failed") {
			t.Fatalf("command chaining in line %q", line)
		}
	}
}

func FuzzScripts(f *testing.F) {
	f.Add("vmlinuz", "initramfs.cpio.gz", "console=ttyS0", "http://x/y.ipxe", "web-01", "dir:abc")
	f.Add("https://h/k?x=1", "v2/init rd", "a=${b} && reboot", "http://x/$(id)", "m\nshell", "rev\n#!ipxe")
	f.Add("../k", "/abs", "a\"b'c\\d`e", "tftp://h/f|x", "name", "")
	f.Fuzz(func(t *testing.T, kernel, initrd, args, chainURL, name, rev string) {
		iface := &schema.Interface{MAC: "52:54:00:00:00:01", Netboot: schema.Netboot{AllowPXE: true,
			Installer: &schema.Installer{Kernel: kernel, Initrd: initrd, Args: args}}}
		in := scriptInput{Revision: rev, Hardware: name, MAC: iface.MAC, Reason: "fuzz " + args}
		inst, problem := resolveInstaller(base, iface, nil, "tok")
		if problem != "" {
			checkScript(t, misconfiguredScript(in, problem))
		} else {
			checkScript(t, installerScript(in, inst))
		}
		checkScript(t, localDiskScript(in))
		if unsafeScriptChars(chainURL) == "" && !strings.ContainsAny(chainURL, " \t") {
			checkScript(t, chainScript(in, chainURL))
		}
	})
}

func TestCustomScriptKeepsOperatorText(t *testing.T) {
	t.Parallel()
	in := scriptInput{Revision: "r1", Hardware: "m", MAC: "52:54:00:00:00:01", Reason: "netboot.ipxe.script"}
	tests := map[string]string{
		"echo ${net0/mac}":         "echo ${net0/mac}\n",
		"#!ipxe\necho a":           "echo a\n",
		"#!ipxe  \r\necho a\r\n":   "echo a\r\n",
		"#!ipxe":                   "",
		"  #!ipxe\necho not magic": "  #!ipxe\necho not magic\n",
	}
	for script, body := range tests {
		want := "#!ipxe\n# gitmetal revision r1\n# machine m interface 52:54:00:00:00:01: netboot.ipxe.script\n" + body
		if got := customScript(in, script); got != want {
			t.Errorf("customScript(%q):\ngot  %q\nwant %q", script, got, want)
		}
	}
}

func TestDiscoveryScript(t *testing.T) {
	t.Parallel()
	h, err := New(Config{Store: store.TestStore(t, nil), Installs: NoInstalls{}, HTTPBase: "http://10.0.0.1:8080"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mux := http.NewServeMux()
	h.Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ipxe/discover.ipxe", nil))
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Body.String(), "#!ipxe\n") || !strings.Contains(rec.Body.String(), "${net0/mac}") {
		t.Errorf("got %d:\n%s", rec.Code, rec.Body)
	}
}

package ipxe

import (
	"context"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

var update = flag.Bool("update", false, "rewrite the golden scripts under testdata/")

const base = "http://10.0.0.1:8080"

// fakeRunner is the runner's side of Installs for tests: machines listed
// have a run with the given token.
type fakeRunner struct {
	mu     sync.Mutex
	tokens map[string]string // by MAC
	err    error
	calls  int
}

func (f *fakeRunner) Install(_ context.Context, hw *schema.Hardware, mac string) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return "", false, f.err
	}
	if hw == nil || findInterface(hw, mac) == nil {
		return "", false, errors.New("Install called with a MAC the machine does not have")
	}
	t, ok := f.tokens[mac]
	return t, ok, nil
}

func machine(name, mac, ip string, nb schema.Netboot) *schema.Hardware {
	return &schema.Hardware{Name: name, Interfaces: []schema.Interface{{
		MAC: mac, IP: ip, Arch: "x86_64", LeaseTime: 3600, Netboot: nb,
	}}}
}

// testFleet holds one machine per script variant.
func testFleet() *schema.Fleet {
	pxe := schema.Netboot{AllowPXE: true}
	hw := []*schema.Hardware{
		machine("local", "52:54:00:00:00:01", "10.0.0.11/24", pxe),
		machine("no-pxe", "52:54:00:00:00:02", "10.0.0.12/24", schema.Netboot{AllowPXE: false}),
		machine("script", "52:54:00:00:00:03", "10.0.0.13/24", schema.Netboot{AllowPXE: true,
			IPXE: &schema.IPXE{Script: "echo hello from the repository\nshell"}}),
		machine("script-magic", "52:54:00:00:00:04", "10.0.0.14/24", schema.Netboot{AllowPXE: true,
			IPXE: &schema.IPXE{Script: "#!ipxe\r\ndhcp\nchain http://boot.example.net/menu.ipxe\n"}}),
		machine("chain", "52:54:00:00:00:05", "10.0.0.15/24", schema.Netboot{AllowPXE: true,
			IPXE: &schema.IPXE{URL: "http://boot.example.net/custom.ipxe"}}),
		machine("install", "52:54:00:00:00:06", "10.0.0.16/24", pxe),
		machine("install-override", "52:54:00:00:00:07", "10.0.0.17/24", schema.Netboot{AllowPXE: true,
			Installer: &schema.Installer{Kernel: "https://images.example.net/arm64/vmlinuz", Initrd: "https://images.example.net/arm64/initramfs-arm64.cpio.gz?v=2", Args: "console=ttyAMA0,115200  quiet"}}),
		machine("install-subdir", "52:54:00:00:00:08", "10.0.0.18/24", schema.Netboot{AllowPXE: true,
			Installer: &schema.Installer{Kernel: "v2/vmlinuz", Initrd: "v2/initramfs v2.cpio.gz"}}),
		machine("install-bad-args", "52:54:00:00:00:09", "10.0.0.19/24", schema.Netboot{AllowPXE: true,
			Installer: &schema.Installer{Args: "root=${evil}"}}),
		machine("install-bad-kernel", "52:54:00:00:00:0a", "10.0.0.20/24", schema.Netboot{AllowPXE: true,
			Installer: &schema.Installer{Kernel: "../../etc/shadow"}}),
		machine("no-pxe-pending", "52:54:00:00:00:0b", "10.0.0.21/24", schema.Netboot{AllowPXE: false}),
	}
	// A second interface, to check the right one is used.
	hw[5].Interfaces = append(hw[5].Interfaces, schema.Interface{MAC: "52:54:00:00:01:06", IP: "10.0.1.16/24", Arch: "x86_64", LeaseTime: 3600, Netboot: pxe})
	f := &schema.Fleet{
		Settings: &schema.Settings{LeaseTime: 3600, Installer: &schema.Installer{
			Kernel: "vmlinuz", Initrd: "initramfs.cpio.gz", Args: "console=tty0 console=ttyS0,115200n8",
		}},
		Hardware:  map[string]*schema.Hardware{},
		Templates: map[string]*schema.Template{},
		Workflows: map[string]*schema.Workflow{},
	}
	for _, h := range hw {
		f.Hardware[h.Name] = h
	}
	return f
}

func pending() *fakeRunner {
	return &fakeRunner{tokens: map[string]string{
		"52:54:00:00:00:06": "tok-0006", "52:54:00:00:00:07": "tok-0007", "52:54:00:00:00:08": "tok-0008",
		"52:54:00:00:00:09": "tok-0009", "52:54:00:00:00:0a": "tok-000a", "52:54:00:00:00:0b": "tok-000b",
		"52:54:00:00:01:06": "tok-0106",
	}}
}

func newHandler(t *testing.T, cfg Config) (*Handler, *http.ServeMux) {
	t.Helper()
	if cfg.HTTPBase == "" {
		cfg.HTTPBase = base + "/"
	}
	cfg.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	mux := http.NewServeMux()
	h.Register(mux)
	return h, mux
}

// get serves one request from remote and returns the status and body.
func get(mux http.Handler, path, remote string, header ...string) (int, string, http.Header) {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = remote
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String(), rec.Header()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name+".ipxe")
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("script %s differs from %s (-want +got):\n%s", name, p, diff)
	}
}

// TestScriptGolden serves every script variant and compares it with its
// golden file.
func TestScriptGolden(t *testing.T) {
	t.Parallel()
	_, mux := newHandler(t, Config{Store: store.TestStore(t, testFleet()), Installs: pending()})
	tests := []struct {
		golden, mac string
	}{
		{"local-disk", "52:54:00:00:00:01"},
		{"allowpxe-false", "52:54:00:00:00:02"},
		{"allowpxe-false-with-run", "52:54:00:00:00:0b"},
		{"custom-script", "52:54:00:00:00:03"},
		{"custom-script-with-magic", "52:54:00:00:00:04"},
		{"chain-url", "52:54:00:00:00:05"},
		{"installer", "52:54:00:00:00:06"},
		{"installer-second-interface", "52:54:00:00:01:06"},
		{"installer-absolute-urls", "52:54:00:00:00:07"},
		{"installer-subdir", "52:54:00:00:00:08"},
		{"misconfigured-args", "52:54:00:00:00:09"},
		{"misconfigured-kernel", "52:54:00:00:00:0a"},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			t.Parallel()
			code, body, hdr := get(mux, "/ipxe/"+tc.mac+"/boot.ipxe", "10.9.9.9:1000")
			if code != http.StatusOK {
				t.Fatalf("got status %d (%s), want 200", code, body)
			}
			if got := hdr.Get("Cache-Control"); got != "no-store" {
				t.Errorf("got Cache-Control %q, want no-store", got)
			}
			if !strings.HasPrefix(body, "#!ipxe\n# gitmetal revision test\n") {
				t.Errorf("script does not start with the magic line and the revision:\n%s", body)
			}
			golden(t, tc.golden, body)
		})
	}
}

func TestInstallerNotConfigured(t *testing.T) {
	t.Parallel()
	f := testFleet()
	f.Settings = &schema.Settings{LeaseTime: 3600}
	_, mux := newHandler(t, Config{Store: store.TestStore(t, f), Installs: pending()})
	code, body, _ := get(mux, "/ipxe/52:54:00:00:00:06/boot.ipxe", "10.9.9.9:1000")
	if code != http.StatusOK {
		t.Fatalf("got status %d, want 200", code)
	}
	golden(t, "misconfigured-no-installer", body)
}

func TestScriptByMACForms(t *testing.T) {
	t.Parallel()
	_, mux := newHandler(t, Config{Store: store.TestStore(t, testFleet()), Installs: NoInstalls{}})
	tests := []struct {
		path string
		code int
		has  string
	}{
		{"/ipxe/52:54:00:00:00:01/boot.ipxe", 200, "interface 52:54:00:00:00:01"},
		{"/ipxe/52-54-00-00-00-01/boot.ipxe", 200, "interface 52:54:00:00:00:01"},
		{"/ipxe/52:54:00:00:00:0A/boot.ipxe", 200, "machine install-bad-kernel"},
		{"/ipxe/52:54:00:00:00:ff/boot.ipxe", 404, "unknown machine"},
		{"/ipxe/nonsense/boot.ipxe", 400, "not a MAC address"},
		{"/ipxe/00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01/boot.ipxe", 400, "not a MAC address"},
		{"/ipxe/52:54:00:00:00:01/other.ipxe", 404, "not found"},
		{"/ipxe/52:54:00:00:00:01/", 404, "not found"},
	}
	for _, tc := range tests {
		code, body, _ := get(mux, tc.path, "10.9.9.9:1000")
		if code != tc.code || !strings.Contains(body, tc.has) {
			t.Errorf("GET %s: got %d %q, want %d containing %q", tc.path, code, body, tc.code, tc.has)
		}
	}
}

// TestNoInstallsBootsLocalDisk: without a runner every PXE machine is told
// to boot its disk, and no machine gets an installer.
func TestNoInstallsBootsLocalDisk(t *testing.T) {
	t.Parallel()
	_, mux := newHandler(t, Config{Store: store.TestStore(t, testFleet()), Installs: NoInstalls{}})
	code, body, _ := get(mux, "/ipxe/52:54:00:00:00:06/boot.ipxe", "10.9.9.9:1000")
	if code != 200 || !strings.Contains(body, "no workflow run pending") || strings.Contains(body, "kernel") {
		t.Errorf("got %d:\n%s\nwant the local-disk script", code, body)
	}
}

func TestScriptByIP(t *testing.T) {
	t.Parallel()
	proxies := []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24"), netip.MustParsePrefix("fd00::/8")}
	_, mux := newHandler(t, Config{Store: store.TestStore(t, testFleet()), Installs: pending(), TrustedProxies: proxies})
	tests := []struct {
		name, remote string
		xff          []string
		code         int
		machine      string
	}{
		{"direct", "10.0.0.11:40000", nil, 200, "machine local interface 52:54:00:00:00:01"},
		{"direct second interface", "10.0.1.16:40000", nil, 200, "machine install interface 52:54:00:00:01:06"},
		{"v4-mapped", "[::ffff:10.0.0.13]:40000", nil, 200, "machine script interface"},
		{"unknown", "10.0.0.99:40000", nil, 404, "unknown machine"},
		{"untrusted proxy ignored", "10.0.0.99:40000", []string{"10.0.0.11"}, 404, "unknown machine"},
		{"machine cannot pose as another", "10.0.0.11:40000", []string{"10.0.0.16"}, 200, "machine local interface"},
		{"trusted proxy", "192.168.50.1:40000", []string{"10.0.0.16"}, 200, "machine install interface 52:54:00:00:00:06"},
		{"trusted proxy chain", "192.168.50.1:40000", []string{"203.0.113.9, 10.0.0.16, 192.168.50.7"}, 200, "machine install interface 52:54:00:00:00:06"},
		{"trusted proxy two headers", "[fd00::1]:40000", []string{"10.0.0.12", "192.168.50.2"}, 200, "machine no-pxe interface"},
		{"trusted proxy no header", "192.168.50.1:40000", nil, 404, "unknown machine"},
		{"trusted proxy bad header", "192.168.50.1:40000", []string{"not-an-ip"}, 400, "not an address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var hdr []string
			for _, x := range tc.xff {
				hdr = append(hdr, "X-Forwarded-For", x)
			}
			code, body, _ := get(mux, "/ipxe/boot.ipxe", tc.remote, hdr...)
			if code != tc.code || !strings.Contains(body, tc.machine) {
				t.Errorf("got %d:\n%s\nwant %d containing %q", code, body, tc.code, tc.machine)
			}
		})
	}
}

// TestNextRequestSeesNewRevision applies a commit that turns PXE off and
// checks the next request gets the new script with the new revision.
func TestNextRequestSeesNewRevision(t *testing.T) {
	t.Parallel()
	st, err := store.New()
	if err != nil {
		t.Fatal(err)
	}
	f1 := testFleet()
	if _, err := st.Apply("rev-one", f1); err != nil {
		t.Fatal(err)
	}
	_, mux := newHandler(t, Config{Store: st, Installs: pending()})
	_, body, _ := get(mux, "/ipxe/52:54:00:00:00:06/boot.ipxe", "10.9.9.9:1")
	if !strings.Contains(body, "# gitmetal revision rev-one\n") || !strings.Contains(body, "kernel ") {
		t.Fatalf("before the commit: got\n%s\nwant the installer at rev-one", body)
	}
	f2 := testFleet()
	f2.Hardware["install"] = machine("install", "52:54:00:00:00:06", "10.0.0.16/24", schema.Netboot{AllowPXE: false})
	if _, err := st.Apply("rev-two", f2); err != nil {
		t.Fatal(err)
	}
	_, body, _ = get(mux, "/ipxe/52:54:00:00:00:06/boot.ipxe", "10.9.9.9:1")
	if !strings.Contains(body, "# gitmetal revision rev-two\n") || !strings.Contains(body, "allowPXE is false") {
		t.Errorf("after the commit: got\n%s\nwant the local-disk script at rev-two", body)
	}
}

func TestRunnerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		run  *fakeRunner
	}{
		{"error", &fakeRunner{err: errors.New("journal unavailable")}},
		{"bad token", &fakeRunner{tokens: map[string]string{"52:54:00:00:00:06": "a b$c"}}},
		{"empty token", &fakeRunner{tokens: map[string]string{"52:54:00:00:00:06": ""}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, mux := newHandler(t, Config{Store: store.TestStore(t, testFleet()), Installs: tc.run})
			code, body, hdr := get(mux, "/ipxe/52:54:00:00:00:06/boot.ipxe", "10.9.9.9:1")
			if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || strings.Contains(body, "#!ipxe") {
				t.Errorf("got %d %q, want 503 with Retry-After and no script", code, body)
			}
		})
	}
	// allowPXE false and per-interface scripts never ask the runner.
	run := pending()
	_, mux := newHandler(t, Config{Store: store.TestStore(t, testFleet()), Installs: run})
	for _, mac := range []string{"52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:05"} {
		get(mux, "/ipxe/"+mac+"/boot.ipxe", "10.9.9.9:1")
	}
	if run.calls != 0 {
		t.Errorf("got %d runner calls, want 0", run.calls)
	}
}

type panicky struct{}

func (panicky) Install(context.Context, *schema.Hardware, string) (string, bool, error) {
	panic("runner bug")
}

func TestPanicIsA500(t *testing.T) {
	t.Parallel()
	_, mux := newHandler(t, Config{Store: store.TestStore(t, testFleet()), Installs: panicky{}})
	code, _, _ := get(mux, "/ipxe/52:54:00:00:00:06/boot.ipxe", "10.9.9.9:1")
	if code != http.StatusInternalServerError {
		t.Errorf("got %d, want 500", code)
	}
	if code, _, _ := get(mux, "/ipxe/52:54:00:00:00:02/boot.ipxe", "10.9.9.9:1"); code != 200 {
		t.Errorf("next request: got %d, want 200", code)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	st := store.TestStore(t, nil)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no store", Config{Installs: NoInstalls{}, HTTPBase: base}, "Store and Installs are required"},
		{"no installs", Config{Store: st, HTTPBase: base}, "Store and Installs are required"},
		{"no base", Config{Store: st, Installs: NoInstalls{}}, "HTTPBase"},
		{"relative base", Config{Store: st, Installs: NoInstalls{}, HTTPBase: "10.0.0.1:8080"}, "HTTPBase"},
		{"ftp base", Config{Store: st, Installs: NoInstalls{}, HTTPBase: "ftp://10.0.0.1"}, "HTTPBase"},
		{"base with query", Config{Store: st, Installs: NoInstalls{}, HTTPBase: "http://10.0.0.1/?a=b"}, "HTTPBase"},
		{"base with dollar", Config{Store: st, Installs: NoInstalls{}, HTTPBase: "http://10.0.0.1/${x}"}, "HTTPBase"},
		{"missing ipxe dir", Config{Store: st, Installs: NoInstalls{}, HTTPBase: base, IPXEDir: "/nonexistent/ipxe"}, "no such file"},
		{"missing installer dir", Config{Store: st, Installs: NoInstalls{}, HTTPBase: base, InstallerDir: "/nonexistent/inst"}, "no such file"},
		{"bad proxy", Config{Store: st, Installs: NoInstalls{}, HTTPBase: base, TrustedProxies: []netip.Prefix{{}}}, "trusted proxy"},
	}
	for _, tc := range tests {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestScriptURL(t *testing.T) {
	t.Parallel()
	h, _ := newHandler(t, Config{Store: store.TestStore(t, nil), Installs: NoInstalls{}})
	if got, want := h.ScriptURL("52:54:00:00:00:01"), "http://10.0.0.1:8080/ipxe/52:54:00:00:00:01/boot.ipxe"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestWriteMetrics(t *testing.T) {
	t.Parallel()
	h, mux := newHandler(t, Config{Store: store.TestStore(t, testFleet()), Installs: pending()})
	get(mux, "/ipxe/52:54:00:00:00:06/boot.ipxe", "10.9.9.9:1")
	get(mux, "/ipxe/52:54:00:00:00:01/boot.ipxe", "10.9.9.9:1")
	get(mux, "/ipxe/52:54:00:00:00:ff/boot.ipxe", "10.9.9.9:1")
	var b strings.Builder
	if err := h.WriteMetrics(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`gitmetal_ipxe_scripts_total{kind="installer"} 1`,
		`gitmetal_ipxe_scripts_total{kind="local-disk"} 1`,
		`gitmetal_ipxe_not_found_total 1`,
	} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
}

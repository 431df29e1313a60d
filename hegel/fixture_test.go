package hegel

import (
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// The test fleet's addresses. Web and DB are machines; Unknown is no
// machine's; Proxy is in the trusted proxies of proxyConfig.
const (
	webAddr     = "10.77.1.2"
	webAddr2    = "10.78.0.2"
	dbAddr      = "10.77.1.3"
	unknownAddr = "10.77.1.9"
	proxyAddr   = "10.77.9.1"
	proxyNet    = "10.77.9.0/24"
)

// Markers that only one machine's answers contain. An answer to web-01
// that contains one of dbMarkers (or the reverse) is a leak.
var (
	webMarkers = []string{"web-01", "52:54:00:00:01:01", webAddr, "i-web01", "web-user-data", "203.0.113.10", "alice@example", "c3.small"}
	dbMarkers  = []string{"db-01", "52:54:00:00:02:01", dbAddr, "db-vendor-data", instanceID(&schema.Hardware{Name: "db-01"})}
)

// testFleet returns the fleet the tests serve: web-01 with everything
// (two interfaces, keys, labels, Equinix-shaped metadata, user-data, a
// BMC that must not be served), db-01 with little (no keys, no user-data,
// DHCP disabled so it declares a network config).
func testFleet() *schema.Fleet {
	web := &schema.Hardware{
		Name:   "web-01",
		Site:   "dc1",
		Labels: map[string]string{"role": "web", "rack": "r01", "example.com/tier": "hidden"},
		Interfaces: []schema.Interface{
			{
				MAC: "52:54:00:00:01:01", IP: webAddr + "/16", Gateway: "10.77.0.1",
				Hostname: "web-01", Domain: "lab.example", Nameservers: []string{"10.77.0.53"},
				Arch: "x86_64", LeaseTime: 3600,
			},
			{MAC: "52:54:00:00:01:02", IP: webAddr2 + "/24", Arch: "x86_64", LeaseTime: 3600},
		},
		Disks: []schema.Disk{{Device: "/dev/disk/by-id/ata-web"}},
		Metadata: map[string]any{
			"instance": map[string]any{
				"id":       "i-web01",
				"hostname": "ignored-when-interfaces-have-one",
				"tags":     []any{"frontend", "prod"},
				"network": map[string]any{"addresses": []any{
					map[string]any{"address": "203.0.113.10", "public": true, "address_family": float64(4)},
					map[string]any{"address": webAddr, "public": false, "address_family": float64(4)},
				}},
				"storage": map[string]any{"disks": []any{
					map[string]any{"device": "/dev/sda", "size": float64(480)},
				}},
			},
			"facility":      map[string]any{"facility_code": "lab1", "plan_slug": "c3.small"},
			"hostname":      "shadowed-by-hegel",
			"bad/key":       "not a path segment",
			"nothing":       nil,
			"spot":          false,
			"network-extra": []any{float64(1), "two"},
		},
		UserData: "#cloud-config\n# web-user-data\nhostname: web-01\n",
		SSHKeys: []string{
			"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHdlYjAxa2V5b25lZm9ydGVzdHNvbmx5 alice@example",
			"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDweb01 ",
		},
		BMC: &schema.BMC{Address: "10.99.0.1", Protocol: "redfish", Username: "bmc-secret-user"},
	}
	db := &schema.Hardware{
		Name: "db-01",
		Site: "dc1",
		Interfaces: []schema.Interface{{
			MAC: "52:54:00:00:02:01", IP: dbAddr + "/16", Gateway: "10.77.0.1",
			Hostname: "db-01", Nameservers: []string{"10.77.0.53"}, SearchDomains: []string{"lab.example"},
			Arch: "aarch64", LeaseTime: 3600, DisableDHCP: true,
		}},
		VendorData: "#cloud-config\n# db-vendor-data\n",
	}
	return &schema.Fleet{
		Settings:  schema.DefaultSettings(),
		Hardware:  map[string]*schema.Hardware{web.Name: web, db.Name: db},
		Templates: map[string]*schema.Template{},
		Workflows: map[string]*schema.Workflow{},
	}
}

// withHardware returns a copy of f with h in place of the machine of the
// same name (the store sees a changed machine).
func withHardware(f *schema.Fleet, h *schema.Hardware) *schema.Fleet {
	g := *f
	g.Hardware = make(map[string]*schema.Hardware, len(f.Hardware))
	for k, v := range f.Hardware {
		g.Hardware[k] = v
	}
	g.Hardware[h.Name] = h
	return &g
}

// fakeClock is a settable clock for token expiry.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// newTestServer returns a Server over a store holding testFleet, with
// proxyNet trusted, and the store.
func newTestServer(t testing.TB, mod func(*Config)) (*Server, *store.Store) {
	t.Helper()
	s, st, _ := newTestServerFleet(t, mod)
	return s, st
}

// newTestServerFleet is newTestServer that also returns the fleet in the
// store, to derive the next revisions from: a fleet rebuilt with
// testFleet would change every machine, as far as the store can tell.
func newTestServerFleet(t testing.TB, mod func(*Config)) (*Server, *store.Store, *schema.Fleet) {
	t.Helper()
	f := testFleet()
	st := store.TestStore(t, f)
	cfg := Config{
		Store:          st,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix(proxyNet)},
		Log:            zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	t.Cleanup(s.Close)
	return s, st, f
}

// answer is what a test looks at in a response.
type answer struct {
	Status int
	Type   string
	Body   string
	Header http.Header
}

// do sends a request to h as if from addr, with headers in pairs.
func do(t *testing.T, h http.Handler, method, addr, target string, headers ...string) answer {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	r.RemoteAddr = netip.AddrPortFrom(netip.MustParseAddr(addr), 40000).String()
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	res := w.Result()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{Status: res.StatusCode, Type: res.Header.Get("Content-Type"), Body: string(b), Header: res.Header}
}

// leaks returns the markers of the other machine found in body.
func leaks(body string, others []string) []string {
	var found []string
	for _, m := range others {
		if strings.Contains(body, m) {
			found = append(found, m)
		}
	}
	return found
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s: mismatch (-want +got):\n%s", p, diff)
	}
}

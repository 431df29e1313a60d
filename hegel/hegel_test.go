package hegel

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-memdb"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	st := store.TestStore(t, nil)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for no error
	}{
		{"no store", Config{}, "store is required"},
		{"invalid prefix", Config{Store: st, TrustedProxies: []netip.Prefix{{}}}, "not a valid prefix"},
		{"mapped prefix", Config{Store: st, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}}, "IPv4 form"},
		{"negative wait", Config{Store: st, MaxWait: -time.Second}, "positive duration"},
		{"defaults", Config{Store: st}, ""},
		{"unmasked prefix", Config{Store: st, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := New(tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got error %v, want none", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			case err == nil:
				s.Close()
			}
		})
	}
}

// TestEC2Tree checks the EC2 tree answer by answer, from each machine's
// address.
func TestEC2Tree(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, nil)
	h := s.Handler()
	dbID := instanceID(&schema.Hardware{Name: "db-01"})
	for _, tc := range []struct {
		addr, path string
		status     int
		ctype      string
		body       string
	}{
		{webAddr, "/", 200, typeText, "2009-04-04\nlatest"},
		{webAddr, "/latest", 200, typeText, "meta-data\nuser-data"},
		{webAddr, "/latest/", 200, typeText, "meta-data\nuser-data"},
		{dbAddr, "/2009-04-04/", 200, typeText, "meta-data\nvendor-data"},
		{webAddr, "/latest/meta-data/", 200, typeText, strings.Join([]string{
			"facility/", "hostname", "instance-id", "instance/", "local-hostname", "local-ipv4", "mac",
			"network-extra", "network/", "placement/", "public-ipv4", "public-keys/", "spot", "tags/"}, "\n")},
		{webAddr, "/latest/meta-data", 200, typeText, ""}, // body checked equal to the above below
		{dbAddr, "/2009-04-04/meta-data/", 200, typeText, "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/"},
		{webAddr, "/latest/meta-data/instance-id", 200, typeText, "i-web01"},
		{dbAddr, "/latest/meta-data/instance-id", 200, typeText, dbID},
		{webAddr, "/latest/meta-data/hostname", 200, typeText, "web-01.lab.example"},
		{webAddr, "/2009-04-04/meta-data/local-hostname", 200, typeText, "web-01.lab.example"},
		{dbAddr, "/latest/meta-data/hostname", 200, typeText, "db-01"},
		{webAddr, "/latest/meta-data/local-ipv4", 200, typeText, webAddr},
		{webAddr2, "/latest/meta-data/local-ipv4", 200, typeText, webAddr2},
		{webAddr2, "/latest/meta-data/mac", 200, typeText, "52:54:00:00:01:02"},
		{webAddr2, "/latest/meta-data/hostname", 200, typeText, "web-01.lab.example"},
		{webAddr, "/latest/meta-data/public-ipv4", 200, typeText, "203.0.113.10"},
		{dbAddr, "/latest/meta-data/public-ipv4", 404, typeText, bodyNotFound},
		{webAddr, "/latest/meta-data/mac", 200, typeText, "52:54:00:00:01:01"},
		{webAddr, "/latest/meta-data/network/", 200, typeText, "interfaces/"},
		{webAddr, "/latest/meta-data/network/interfaces/macs/", 200, typeText, "52:54:00:00:01:01/\n52:54:00:00:01:02/"},
		{webAddr, "/latest/meta-data/network/interfaces/macs/52:54:00:00:01:01/", 200, typeText,
			"device-number\nlocal-hostname\nlocal-ipv4s\nmac\nsubnet-ipv4-cidr-block"},
		{webAddr, "/latest/meta-data/network/interfaces/macs/52:54:00:00:01:02", 200, typeText,
			"device-number\nlocal-ipv4s\nmac\nsubnet-ipv4-cidr-block"},
		{webAddr, "/latest/meta-data/network/interfaces/macs/52:54:00:00:01:02/device-number", 200, typeText, "1"},
		{webAddr, "/latest/meta-data/network/interfaces/macs/52:54:00:00:01:01/subnet-ipv4-cidr-block", 200, typeText, "10.77.0.0/16"},
		{webAddr, "/latest/meta-data/network/interfaces/macs/52:54:00:00:01:01/local-hostname", 200, typeText, "web-01.lab.example"},
		{webAddr, "/latest/meta-data/network/interfaces/macs/52:54:00:00:01:02/local-hostname", 404, typeText, bodyNotFound},
		{webAddr, "/latest/meta-data/public-keys/", 200, typeText, "0=alice@example\n1=key-1"},
		{webAddr, "/latest/meta-data/public-keys/0/", 200, typeText, "openssh-key"},
		{webAddr, "/latest/meta-data/public-keys/0/openssh-key", 200, typeText,
			"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHdlYjAxa2V5b25lZm9ydGVzdHNvbmx5 alice@example"},
		{webAddr, "/latest/meta-data/public-keys/1/openssh-key", 200, typeText, "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDweb01"},
		{webAddr, "/latest/meta-data/public-keys/2/openssh-key", 404, typeText, bodyNotFound},
		{webAddr, "/latest/meta-data/public-keys/00/openssh-key", 404, typeText, bodyNotFound},
		{dbAddr, "/latest/meta-data/public-keys/", 404, typeText, bodyNotFound},
		{webAddr, "/latest/meta-data/placement/", 200, typeText, "availability-zone"},
		{webAddr, "/latest/meta-data/placement/availability-zone", 200, typeText, "dc1"},
		{webAddr, "/latest/meta-data/tags/", 200, typeText, "instance/"},
		{webAddr, "/latest/meta-data/tags/instance", 200, typeText, "rack\nrole"},
		{webAddr, "/latest/meta-data/tags/instance/role", 200, typeText, "web"},
		{webAddr, "/latest/meta-data/tags/instance/example.com", 404, typeText, bodyNotFound},
		{dbAddr, "/latest/meta-data/tags/", 404, typeText, bodyNotFound},
		// The free-form metadata, as nested paths.
		{webAddr, "/latest/meta-data/instance/", 200, typeText, "hostname\nid\nnetwork/\nstorage/\ntags"},
		{webAddr, "/latest/meta-data/instance/tags", 200, typeText, "frontend\nprod"},
		{webAddr, "/latest/meta-data/instance/network/addresses/", 200, typeText, "0/\n1/"},
		{webAddr, "/latest/meta-data/instance/network/addresses/0/", 200, typeText, "address\naddress_family\npublic"},
		{webAddr, "/latest/meta-data/instance/network/addresses/0/address_family", 200, typeText, "4"},
		{webAddr, "/latest/meta-data/instance/storage/disks/0/size", 200, typeText, "480"},
		{webAddr, "/latest/meta-data/facility/plan_slug", 200, typeText, "c3.small"},
		{webAddr, "/latest/meta-data/spot", 200, typeText, "false"},
		{webAddr, "/latest/meta-data/network-extra", 200, typeText, "1\ntwo"},
		{webAddr, "/latest/meta-data/nothing", 404, typeText, bodyNotFound},
		{webAddr, "/latest/meta-data/instance/id/", 404, typeText, bodyNotFound},
		{webAddr, "/latest/meta-data/instance//id", 404, typeText, bodyNotFound},
		{webAddr, "/latest/meta-data/instance/tags/0", 404, typeText, bodyNotFound},
		{webAddr, "/latest/meta-data/instance/network/addresses/2", 404, typeText, bodyNotFound},
		// Data.
		{webAddr, "/latest/user-data", 200, typeBinary, "#cloud-config\n# web-user-data\nhostname: web-01\n"},
		{webAddr, "/2009-04-04/user-data", 200, typeBinary, "#cloud-config\n# web-user-data\nhostname: web-01\n"},
		{dbAddr, "/latest/user-data", 404, typeText, bodyNotFound},
		{webAddr, "/latest/vendor-data", 404, typeText, bodyNotFound},
		{dbAddr, "/latest/vendor-data", 200, typeBinary, "#cloud-config\n# db-vendor-data\n"},
		// Nothing is listed outside the tree.
		{webAddr, "/nocloud/", 404, typeText, bodyNotFound},
		{webAddr, "/v1/", 404, typeText, bodyNotFound},
		{webAddr, "/latest/dynamic/", 404, typeText, bodyNotFound},
		{webAddr, "/2021-03-23/meta-data/instance-id", 404, typeText, bodyNotFound},
		{webAddr, "/favicon.ico", 404, typeText, bodyNotFound},
	} {
		got := do(t, h, http.MethodGet, tc.addr, tc.path)
		if got.Status != tc.status || got.Type != tc.ctype {
			t.Errorf("GET %s from %s: got %d %s, want %d %s", tc.path, tc.addr, got.Status, got.Type, tc.status, tc.ctype)
		}
		if tc.body != "" && got.Body != tc.body {
			t.Errorf("GET %s from %s: got body %q, want %q", tc.path, tc.addr, got.Body, tc.body)
		}
		if rev := got.Header.Get(HeaderRevision); rev != store.TestRevision {
			t.Errorf("GET %s from %s: got revision %q, want %q", tc.path, tc.addr, rev, store.TestRevision)
		}
	}
	a, b := do(t, h, "GET", webAddr, "/latest/meta-data"), do(t, h, "GET", webAddr, "/latest/meta-data/")
	if a.Body != b.Body {
		t.Errorf("meta-data without slash: got %q, want the listing %q", a.Body, b.Body)
	}
}

// TestUnknownCallerLearnsNothing: a caller that is no machine gets, for
// every path, exactly the 404 a machine gets for a path that does not
// exist.
func TestUnknownCallerLearnsNothing(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, nil)
	h := s.Handler()
	want := do(t, h, "GET", webAddr, "/no/such/path")
	want.Header.Del("Date")
	for _, path := range []string{"/", "/latest/meta-data/", "/latest/meta-data/hostname", "/latest/user-data",
		"/nocloud/meta-data", "/metadata", "/v1/metadata?index=0", "/no/such/path"} {
		for _, m := range []string{"GET", "HEAD", "PUT", "DELETE"} {
			got := do(t, h, m, unknownAddr, path, HeaderTokenTTL, "60")
			got.Header.Del("Date")
			if m == "HEAD" {
				got.Body = want.Body // a HEAD answer has no body
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s %s from an unknown address: differs from a missing path (-want +got):\n%s", m, path, diff)
			}
		}
	}
	// Not even a trusted proxy can find out through X-Forwarded-For.
	got := do(t, h, "GET", proxyAddr, "/latest/meta-data/hostname", "X-Forwarded-For", unknownAddr)
	if got.Status != 404 || got.Body != bodyNotFound {
		t.Errorf("unknown address through the proxy: got %d %q, want 404 %q", got.Status, got.Body, bodyNotFound)
	}
}

func TestForwardedFor(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, nil)
	h := s.Handler()
	for _, tc := range []struct {
		name, from string
		xff        []string
		status     int
		want       string // the hostname, for status 200
	}{
		{"untrusted caller's header is ignored", webAddr, []string{dbAddr}, 200, "web-01.lab.example"},
		{"untrusted unknown caller's header is ignored", unknownAddr, []string{dbAddr}, 404, ""},
		{"trusted proxy is honoured", proxyAddr, []string{dbAddr}, 200, "db-01"},
		{"rightmost untrusted entry wins", proxyAddr, []string{dbAddr + ", " + webAddr}, 200, "web-01.lab.example"},
		{"later header is further right", proxyAddr, []string{dbAddr, webAddr}, 200, "web-01.lab.example"},
		{"proxies in the chain are skipped", proxyAddr, []string{webAddr + ", 10.77.9.7"}, 200, "web-01.lab.example"},
		{"address with port", proxyAddr, []string{dbAddr + ":5555"}, 200, "db-01"},
		{"mapped address", proxyAddr, []string{"::ffff:" + dbAddr}, 200, "db-01"},
		{"proxy without header is itself", proxyAddr, nil, 404, ""},
		{"all proxies: the leftmost", proxyAddr, []string{"10.77.9.8, 10.77.9.7"}, 404, ""},
		{"garbage from a proxy", proxyAddr, []string{"not-an-address"}, 400, ""},
		{"empty entry from a proxy", proxyAddr, []string{dbAddr + ",,"}, 400, ""},
		{"too many entries", proxyAddr, []string{strings.Repeat("10.77.9.5,", 40) + dbAddr}, 200, "db-01"},
		{"too many proxies", proxyAddr, []string{dbAddr + strings.Repeat(",10.77.9.5", 40)}, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			for _, v := range tc.xff {
				hdr = append(hdr, "X-Forwarded-For", v)
			}
			got := do(t, h, "GET", tc.from, "/latest/meta-data/hostname", hdr...)
			if got.Status != tc.status || (tc.status == 200 && got.Body != tc.want) {
				t.Errorf("got %d %q, want %d %q", got.Status, got.Body, tc.status, tc.want)
			}
		})
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s, _ := newTestServer(t, func(c *Config) { c.Now = clock.now })
	h := s.Handler()

	put := func(from string, headers ...string) answer {
		return do(t, h, "PUT", from, tokenPath, headers...)
	}
	for _, tc := range []struct {
		name    string
		headers []string
		status  int
	}{
		{"no ttl", nil, 400},
		{"ttl 0", []string{HeaderTokenTTL, "0"}, 400},
		{"ttl too long", []string{HeaderTokenTTL, "21601"}, 400},
		{"ttl not a number", []string{HeaderTokenTTL, "1h"}, 400},
		{"through a proxy", []string{HeaderTokenTTL, "60", "X-Forwarded-For", webAddr}, 403},
		{"longest ttl", []string{HeaderTokenTTL, "21600"}, 200},
	} {
		if got := put(webAddr, tc.headers...); got.Status != tc.status {
			t.Errorf("PUT token, %s: got %d %q, want %d", tc.name, got.Status, got.Body, tc.status)
		}
	}
	// Even a trusted proxy cannot mint tokens: EC2 refuses any token PUT
	// with X-Forwarded-For.
	if got := put(proxyAddr, HeaderTokenTTL, "60", "X-Forwarded-For", webAddr); got.Status != 403 {
		t.Errorf("PUT token through the trusted proxy: got %d, want 403", got.Status)
	}
	if got := do(t, h, "GET", webAddr, tokenPath); got.Status != 405 || got.Header.Get("Allow") != "PUT" {
		t.Errorf("GET token: got %d Allow %q, want 405 Allow PUT", got.Status, got.Header.Get("Allow"))
	}
	if got := do(t, h, "PUT", webAddr, "/latest/meta-data/hostname", HeaderTokenTTL, "60"); got.Status != 405 {
		t.Errorf("PUT on a metadata path: got %d, want 405", got.Status)
	}

	tok := put(webAddr, HeaderTokenTTL, "60")
	if tok.Status != 200 || tok.Header.Get(HeaderTokenTTL) != "60" || len(tok.Body) != tokenLen {
		t.Fatalf("PUT token: got %d ttl %q body %q, want 200, ttl 60 and a token", tok.Status, tok.Header.Get(HeaderTokenTTL), tok.Body)
	}
	dbTok := put(dbAddr, HeaderTokenTTL, "60").Body
	// A token with one MAC character changed, and one spelt differently
	// in the unused bits of its last character.
	forged, respelt := []byte(tok.Body), []byte(tok.Body)
	forged[20] = map[bool]byte{true: 'A', false: 'B'}[forged[20] != 'A']
	respelt[len(respelt)-1] ^= 1

	get := func(from, token string) answer {
		return do(t, h, "GET", from, "/latest/meta-data/hostname", HeaderToken, token)
	}
	if got := get(webAddr, tok.Body); got.Status != 200 || got.Body != "web-01.lab.example" {
		t.Errorf("GET with token: got %d %q, want 200 web-01.lab.example", got.Status, got.Body)
	}
	for _, tc := range []struct{ name, from, token string }{
		{"another machine's token", webAddr, dbTok},
		{"a token used from another machine", dbAddr, tok.Body},
		{"a token from another of the machine's addresses", webAddr2, tok.Body},
		{"a forged token", webAddr, string(forged)},
		{"a respelt token", webAddr, string(respelt)},
		{"a token with a later expiry", webAddr, laterExpiry(t, tok.Body)},
		{"garbage", webAddr, "garbage"},
		{"empty", webAddr, ""},
	} {
		if got := get(tc.from, tc.token); got.Status != 401 || got.Body != bodyUnauthorized {
			t.Errorf("%s: got %d %q, want 401", tc.name, got.Status, got.Body)
		}
	}
	if got := do(t, h, "GET", webAddr, "/latest/meta-data/hostname", HeaderToken, tok.Body, HeaderToken, tok.Body); got.Status != 401 {
		t.Errorf("two token headers: got %d, want 401", got.Status)
	}
	// Tokens are checked on the other endpoints too.
	for _, p := range []string{"/metadata", "/nocloud/meta-data", "/latest/user-data"} {
		if got := do(t, h, "GET", webAddr, p, HeaderToken, dbTok); got.Status != 401 {
			t.Errorf("GET %s with another machine's token: got %d, want 401", p, got.Status)
		}
	}
	// Through the trusted proxy, the token of the forwarded machine works.
	if got := do(t, h, "GET", proxyAddr, "/latest/meta-data/hostname", HeaderToken, tok.Body, "X-Forwarded-For", webAddr); got.Status != 200 {
		t.Errorf("token through the proxy: got %d, want 200", got.Status)
	}

	clock.t = clock.t.Add(59 * time.Second)
	if got := get(webAddr, tok.Body); got.Status != 200 {
		t.Errorf("token after 59 s of 60: got %d, want 200", got.Status)
	}
	clock.t = clock.t.Add(time.Second)
	if got := get(webAddr, tok.Body); got.Status != 401 {
		t.Errorf("token after 60 s of 60: got %d, want 401", got.Status)
	}
	// Without a token, IMDSv1 still works.
	if got := do(t, h, "GET", webAddr, "/latest/meta-data/hostname"); got.Status != 200 {
		t.Errorf("GET without token: got %d, want 200", got.Status)
	}
}

func TestRequireToken(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, func(c *Config) { c.RequireToken = true })
	h := s.Handler()
	for path, want := range map[string]int{
		"/latest/meta-data/hostname": 401,
		"/2009-04-04/user-data":      401,
		"/metadata":                  401,
		"/v1/metadata":               401,
		"/nocloud/meta-data":         200, // cloud-init's NoCloud cannot send a token
	} {
		if got := do(t, h, "GET", webAddr, path); got.Status != want {
			t.Errorf("GET %s without token: got %d, want %d", path, got.Status, want)
		}
	}
	tok := do(t, h, "PUT", webAddr, tokenPath, HeaderTokenTTL, "21600").Body
	if got := do(t, h, "GET", webAddr, "/latest/meta-data/hostname", HeaderToken, tok); got.Status != 200 {
		t.Errorf("GET with token: got %d, want 200", got.Status)
	}
	if got := do(t, h, "GET", unknownAddr, "/latest/meta-data/hostname"); got.Status != 404 {
		t.Errorf("unknown caller: got %d, want 404", got.Status)
	}
}

// TestIsolation tries every trick we could think of to read db-01's data
// from web-01's address: paths, queries, headers, tokens. Each answer
// must be web-01's own data, a 4xx, and never contain anything of db-01.
func TestIsolation(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, nil)
	h := s.Handler()
	dbTok := do(t, h, "PUT", dbAddr, tokenPath, HeaderTokenTTL, "60").Body
	paths := []string{
		"/latest/meta-data/hostname",
		"/latest/meta-data/network/interfaces/macs/52:54:00:00:02:01/local-ipv4s",
		"/latest/meta-data/network/interfaces/macs/52:54:00:00:02:01/",
		"/latest/meta-data/../../db-01/meta-data/hostname",
		"/latest/meta-data/%2e%2e/%2e%2e/db-01",
		"/latest/meta-data/hostname?ip=" + dbAddr,
		"/latest/meta-data/hostname?name=db-01",
		"/metadata?ip=" + dbAddr + "&name=db-01&hardware=db-01",
		"/v1/metadata?name=db-01&index=0",
		"/nocloud/db-01/meta-data",
		"/nocloud/meta-data?instance-id=db-01",
		"/nocloud/vendor-data",
		"/latest/vendor-data",
		"/db-01/latest/meta-data/hostname",
		"/latest/meta-data/tags/instance/../../../db-01",
		"//" + dbAddr + "/latest/meta-data/hostname",
		"http://" + dbAddr + "/latest/meta-data/hostname",
	}
	headers := [][]string{
		nil,
		{"X-Forwarded-For", dbAddr},
		{"X-Forwarded-For", dbAddr, "X-Forwarded-For", dbAddr},
		{"X-Real-IP", dbAddr},
		{"Forwarded", "for=" + dbAddr},
		{"True-Client-IP", dbAddr},
		{"Host", dbAddr},
		{HeaderToken, dbTok},
		{HeaderToken, dbTok, "X-Forwarded-For", dbAddr},
	}
	for _, p := range paths {
		for _, hdr := range headers {
			for _, from := range []string{webAddr, webAddr2} {
				got := do(t, h, "GET", from, p, hdr...)
				if l := leaks(got.Body+strings.Join(flatten(got.Header), "\n"), dbMarkers); len(l) > 0 {
					t.Errorf("GET %s from %s with %q: answer contains db-01's %q:\n%s", p, from, hdr, l, got.Body)
				}
				if got.Status == 200 && len(leaks(got.Body, webMarkers)) == 0 && !strings.HasPrefix(p, "/nocloud/vendor-data") {
					t.Errorf("GET %s from %s with %q: got 200 %q, want web-01's data or an error", p, from, hdr, got.Body)
				}
			}
		}
	}
}

// laterExpiry returns tok with its expiry a day later and its MAC kept.
func laterExpiry(t *testing.T, tok string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint64(raw[:8], binary.BigEndian.Uint64(raw[:8])+86400)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func flatten(h http.Header) []string {
	var out []string
	for k, vs := range h {
		for _, v := range vs {
			out = append(out, k+": "+v)
		}
	}
	return out
}

func TestApplyChangesNextAnswer(t *testing.T) {
	t.Parallel()
	s, st := newTestServer(t, nil)
	h := s.Handler()
	if got := do(t, h, "GET", dbAddr, "/latest/meta-data/hostname"); got.Body != "db-01" {
		t.Fatalf("before: got %q, want db-01", got.Body)
	}
	f := testFleet()
	db := *f.Hardware["db-01"]
	db.Interfaces = []schema.Interface{db.Interfaces[0]}
	db.Interfaces[0].Hostname = "db-renamed"
	if _, err := st.Apply("rev-2", withHardware(f, &db)); err != nil {
		t.Fatal(err)
	}
	got := do(t, h, "GET", dbAddr, "/latest/meta-data/hostname")
	if got.Body != "db-renamed" || got.Header.Get(HeaderRevision) != "rev-2" {
		t.Errorf("after apply: got %q at %q, want db-renamed at rev-2", got.Body, got.Header.Get(HeaderRevision))
	}
	// A machine removed from the fleet is a stranger at once.
	delete(f.Hardware, "db-01")
	if _, err := st.Apply("rev-3", f); err != nil {
		t.Fatal(err)
	}
	if got := do(t, h, "GET", dbAddr, "/latest/meta-data/hostname"); got.Status != 404 {
		t.Errorf("after removal: got %d %q, want 404", got.Status, got.Body)
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, nil)
	h := s.Handler()
	long := "/latest/meta-data/" + strings.Repeat("a", MaxPathLen)
	if got := do(t, h, "GET", webAddr, long); got.Status != 414 || got.Header.Get(HeaderRevision) != store.TestRevision {
		t.Errorf("long path: got %d at revision %q, want 414 at %q", got.Status, got.Header.Get(HeaderRevision), store.TestRevision)
	}
	if got := do(t, h, "GET", unknownAddr, long); got.Status != 414 {
		t.Errorf("long path from a stranger: got %d, want 414", got.Status)
	}
	if got := do(t, h, "GET", webAddr, "/v1/metadata?index="+strings.Repeat("1", maxQueryLen)); got.Status != 414 {
		t.Errorf("long query: got %d, want 414", got.Status)
	}
	for _, m := range []string{"POST", "DELETE", "PATCH", "OPTIONS"} {
		if got := do(t, h, m, webAddr, "/latest/meta-data/hostname"); got.Status != 405 || got.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: got %d Allow %q, want 405 Allow GET, HEAD", m, got.Status, got.Header.Get("Allow"))
		}
	}
	if got := do(t, h, "HEAD", webAddr, "/latest/meta-data/hostname"); got.Status != 200 || got.Header.Get("Content-Length") != "18" {
		t.Errorf("HEAD: got %d length %q, want 200 length 18", got.Status, got.Header.Get("Content-Length"))
	}
}

func TestNoCloud(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, nil)
	h := s.Handler()
	dbID := instanceID(&schema.Hardware{Name: "db-01"})
	for _, tc := range []struct {
		addr, path string
		status     int
		body       string
	}{
		{webAddr, "/nocloud/meta-data", 200, "instance-id: i-web01\nlocal-hostname: web-01.lab.example\navailability-zone: dc1\npublic-keys:\n" +
			"    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHdlYjAxa2V5b25lZm9ydGVzdHNvbmx5 alice@example\n" +
			"    - ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDweb01\n"},
		{dbAddr, "/nocloud/meta-data", 200, "instance-id: " + dbID + "\nlocal-hostname: db-01\navailability-zone: dc1\n"},
		{webAddr, "/nocloud/user-data", 200, "#cloud-config\n# web-user-data\nhostname: web-01\n"},
		{dbAddr, "/nocloud/user-data", 200, ""},
		{webAddr, "/nocloud/vendor-data", 200, ""},
		{dbAddr, "/nocloud/vendor-data", 200, "#cloud-config\n# db-vendor-data\n"},
		{webAddr, "/nocloud/network-config", 404, bodyNotFound},
		{dbAddr, "/nocloud/network-config", 200, "version: 2\nethernets:\n    nic0:\n        match:\n            macaddress: \"52:54:00:00:02:01\"\n" +
			"        dhcp4: false\n        addresses:\n            - 10.77.1.3/16\n        routes:\n            - to: 0.0.0.0/0\n              via: 10.77.0.1\n" +
			"        nameservers:\n            addresses:\n                - 10.77.0.53\n            search:\n                - lab.example\n"},
		{webAddr, "/nocloud/", 404, bodyNotFound},
		{webAddr, "/nocloud/meta-data/", 404, bodyNotFound},
	} {
		got := do(t, h, "GET", tc.addr, tc.path)
		if got.Status != tc.status || got.Body != tc.body {
			t.Errorf("GET %s from %s: got %d\n%s\nwant %d\n%s", tc.path, tc.addr, got.Status, got.Body, tc.status, tc.body)
		}
	}
}

func TestNetworkConfigFromMetadata(t *testing.T) {
	t.Parallel()
	h := &schema.Hardware{Name: "m", Metadata: map[string]any{"network-config": map[string]any{
		"version": float64(1), "config": []any{map[string]any{"type": "physical", "name": "eth0"}},
	}}}
	got, ok := networkConfig(h).(map[string]any)
	if !ok || got["version"] != float64(1) {
		t.Errorf("got %#v, want the metadata's network-config", networkConfig(h))
	}
	if nc := networkConfig(&schema.Hardware{Name: "n", Interfaces: []schema.Interface{{MAC: "52:54:00:00:00:01", IP: "10.0.0.2/24"}}}); nc != nil {
		t.Errorf("all DHCP: got %#v, want none", nc)
	}
}

func TestMetadataJSON(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, nil)
	got := do(t, s.Handler(), "GET", webAddr2, "/metadata")
	if got.Status != 200 || got.Type != typeJSON {
		t.Fatalf("got %d %s, want 200 %s", got.Status, got.Type, typeJSON)
	}
	for _, want := range []string{`"instanceID":"i-web01"`, `"hostname":"web-01.lab.example"`, `"address":"10.78.0.2"`,
		`"mac":"52:54:00:00:01:02"`, `"revision":"test"`, `"name":"web-01"`, `"userData":"#cloud-config`, `"plan_slug":"c3.small"`} {
		if !strings.Contains(got.Body, want) {
			t.Errorf("got %s, want it to contain %s", got.Body, want)
		}
	}
	for _, secret := range []string{"bmc", "redfish", "10.99.0.1"} {
		if strings.Contains(strings.ToLower(got.Body), secret) {
			t.Errorf("got %s, want no BMC data (%q)", got.Body, secret)
		}
	}
}

// panicStore fails the way a broken store would.
type panicStore struct{}

func (panicStore) HardwareByIP(memdb.WatchSet, string) (*schema.Hardware, error) { panic("broken") }
func (panicStore) Revision(memdb.WatchSet) (store.Revision, error)               { return store.Revision{}, nil }

type errStore struct{ panicStore }

func (errStore) HardwareByIP(memdb.WatchSet, string) (*schema.Hardware, error) {
	return nil, errors.New("disk on fire")
}

func TestStoreFailures(t *testing.T) {
	t.Parallel()
	for name, st := range map[string]Store{"panic": panicStore{}, "error": errStore{}} {
		s, err := New(Config{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		got := do(t, s.Handler(), "GET", webAddr, "/latest/meta-data/hostname")
		if got.Status != 500 || got.Body != bodyInternal {
			t.Errorf("%s: got %d %q, want 500 %q", name, got.Status, got.Body, bodyInternal)
		}
		var b strings.Builder
		if err := s.WriteMetrics(&b); err != nil || !strings.Contains(b.String(), `gitmetal_metadata_requests_total{result="error"} 1`) {
			t.Errorf("%s: metrics %q (%v), want one error", name, b.String(), err)
		}
	}
}

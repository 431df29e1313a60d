package hegel

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/test/netlab"
)

// cloudInitPath returns the directory that holds cloud-init's Python
// package: $GITMETAL_CLOUDINIT_PYTHONPATH (for instance the
// usr/lib/python3/dist-packages of `apt-get download cloud-init` unpacked
// with dpkg -x, which installs nothing), else the system's when cloud-init
// is installed. Without either, the test skips (fails when CI=true).
func cloudInitPath(t *testing.T) string {
	t.Helper()
	for _, dir := range []string{os.Getenv("GITMETAL_CLOUDINIT_PYTHONPATH"), "/usr/lib/python3/dist-packages"} {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "cloudinit", "sources", "helpers", "ec2.py")); err == nil {
			return dir
		}
	}
	why := "cloud-init's Python package not found: set GITMETAL_CLOUDINIT_PYTHONPATH to the dist-packages of an unpacked cloud-init .deb"
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
	return ""
}

// cloudInitPython returns Debian's python3 when it can import cloud-init
// with its dependencies (python3-yaml, python3-requests, python3-configobj,
// python3-jinja2, python3-jsonschema, python3-jsonpatch, python3-netifaces,
// python3-oauthlib, python3-serial); else the test skips (fails when
// CI=true).
func cloudInitPython(t *testing.T, pypath string) string {
	t.Helper()
	const python = "/usr/bin/python3"
	netlab.NeedTool(t, python)
	cmd := exec.Command(python, "-c", "from cloudinit.sources import normalize_pubkey_data\n"+
		"from cloudinit.sources.helpers import ec2\nfrom cloudinit.net.network_state import parse_net_config_data")
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pypath)
	if out, err := cmd.CombinedOutput(); err != nil {
		why := "cloud-init does not import (install its Debian dependencies, see cloudInitPython): " + string(out)
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	return python
}

// TestCloudInitReads runs cloud-init's own readers — the EC2 crawler
// DataSourceEc2 uses (after its IMDSv2 token PUT), the NoCloud seed reader
// DataSourceNoCloud uses for seedfrom=http://..., and its network config
// parser — against hegel from each machine's address, and checks what
// cloud-init made of the answers.
func TestCloudInitReads(t *testing.T) {
	t.Parallel()
	pypath := cloudInitPath(t)
	python := cloudInitPython(t, pypath)
	script, err := filepath.Abs(filepath.Join("testdata", "cloudinit_read.py"))
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t, func(c *Config) { c.RequireToken = true })

	read := func(from string) map[string]any {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// The script binds nothing itself: the route's source address
		// is chosen by `ip route get`, so run it with the machine's
		// address as the preferred source of the route to hegel.
		cmd := l.p.Client.Command(ctx, "env", "PYTHONPATH="+pypath, python, script, l.base)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := l.viaSource(from, cmd.Run); err != nil {
			t.Fatalf("cloud-init reader from %s: %v\n%s", from, err, stderr.Bytes())
		}
		var out map[string]any
		if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
			t.Fatalf("cloud-init reader from %s: %v\n%s", from, err, stdout.Bytes())
		}
		return out
	}

	web := read(webAddr)
	golden(t, "cloudinit-web-01.golden", pretty(t, web))
	db := read(dbAddr)
	golden(t, "cloudinit-db-01.golden", pretty(t, db))

	for _, c := range []struct {
		path []string
		got  map[string]any
		want any
	}{
		{[]string{"ec2", "meta-data", "instance-id"}, web, "i-web01"},
		{[]string{"ec2", "meta-data", "local-hostname"}, web, "web-01.lab.example"},
		{[]string{"ec2", "meta-data", "placement", "availability-zone"}, web, "dc1"},
		{[]string{"ec2", "user-data"}, web, "#cloud-config\n# web-user-data\nhostname: web-01\n"},
		{[]string{"nocloud", "meta-data", "instance-id"}, web, "i-web01"},
		{[]string{"nocloud", "user-data"}, web, "#cloud-config\n# web-user-data\nhostname: web-01\n"},
		{[]string{"nocloud", "vendor-data"}, db, "#cloud-config\n# db-vendor-data\n"},
		{[]string{"nocloud", "meta-data", "local-hostname"}, db, "db-01"},
		{[]string{"ec2", "user-data"}, db, ""}, // cloud-init reads EC2's 404 as no user-data
	} {
		if got, _ := lookup(c.got, c.path...); got != c.want {
			t.Errorf("cloud-init's %s: got %#v, want %#v", strings.Join(c.path, "."), got, c.want)
		}
	}
	// The keys, as cloud-init hands them to its ssh module, from both
	// datasources.
	wantKeys := []any{
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHdlYjAxa2V5b25lZm9ydGVzdHNvbmx5 alice@example",
		"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDweb01",
	}
	for _, ds := range []string{"ec2", "nocloud"} {
		got, _ := lookup(web, ds, "public-keys")
		list, _ := got.([]any)
		if len(list) != len(wantKeys) {
			t.Errorf("%s public keys: got %#v, want %#v", ds, got, wantKeys)
			continue
		}
		for i := range list {
			if strings.TrimSpace(list[i].(string)) != wantKeys[i] {
				t.Errorf("%s public key %d: got %q, want %q", ds, i, list[i], wantKeys[i])
			}
		}
	}
	if got, _ := lookup(db, "network-config", "interfaces"); got == nil {
		t.Errorf("db-01's network-config: cloud-init parsed no interfaces: %#v", db["network-config"])
	}
}

func pretty(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// viaSource runs fn while the client namespace's route to hegel prefers
// from as its source address, for clients that cannot bind one. The
// route is shared by the namespace, so callers of viaSource take turns.
func (l *lab) viaSource(from string, fn func() error) error {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := l.p.Client.Run(ctx, "ip", "route", "replace", serverAddr+"/32", "dev", l.p.ClientIf, "src", from); err != nil {
		return err
	}
	return fn()
}

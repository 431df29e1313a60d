package hegel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/netlab"
)

// serverAddr is hegel's address in the lab.
const serverAddr = "10.77.0.1"

// lab is hegel serving testFleet in a server namespace, and a client
// namespace joined to it by a veth that holds every test address: both
// machines' (web-01's two), a stranger's and the trusted proxy's. Clients
// run there pick their source address with curl --interface.
type lab struct {
	t     *testing.T
	p     *netlab.Pair
	srv   *Server
	store *store.Store
	fleet *schema.Fleet
	base  string      // http://10.77.0.1:PORT
	srcMu *sync.Mutex // serialises viaSource
}

// newLab builds the lab; mod changes the Config, and setup the Server
// before it serves.
func newLab(t *testing.T, mod func(*Config), setup ...func(*Server)) *lab {
	t.Helper()
	p := netlab.NewPair(t, "hg")
	netlab.Must(t, p.Server.AddAddr(p.ServerIf, serverAddr+"/16"))
	netlab.Must(t, p.Server.AddAddr(p.ServerIf, "10.78.0.1/24"))
	for _, a := range []string{webAddr + "/16", dbAddr + "/16", unknownAddr + "/16", proxyAddr + "/16", webAddr2 + "/24"} {
		netlab.Must(t, p.Client.AddAddr(p.ClientIf, a))
	}
	s, st, f := newTestServerFleet(t, mod)
	for _, fn := range setup {
		fn(s)
	}
	ln, err := p.Server.Listen("tcp", serverAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := hs.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return &lab{t: t, p: p, srv: s, store: st, fleet: f, base: "http://" + ln.Addr().String(), srcMu: new(sync.Mutex)}
}

// curlFormat follows the body with the status, type and revision.
const curlFormat = "\n-- %{http_code} %{content_type} rev=%header{x-gitmetal-revision} index=%header{x-gitmetal-index}\n"

// curl runs curl in the client namespace from address from, for path on
// hegel, and returns what it printed.
func (l *lab) curl(from, path string, args ...string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := append([]string{"-sS", "--max-time", "90", "--interface", from, "-w", curlFormat}, args...)
	argv = append(argv, l.base+path)
	cmd := l.p.Client.Command(ctx, "curl", argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		l.t.Fatalf("curl %s: %v\n%s", strings.Join(argv, " "), err, stderr.Bytes())
	}
	return stdout.String()
}

// split returns the body and the status line of curl's output.
func splitCurl(out string) (body, status string) {
	i := strings.LastIndex(out, "\n-- ")
	if i < 0 {
		return out, ""
	}
	return out[:i], strings.TrimSpace(out[i+4:])
}

// crawl walks the EC2 tree from root (".../meta-data/") as cloud-init's
// crawler does, following every directory entry and the "0=name" form of
// public-keys/, and returns every path it met in order.
func (l *lab) crawl(from, root string) []string {
	l.t.Helper()
	paths := []string{root}
	for i := 0; i < len(paths); i++ {
		p := paths[i]
		if !strings.HasSuffix(p, "/") {
			continue
		}
		body, status := splitCurl(l.curl(from, p))
		if !strings.HasPrefix(status, "200 ") {
			l.t.Fatalf("crawl %s: got %s, want 200", p, status)
		}
		for _, e := range strings.Split(body, "\n") {
			if n, _, ok := strings.Cut(e, "="); ok && strings.HasSuffix(p, "/public-keys/") {
				e = n + "/"
			}
			paths = append(paths, p+e)
			if len(paths) > 500 {
				l.t.Fatalf("crawl %s: more than 500 paths, a loop?", root)
			}
		}
	}
	return paths
}

// TestCurlGolden runs real curl from each machine's address against every
// path of its tree (found by crawling the listings, as cloud-init does)
// and the other endpoints, and compares the answers with golden files.
func TestCurlGolden(t *testing.T) {
	t.Parallel()
	netlab.NeedTool(t, "curl")
	l := newLab(t, nil)
	extra := []string{
		"/latest", "/latest/meta-data", "/latest/user-data", "/latest/vendor-data", "/2009-04-04/user-data", "/2009-04-04/vendor-data",
		"/latest/meta-data/public-keys/0/openssh-key/", "/latest/meta-data/no-such-key",
		"/nocloud/meta-data", "/nocloud/user-data", "/nocloud/vendor-data", "/nocloud/network-config",
		"/metadata", "/v1/metadata?index=0",
	}
	for _, m := range []struct{ name, from string }{
		{"web-01", webAddr}, {"web-01-eth1", webAddr2}, {"db-01", dbAddr}, {"stranger", unknownAddr},
	} {
		t.Run(m.name, func(t *testing.T) {
			l := *l
			l.t = t
			var paths []string
			if m.name == "stranger" {
				paths = []string{"/", "/latest/", "/latest/meta-data/", "/latest/meta-data/hostname"}
			} else {
				paths = append([]string{"/", "/latest/", "/2009-04-04/"}, l.crawl(m.from, "/latest/meta-data/")...)
				paths = append(paths, l.crawl(m.from, "/2009-04-04/meta-data/")...)
			}
			var b strings.Builder
			for _, p := range append(paths, extra...) {
				fmt.Fprintf(&b, "### curl --interface %s %s\n%s\n", m.name, p, l.curl(m.from, p))
			}
			golden(t, "curl-"+m.name+".golden", b.String())
		})
	}
}

// TestCurlIsolation: from the addresses of two machines, curl gets each
// its own data; a stranger gets 404; X-Forwarded-For counts only from the
// trusted proxy; a token minted at one address is refused at another.
func TestCurlIsolation(t *testing.T) {
	t.Parallel()
	netlab.NeedTool(t, "curl")
	l := newLab(t, nil)
	for _, tc := range []struct {
		name, from string
		args       []string
		want       string // status line prefix and body
		body       string
	}{
		{"web-01 reads its own", webAddr, nil, "200 ", "web-01.lab.example"},
		{"db-01 reads its own", dbAddr, nil, "200 ", "db-01"},
		{"stranger", unknownAddr, nil, "404 ", bodyNotFound},
		{"stranger claiming to be db-01", unknownAddr, []string{"-H", "X-Forwarded-For: " + dbAddr}, "404 ", bodyNotFound},
		{"web-01 claiming to be db-01", webAddr, []string{"-H", "X-Forwarded-For: " + dbAddr}, "200 ", "web-01.lab.example"},
		{"trusted proxy for db-01", proxyAddr, []string{"-H", "X-Forwarded-For: " + dbAddr}, "200 ", "db-01"},
		{"trusted proxy, client prepends db-01", proxyAddr, []string{"-H", "X-Forwarded-For: " + dbAddr + ", " + webAddr}, "200 ", "web-01.lab.example"},
	} {
		body, status := splitCurl(l.curl(tc.from, "/latest/meta-data/hostname", tc.args...))
		if !strings.HasPrefix(status, tc.want) || body != tc.body {
			t.Errorf("%s: got %s %q, want %s%q", tc.name, status, body, tc.want, tc.body)
		}
	}

	webTok, status := splitCurl(l.curl(webAddr, tokenPath, "-X", "PUT", "-H", HeaderTokenTTL+": 300"))
	if !strings.HasPrefix(status, "200 ") {
		t.Fatalf("token PUT: got %s %q", status, webTok)
	}
	if _, status := splitCurl(l.curl(webAddr, tokenPath, "-X", "PUT", "-H", HeaderTokenTTL+": 300", "-H", "X-Forwarded-For: "+webAddr)); !strings.HasPrefix(status, "403 ") {
		t.Errorf("token PUT with X-Forwarded-For: got %s, want 403", status)
	}
	if body, status := splitCurl(l.curl(webAddr, "/latest/user-data", "-H", HeaderToken+": "+webTok)); !strings.HasPrefix(status, "200 ") || !strings.Contains(body, "web-user-data") {
		t.Errorf("web-01 with its token: got %s %q, want its user-data", status, body)
	}
	// db-01 presenting web-01's token, directly or through the proxy.
	for _, args := range [][]string{
		{"-H", HeaderToken + ": " + webTok},
		{"-H", HeaderToken + ": " + webTok, "-H", "X-Forwarded-For: " + webAddr},
	} {
		body, status := splitCurl(l.curl(dbAddr, "/latest/user-data", args...))
		if !strings.HasPrefix(status, "401 ") || len(leaks(body, webMarkers)) > 0 {
			t.Errorf("db-01 with web-01's token (%q): got %s %q, want 401", args, status, body)
		}
	}

	// Everything db-01 can ask for carries nothing of web-01's, and the
	// reverse; the crawls cover every path of each tree.
	for _, c := range []struct {
		from   string
		others []string
	}{{dbAddr, webMarkers}, {webAddr, dbMarkers}, {webAddr2, dbMarkers}} {
		for _, p := range append(l.crawl(c.from, "/latest/meta-data/"), "/latest/user-data", "/latest/vendor-data", "/metadata", "/nocloud/meta-data",
			"/nocloud/user-data", "/nocloud/vendor-data", "/nocloud/network-config", "/v1/metadata") {
			if found := leaks(l.curl(c.from, p), c.others); len(found) > 0 {
				t.Errorf("GET %s from %s: answer contains the other machine's %q", p, c.from, found)
			}
		}
	}
}

// TestCurlApply: a new revision changes the next answer, and a long poll
// waiting on the machine returns with it.
func TestCurlApply(t *testing.T) {
	t.Parallel()
	netlab.NeedTool(t, "curl")
	waiting := make(chan struct{}, 16)
	l := newLab(t, nil, func(s *Server) { s.pollWaiting = func() { waiting <- struct{}{} } })

	first := l.curl(dbAddr, "/v1/metadata")
	_, status := splitCurl(first)
	idx := status[strings.LastIndex(status, "index=")+len("index="):]
	if !strings.HasPrefix(status, "200 ") || idx == "" || !strings.Contains(first, `"hostname":"db-01"`) {
		t.Fatalf("first long poll: got %q", first)
	}

	polled := make(chan string, 1)
	go func() {
		// curl reports its own failures in the output; the test checks it.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := l.p.Client.Command(ctx, "curl", "-sS", "--max-time", "100", "--interface", dbAddr, "-w", curlFormat,
			l.base+"/v1/metadata?index="+idx+"&wait=90s").CombinedOutput()
		if err != nil {
			out = append(out, []byte("\ncurl: "+err.Error())...)
		}
		polled <- string(out)
	}()
	<-waiting

	if _, err := l.store.Apply("rev-2", renamed(l.fleet, "db-01", "db-renamed")); err != nil {
		t.Fatal(err)
	}
	out := <-polled
	if body, status := splitCurl(out); !strings.HasPrefix(status, "200 ") || !strings.Contains(status, "rev=rev-2") ||
		!strings.Contains(body, `"hostname":"db-renamed"`) || strings.HasSuffix(status, "index="+idx) {
		t.Errorf("long poll after the apply: got %q, want db-renamed at rev-2 with a new index", out)
	}
	if body, status := splitCurl(l.curl(dbAddr, "/latest/meta-data/hostname")); body != "db-renamed" || !strings.Contains(status, "rev=rev-2") {
		t.Errorf("next request after the apply: got %s %q, want db-renamed at rev-2", status, body)
	}
	if body, _ := splitCurl(l.curl(webAddr, "/latest/meta-data/hostname")); body != "web-01.lab.example" {
		t.Errorf("the other machine after the apply: got %q, want web-01.lab.example", body)
	}
}

// dialFrom returns a DialContext that opens connections inside ns from
// the local address from.
func dialFrom(ns *netlab.Netns, from string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 30 * time.Second}
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

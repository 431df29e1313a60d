package hegel

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/gitmetal/gitmetal/schema"
)

// countingTransport counts the requests of a client by method and path.
type countingTransport struct {
	base http.RoundTripper
	seen chan string
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := c.base.RoundTrip(r)
	if err == nil {
		c.seen <- r.Method + " " + r.URL.Path + " " + res.Status
	}
	return res, err
}

// TestAWSIMDSClient points the AWS SDK's IMDS client — a real EC2 client
// nobody here wrote — at hegel from each machine's address, with tokens
// required, and reads instance-id, hostname and user-data through its
// IMDSv2 token flow.
func TestAWSIMDSClient(t *testing.T) {
	t.Parallel()
	l := newLab(t, func(c *Config) { c.RequireToken = true })
	for _, m := range []struct {
		from, id, hostname, userData string
	}{
		{webAddr, "i-web01", "web-01.lab.example", "#cloud-config\n# web-user-data\nhostname: web-01\n"},
		{dbAddr, instanceID(&schema.Hardware{Name: "db-01"}), "db-01", ""},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		seen := make(chan string, 64)
		hc := &http.Client{Transport: &countingTransport{
			base: &http.Transport{DialContext: dialFrom(l.p.Client, m.from), DisableKeepAlives: false},
			seen: seen,
		}}
		c := imds.New(imds.Options{Endpoint: l.base, HTTPClient: hc, EnableFallback: aws.FalseTernary})
		read := func(path string) string {
			out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
			if err != nil {
				t.Fatalf("from %s: GetMetadata %s: %v", m.from, path, err)
			}
			defer out.Content.Close()
			b, err := io.ReadAll(out.Content)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
		if got := read("instance-id"); got != m.id {
			t.Errorf("from %s: instance-id: got %q, want %q", m.from, got, m.id)
		}
		if got := read("hostname"); got != m.hostname {
			t.Errorf("from %s: hostname: got %q, want %q", m.from, got, m.hostname)
		}
		ud, err := c.GetUserData(ctx, &imds.GetUserDataInput{})
		switch {
		case m.userData == "" && err == nil:
			t.Errorf("from %s: GetUserData: got no error, want EC2's 404 for a machine without user-data", m.from)
		case m.userData == "" && !strings.Contains(err.Error(), "404"):
			t.Errorf("from %s: GetUserData: got %v, want a 404", m.from, err)
		case m.userData != "" && err != nil:
			t.Errorf("from %s: GetUserData: %v", m.from, err)
		case m.userData != "":
			b, _ := io.ReadAll(ud.Content)
			ud.Content.Close()
			if string(b) != m.userData {
				t.Errorf("from %s: user-data: got %q, want %q", m.from, b, m.userData)
			}
		}
		close(seen)
		var reqs []string
		for s := range seen {
			reqs = append(reqs, s)
		}
		// The client took the IMDSv2 path: a token first, then reads that
		// hegel accepted (it requires tokens here).
		if len(reqs) < 4 || reqs[0] != "PUT /latest/api/token 200 OK" {
			t.Errorf("from %s: requests %q, want a token PUT first", m.from, reqs)
		}
		for _, r := range reqs {
			if strings.Contains(r, " 401 ") {
				t.Errorf("from %s: request %q was refused", m.from, r)
			}
		}
	}
}

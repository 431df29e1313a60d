package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/reconciler"
	"github.com/gitmetal/gitmetal/reconciler/source"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/gittest"
	"github.com/gitmetal/gitmetal/test/poll"
)

const secret = "s3cret"

type fixture struct {
	repo *gittest.Repo
	rec  *reconciler.Reconciler
	srv  *httptest.Server
}

// newFixture serves the API of a reconciler following a file:// remote (a
// source that does not notify, so only the interval or a webhook fetch).
func newFixture(t *testing.T, webhookSecret string) *fixture {
	t.Helper()
	repo := gittest.New(t, "main")
	repo.CopyDir("../../examples/fleet", "")
	repo.Commit("fleet")
	src, err := source.NewGit(source.GitConfig{URL: "file://" + repo.Dir, Dir: filepath.Join(t.TempDir(), "repo")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	l, err := schema.NewLoader(schema.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := reconciler.New(reconciler.Config{Source: src, Store: st, Loader: l, Interval: time.Hour, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Reconciler: rec, Store: st, WebhookSecret: webhookSecret, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &fixture{repo: repo, rec: rec, srv: srv}
}

// run starts the reconciler's loop until the test ends.
func (f *fixture) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.rec.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	poll.Until(t, "the reconciler ready", func() bool { return f.rec.Ready() })
}

func (f *fixture) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(f.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (f *fixture) post(t *testing.T, body []byte, header map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/hooks/git", bytes.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func sign(body []byte, key string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func TestReadEndpoints(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "")
	if code, _ := f.get(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("readyz before any revision: got %d, want 503", code)
	}
	f.run(t)
	head := f.repo.Git("rev-parse", "HEAD")

	code, body := f.get(t, "/v1/status")
	var st map[string]any
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("status: got %d %v", code, err)
	}
	for _, k := range []string{"appliedRevision", "attemptedRevision", "source", "errors", "history", "counts"} {
		if _, ok := st[k]; !ok {
			t.Errorf("status has no %q: %s", k, body)
		}
	}
	if errs, ok := st["errors"].([]any); !ok || len(errs) != 0 {
		t.Errorf("got errors %v, want an empty list", st["errors"])
	}
	if st["appliedRevision"] != head {
		t.Errorf("got applied %v, want %s", st["appliedRevision"], head)
	}

	code, body = f.get(t, "/v1/hardware/web-01")
	var one struct {
		Revision string
		Hardware struct {
			Name   string
			Source struct{ Path, Blob string }
		}
	}
	if err := json.Unmarshal([]byte(body), &one); code != 200 || err != nil {
		t.Fatalf("hardware/web-01: got %d %v: %s", code, err, body)
	}
	if one.Revision != head || one.Hardware.Name != "web-01" || one.Hardware.Source.Path != "hardware/rack-a/web-01.cue" || len(one.Hardware.Source.Blob) != 40 {
		t.Errorf("got %+v, want web-01 from hardware/rack-a/web-01.cue at %s", one, head)
	}
	if code, _ := f.get(t, "/v1/hardware/nope"); code != http.StatusNotFound {
		t.Errorf("unknown hardware: got %d, want 404", code)
	}
	for path, key := range map[string]string{"/v1/hardware": "hardware", "/v1/workflows": "workflows", "/v1/templates": "templates"} {
		code, body := f.get(t, path)
		var list map[string]json.RawMessage
		if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil || len(list[key]) < 10 {
			t.Errorf("%s: got %d %v: %.200s", path, code, err, body)
		}
	}
	if code, body := f.get(t, "/metrics"); code != 200 || !strings.Contains(body, `gitmetal_objects{kind="hardware"} 5`) ||
		!strings.Contains(body, "gitmetal_reconcile_duration_seconds_count 1") {
		t.Errorf("metrics: got %d:\n%s", code, body)
	}
	if code, _ := f.get(t, "/healthz"); code != 200 {
		t.Errorf("healthz: got %d", code)
	}
}

func TestWebhook(t *testing.T) {
	t.Parallel()
	body := []byte(`{"ref":"refs/heads/main"}`)
	tests := []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"github", map[string]string{"X-Hub-Signature-256": "sha256=" + sign(body, secret), "X-GitHub-Event": "push"}, http.StatusAccepted},
		{"gitea", map[string]string{"X-Gitea-Signature": sign(body, secret)}, http.StatusAccepted},
		{"gitlab", map[string]string{"X-Gitlab-Token": secret}, http.StatusAccepted},
		{"github wrong key", map[string]string{"X-Hub-Signature-256": "sha256=" + sign(body, "other")}, http.StatusUnauthorized},
		{"github without prefix", map[string]string{"X-Hub-Signature-256": sign(body, secret)}, http.StatusUnauthorized},
		{"gitlab wrong token", map[string]string{"X-Gitlab-Token": "guess"}, http.StatusUnauthorized},
		{"no signature", nil, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, secret)
			f.run(t)
			before := f.rec.Status().AppliedRevision
			f.repo.Replace("hardware/rack-a/web-01.cue", `ip: "10.20.0.21/24"`, `ip: "10.20.0.121/24"`)
			next := f.repo.Commit("move web-01")

			if got := f.post(t, body, tt.header); got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
			if tt.want == http.StatusAccepted {
				poll.Until(t, "the next revision applied", func() bool { return f.rec.Status().AppliedRevision == next })
				return
			}
			// Nothing happens: the interval is an hour, so only a webhook
			// would fetch. Give a wrongly triggered fetch time to show.
			time.Sleep(500 * time.Millisecond)
			if got := f.rec.Status().AppliedRevision; got != before {
				t.Errorf("a refused webhook fetched: applied %s, want %s", got, before)
			}
		})
	}
}

func TestWebhookDisabledWithoutSecret(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "")
	body := []byte(`{}`)
	if got := f.post(t, body, map[string]string{"X-Hub-Signature-256": "sha256=" + sign(body, "")}); got != http.StatusForbidden {
		t.Errorf("got %d, want 403", got)
	}
}

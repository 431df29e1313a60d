// Package api is the reconciler's HTTP API: status, the applied desired
// state, the git webhook, health and metrics. Other services (boot, hegel,
// runner) add their handlers to the same mux in cmd.
//
// Everything here reads; the only thing a request can cause is an early
// fetch of the repository, and only with a valid webhook signature.
package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/reconciler"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

// MaxWebhookBody is the largest webhook payload read, in bytes (GitHub
// caps its payloads at 25 MB; a push event is usually a few KB).
const MaxWebhookBody = 25 << 20

// MetricsWriter writes Prometheus text-format metrics.
type MetricsWriter interface {
	WriteMetrics(w io.Writer) error
}

// Config configures the API.
type Config struct {
	Reconciler *reconciler.Reconciler
	Store      *store.Store
	// WebhookSecret verifies webhook requests. Empty disables the webhook:
	// every request to it is refused.
	WebhookSecret string
	// Metrics are written, in order, by /metrics (the reconciler's own
	// metrics are always first).
	Metrics []MetricsWriter
	Log     zerolog.Logger
}

// API serves the reconciler's HTTP endpoints.
type API struct {
	cfg Config
	log zerolog.Logger
}

// New returns the API.
func New(cfg Config) (*API, error) {
	if cfg.Reconciler == nil || cfg.Store == nil {
		return nil, errors.New("api: reconciler and store are required")
	}
	return &API{cfg: cfg, log: cfg.Log.With().Str("component", "api").Logger()}, nil
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/status", a.status)
	mux.HandleFunc("GET /v1/hardware", a.hardwareList)
	mux.HandleFunc("GET /v1/hardware/{name}", a.hardwareOne)
	mux.HandleFunc("GET /v1/workflows", a.workflows)
	mux.HandleFunc("GET /v1/workflows/{name}", a.workflowOne)
	mux.HandleFunc("GET /v1/templates", a.templates)
	mux.HandleFunc("GET /v1/templates/{name}", a.templateOne)
	mux.HandleFunc("POST /v1/hooks/git", a.webhook)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", a.ready)
	mux.HandleFunc("GET /metrics", a.metrics)
}

func (a *API) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.cfg.Reconciler.Status())
}

func (a *API) ready(w http.ResponseWriter, _ *http.Request) {
	if !a.cfg.Reconciler.Ready() {
		http.Error(w, "no revision applied yet", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

func (a *API) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	if err := a.cfg.Reconciler.WriteMetrics(w); err != nil {
		return
	}
	for _, m := range a.cfg.Metrics {
		if err := m.WriteMetrics(w); err != nil {
			return
		}
	}
}

// withSource adds where an object came from to its JSON.
type withSource[T any] struct {
	Object T
	Source schema.Source
}

func (o withSource[T]) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(o.Object)
	if err != nil || len(b) < 2 || b[len(b)-1] != '}' {
		return b, err
	}
	src, err := json.Marshal(o.Source)
	if err != nil {
		return nil, err
	}
	out := append(b[:len(b)-1:len(b)-1], []byte(`,"source":`)...)
	out = append(out, src...)
	return append(out, '}'), nil
}

// list answers with every object of a kind and the revision they came from,
// read in one snapshot so the two agree.
func list[T any](w http.ResponseWriter, snap *store.Snapshot, key string, get func(*store.Snapshot) ([]T, error), src func(T) schema.Source) {
	rev, err := snap.Revision(nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	items, err := get(snap)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out := make([]withSource[T], len(items))
	for i, it := range items {
		out[i] = withSource[T]{it, src(it)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"revision": rev.ID, key: out})
}

func one[T comparable](w http.ResponseWriter, snap *store.Snapshot, kind string, it T, err error, src func(T) schema.Source) {
	var zero T
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	case it == zero:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no " + kind + " of that name"})
		return
	}
	rev, err := snap.Revision(nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"revision": rev.ID, kind: withSource[T]{it, src(it)}})
}

func hwSource(h *schema.Hardware) schema.Source { return h.Source }
func wfSource(w *schema.Workflow) schema.Source { return w.Source }
func tpSource(t *schema.Template) schema.Source { return t.Source }

func (a *API) hardwareList(w http.ResponseWriter, _ *http.Request) {
	list(w, a.cfg.Store.Snapshot(), "hardware", func(s *store.Snapshot) ([]*schema.Hardware, error) { return s.Hardware(nil) }, hwSource)
}

func (a *API) hardwareOne(w http.ResponseWriter, r *http.Request) {
	snap := a.cfg.Store.Snapshot()
	h, err := snap.HardwareByName(nil, r.PathValue("name"))
	one(w, snap, "hardware", h, err, hwSource)
}

func (a *API) workflows(w http.ResponseWriter, _ *http.Request) {
	list(w, a.cfg.Store.Snapshot(), "workflows", func(s *store.Snapshot) ([]*schema.Workflow, error) { return s.Workflows(nil) }, wfSource)
}

func (a *API) workflowOne(w http.ResponseWriter, r *http.Request) {
	snap := a.cfg.Store.Snapshot()
	wf, err := snap.WorkflowByName(nil, r.PathValue("name"))
	one(w, snap, "workflow", wf, err, wfSource)
}

func (a *API) templates(w http.ResponseWriter, _ *http.Request) {
	list(w, a.cfg.Store.Snapshot(), "templates", func(s *store.Snapshot) ([]*schema.Template, error) { return s.Templates(nil) }, tpSource)
}

func (a *API) templateOne(w http.ResponseWriter, r *http.Request) {
	snap := a.cfg.Store.Snapshot()
	t, err := snap.TemplateByName(nil, r.PathValue("name"))
	one(w, snap, "template", t, err, tpSource)
}

// webhook triggers a fetch on a push from GitHub (X-Hub-Signature-256),
// Gitea or Gogs (X-Gitea-Signature / X-Gogs-Signature: HMAC-SHA256 of the
// body in hex) or GitLab (X-Gitlab-Token: the secret itself). The payload's
// content is not trusted for anything: a verified request only makes the
// reconciler fetch now.
func (a *API) webhook(w http.ResponseWriter, r *http.Request) {
	log := a.log.With().Str("remote", r.RemoteAddr).Logger()
	if a.cfg.WebhookSecret == "" {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "webhook disabled: the daemon has no webhook secret"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWebhookBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "payload too large or unreadable"})
		return
	}
	from, ok := verify(r.Header, body, []byte(a.cfg.WebhookSecret))
	if !ok {
		log.Warn().Msg("webhook refused: missing or wrong signature")
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong signature"})
		return
	}
	log.Info().Str("from", from).Msg("webhook: fetching now")
	a.cfg.Reconciler.Trigger()
	writeJSON(w, http.StatusAccepted, map[string]any{"triggered": true, "from": from})
}

// verify checks a webhook's signature and says which forge sent it.
func verify(h http.Header, body, secret []byte) (string, bool) {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	sum := mac.Sum(nil)
	hexEqual := func(got string) bool {
		b, err := hex.DecodeString(strings.TrimSpace(got))
		return err == nil && hmac.Equal(b, sum)
	}
	switch {
	case h.Get("X-Hub-Signature-256") != "":
		sig, ok := strings.CutPrefix(h.Get("X-Hub-Signature-256"), "sha256=")
		return "github", ok && hexEqual(sig)
	case h.Get("X-Gitea-Signature") != "":
		return "gitea", hexEqual(h.Get("X-Gitea-Signature"))
	case h.Get("X-Gogs-Signature") != "":
		return "gogs", hexEqual(h.Get("X-Gogs-Signature"))
	case h.Get("X-Gitlab-Token") != "":
		return "gitlab", subtle.ConstantTimeCompare([]byte(h.Get("X-Gitlab-Token")), secret) == 1
	}
	return "", false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gitmetal/gitmetal/reconciler"
	"github.com/gitmetal/gitmetal/reconciler/api"
	"github.com/gitmetal/gitmetal/runner"
	"github.com/gitmetal/gitmetal/runner/protocol"
)

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	server := fs.String("server", "http://127.0.0.1:8080", "the daemon's API address")
	format := fs.String("format", "text", "text or json")
	tokenFile := fs.String("api-token-file", "", "file holding the API's bearer token (serve --api-token-file)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	client, err := apiClient(*tokenFile)
	if err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return &exitError{code: 2, err: fmt.Errorf("--format %q: allowed: text, json", *format)}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := apiGet(ctx, client, *server, "/v1/status")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	var s reconciler.Status
	if err := json.Unmarshal(body, &s); err != nil {
		return fmt.Errorf("%s: %w", resp.Request.URL, err)
	}
	runs, err := runner.FetchRuns(ctx, client, *server, url.Values{"limit": {"20"}})
	if err != nil {
		return err
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			reconciler.Status
			Runs []protocol.Run `json:"runs"`
		}{s, runs}); err != nil {
			return err
		}
	} else {
		writeStatus(stdout, s)
		fmt.Fprintln(stdout, "runs")
		if err := runner.WriteRuns(stdout, runs, time.Now()); err != nil {
			return err
		}
	}
	if s.AttemptedRevision != s.AppliedRevision {
		return errSilent(1)
	}
	return nil
}

func short(rev string) string {
	if len(rev) > 12 && !strings.HasPrefix(rev, "dir:") {
		return rev[:12]
	}
	if len(rev) > 16 {
		return rev[:16]
	}
	if rev == "" {
		return "(none)"
	}
	return rev
}

// writeStatus prints the status for a terminal.
func writeStatus(w io.Writer, s reconciler.Status) {
	fmt.Fprintf(w, "source     %s\n", s.Source)
	if s.Site != "" {
		fmt.Fprintf(w, "site       %s (its machines only)\n", s.Site)
	}
	fmt.Fprintf(w, "applied    %s  (%d hardware, %d templates, %d workflows)\n",
		short(s.AppliedRevision), s.Counts.Hardware, s.Counts.Templates, s.Counts.Workflows)
	if s.AttemptedRevision != s.AppliedRevision {
		fmt.Fprintf(w, "attempted  %s  REFUSED, still serving the applied revision\n", short(s.AttemptedRevision))
		for _, e := range s.Errors {
			switch {
			case e.File == "":
				fmt.Fprintf(w, "  %s\n", e.Message)
			case e.Field == "":
				fmt.Fprintf(w, "  %s:%d:%d: %s\n", e.File, e.Line, e.Column, e.Message)
			default:
				fmt.Fprintf(w, "  %s:%d:%d: %s: %s\n", e.File, e.Line, e.Column, e.Field, e.Message)
			}
		}
	}
	if s.SourceError != "" {
		fmt.Fprintf(w, "source error  %s\n", s.SourceError)
	}
	if !s.LastSync.IsZero() {
		fmt.Fprintf(w, "last sync  %s\n", s.LastSync.Local().Format(time.DateTime))
	}
	if len(s.History) > 0 {
		fmt.Fprintln(w, "history")
		for _, h := range s.History {
			fmt.Fprintf(w, "  %s  %-8s %-16s %8.1f ms  %d files  %s\n",
				h.AppliedAt.Local().Format(time.DateTime), h.Result, short(h.Revision), h.DurationMs, h.Changed, h.Message)
		}
	}
}

// apiClient is the HTTP client of the commands that read the API: with
// the bearer token of tokenFile when one is named.
func apiClient(tokenFile string) (*http.Client, error) {
	if tokenFile == "" {
		return http.DefaultClient, nil
	}
	tok, err := api.ReadToken(tokenFile)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--api-token-file: %w", err)}
	}
	return &http.Client{Transport: bearer{token: tok, next: http.DefaultTransport}}, nil
}

// apiError is an answer of the API other than 200.
type apiError struct {
	url    string
	status int
	msg    string
}

func (e *apiError) Error() string { return e.url + ": " + e.msg }

// apiGet GETs path from the API at server. An answer other than 200 is an
// *apiError with its status and the start of its body.
func apiGet(ctx context.Context, client *http.Client, server, path string) (*http.Response, error) {
	u := strings.TrimRight(server, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--server: %w", err)}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, &apiError{url: u, status: resp.StatusCode, msg: resp.Status + ": " + strings.TrimSpace(string(body))}
	}
	return resp, nil
}

// bearer adds the API token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

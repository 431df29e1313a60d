package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

const logsUsage = `usage: gitmetal logs [--server URL] [--api-token-file FILE] [-f] RUN

Prints a workflow run's log (gitmetal status lists the runs): the runner's
notes and every action's output, one line each with its time, action and
stream. -f follows the log until the run ends.
`

func cmdLogs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("logs", stderr)
	server := fs.String("server", "http://127.0.0.1:8080", "the daemon's API address")
	tokenFile := fs.String("api-token-file", "", "file holding the API's bearer token (serve --api-token-file)")
	follow := fs.Bool("f", false, "follow the log until the run ends")
	fs.Usage = func() { fmt.Fprint(stderr, logsUsage); fs.PrintDefaults() }
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errSilent(2)
	}
	client, err := apiClient(*tokenFile)
	if err != nil {
		return err
	}
	q := url.Values{"format": {"text"}}
	if *follow {
		q.Set("follow", "1")
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	resp, err := apiGet(ctx, client, *server, "/v1/runs/"+url.PathEscape(fs.Arg(0))+"/logs?"+q.Encode())
	var ae *apiError
	if errors.As(err, &ae) && ae.status == http.StatusNotFound {
		return &exitError{code: 1, err: err}
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(stdout, resp.Body); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gitmetal/gitmetal/runner/protocol"
)

// statusError is a non-2xx answer.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.code, http.StatusText(e.code), e.msg)
}

// permanent reports whether asking again cannot help: a 4xx other than
// timeouts and rate limits.
func permanent(err error) bool {
	var se *statusError
	return errors.As(err, &se) && se.code >= 400 && se.code < 500 &&
		se.code != http.StatusRequestTimeout && se.code != http.StatusTooManyRequests
}

// call makes one request with a JSON body in (unless nil) and decodes a
// 2xx answer into out.
func (a *Agent) call(ctx context.Context, method, path string, q url.Values, in, out any, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := *a.base
	u.Path += path
	if q != nil {
		u.RawQuery = q.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+a.cfg.Token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, protocol.MaxBody))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e protocol.Error
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return fmt.Errorf("%s %s: %w", method, path, &statusError{code: resp.StatusCode, msg: msg})
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: answer: %w", method, path, err)
	}
	return nil
}

// retry calls fn until it succeeds or ctx ends, waiting a doubling,
// jittered backoff between tries. A permanent error ends the retries
// unless always is set (hello and next: the agent has nothing else to do
// than ask again). The error returned is ctx's or the permanent one.
func (a *Agent) retry(ctx context.Context, what string, always bool, fn func(context.Context) error) error {
	wait := a.cfg.MinBackoff
	for try := 1; ; try++ {
		err := fn(ctx)
		if err == nil {
			if try > 1 {
				a.log.Info().Str("request", what).Int("tries", try).Msg("runner reachable again")
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if permanent(err) && !always {
			return err
		}
		// The first failures of a restarting runner are expected; say so
		// quietly, then louder.
		ev := a.log.Debug()
		if try >= 3 || permanent(err) {
			ev = a.log.Warn()
		}
		ev.Err(err).Str("request", what).Int("try", try).Dur("backoff", wait).Msg("runner request failed, retrying")
		if err := sleep(ctx, jitter(wait)); err != nil {
			return err
		}
		wait = min(2*wait, a.cfg.MaxBackoff)
	}
}

// jitter spreads d over [d/2, d) so that agents that lost the runner
// together do not come back together.
func jitter(d time.Duration) time.Duration {
	if d < 2 {
		return d
	}
	return d/2 + rand.N(d/2)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

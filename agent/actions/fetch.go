package actions

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// retryPolicy bounds how a download recovers from failures.
type retryPolicy struct {
	attempts   int           // consecutive failures allowed; 0: none
	minBackoff time.Duration // first wait, doubled each time
	maxBackoff time.Duration
	budget     time.Duration // total time spent failing, 0: unbounded
}

// retryPolicy reads Tinkerbell's RETRY_ENABLED and RETRY_DURATION_MINUTES.
func (a *Actions) retryPolicy(p *params) retryPolicy {
	r := retryPolicy{
		attempts:   a.cfg.RetryAttempts,
		minBackoff: a.cfg.RetryMinBackoff,
		maxBackoff: a.cfg.RetryMaxBackoff,
	}
	if !p.boolean("RETRY_ENABLED", true) {
		r.attempts = 0
	}
	r.budget = p.minutes("RETRY_DURATION_MINUTES")
	return r
}

// errClosed is the state of a source after Close.
var errClosed = errors.New("download closed")

// errStalled cancels a request that received nothing for StallTimeout.
var errStalled = errors.New("no data received")

// source is a resumable HTTP download: an io.Reader of the whole body that
// survives dropped connections. After a failure it asks for the rest with
// "Range: bytes=<offset>-" and If-Range (the first answer's strong ETag,
// else its Last-Modified), so it continues exactly where the stream broke
// and never mixes two versions of the file. The hash sees every byte once,
// in order. One goroutine reads; Done may be read from any.
type source struct {
	ctx    context.Context
	client *http.Client
	url    string
	retry  retryPolicy
	stall  time.Duration
	hash   *asyncHash // nil when nothing is verified
	out    Reporter

	// header adds headers to every request (registry auth is done by the
	// client's transport; this is for Accept and the like).
	header http.Header

	offset   int64 // bytes delivered to the reader
	size     int64 // from the first answer; -1 unknown
	etag     string
	modified string
	body     io.ReadCloser
	cancel   context.CancelCauseFunc
	timer    *time.Timer
	reqCtx   context.Context

	failures     int       // consecutive, without a byte received
	firstFailure time.Time // of the current run of failures
	done         atomic.Int64
	total        atomic.Int64
	err          error // sticky terminal error
}

func (a *Actions) newSource(ctx context.Context, client *http.Client, url string, h hash.Hash, retry retryPolicy, out Reporter) *source {
	var ah *asyncHash
	if h != nil {
		ah = newAsyncHash(h)
	}
	return &source{
		ctx:    ctx,
		client: client,
		url:    url,
		retry:  retry,
		stall:  a.cfg.StallTimeout,
		hash:   ah,
		out:    out,
		size:   -1,
	}
}

// Done returns the number of bytes received so far.
func (s *source) Done() int64 { return s.done.Load() }

// Total returns the size announced by the server, 0 when unknown.
func (s *source) Total() int64 { return s.total.Load() }

// Err returns the error that ended the download, if any: decompressors
// wrap or replace their reader's error, so callers ask the source.
func (s *source) Err() error { return s.err }

func (s *source) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	for {
		if s.body == nil {
			if s.size >= 0 && s.offset == s.size {
				return 0, io.EOF
			}
			if err := s.connect(); err != nil {
				s.err = err
				return 0, err
			}
		}
		n, err := s.body.Read(p)
		if n > 0 {
			if s.hash != nil {
				s.hash.Write(p[:n])
			}
			s.offset += int64(n)
			s.done.Store(s.offset)
			s.failures = 0
			s.timer.Reset(s.stall)
		}
		switch {
		case err == nil:
			return n, nil
		case errors.Is(err, io.EOF) && (s.size < 0 || s.offset == s.size):
			s.closeBody()
			return n, io.EOF
		case errors.Is(err, io.EOF):
			err = io.ErrUnexpectedEOF
		}
		// The connection broke: note it and resume on the next Read.
		cause := context.Cause(s.reqCtx)
		s.closeBody()
		if s.ctx.Err() != nil {
			s.err = fmt.Errorf("download %s: %w", s.url, context.Cause(s.ctx))
			return n, s.err
		}
		if errors.Is(cause, errStalled) {
			err = fmt.Errorf("%w for %s", errStalled, s.stall)
		}
		if ferr := s.failed(fmt.Errorf("connection lost at byte %d: %w", s.offset, err)); ferr != nil {
			s.err = ferr
			return n, ferr
		}
		if n > 0 {
			return n, nil
		}
	}
}

// Sum returns the digest of everything read, nil when nothing is
// verified. Call it after the last Read.
func (s *source) Sum() []byte {
	if s.hash == nil {
		return nil
	}
	return s.hash.Sum()
}

// Close releases the connection and the hashing goroutine.
func (s *source) Close() error {
	s.closeBody()
	if s.hash != nil {
		s.hash.Close()
	}
	if s.err == nil {
		s.err = errClosed
	}
	return nil
}

func (s *source) closeBody() {
	if s.body != nil {
		s.body.Close()
		s.body = nil
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.cancel != nil {
		s.cancel(context.Canceled)
		s.cancel = nil
	}
}

// failed records a retryable failure and says whether to give up.
func (s *source) failed(err error) error {
	if s.failures == 0 {
		s.firstFailure = time.Now()
	}
	s.failures++
	switch {
	case s.failures > s.retry.attempts:
		if s.retry.attempts == 0 {
			return fmt.Errorf("download %s: %w (retries disabled)", s.url, err)
		}
		return fmt.Errorf("download %s: giving up after %d attempts: %w", s.url, s.failures, err)
	case s.retry.budget > 0 && time.Since(s.firstFailure) > s.retry.budget:
		return fmt.Errorf("download %s: giving up after retrying for %s: %w", s.url, s.retry.budget, err)
	}
	s.out.Logf("download: %v; retry %d of %d", err, s.failures, s.retry.attempts)
	return nil
}

func (s *source) backoff() time.Duration {
	d := s.retry.minBackoff
	for i := 1; i < s.failures && d < s.retry.maxBackoff; i++ {
		d *= 2
	}
	return min(d, s.retry.maxBackoff)
}

// retryableError is an answer worth asking again; wait, when set, is the
// server's Retry-After.
type retryableError struct {
	err  error
	wait time.Duration
}

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// connect opens the body at s.offset, waiting and retrying as the policy
// allows.
func (s *source) connect() error {
	var wait time.Duration
	for {
		if s.failures > 0 {
			wait = max(wait, s.backoff())
			t := time.NewTimer(wait)
			select {
			case <-s.ctx.Done():
				t.Stop()
				return fmt.Errorf("download %s: %w", s.url, context.Cause(s.ctx))
			case <-t.C:
			}
		}
		err := s.open()
		if err == nil {
			return nil
		}
		var re *retryableError
		if !errors.As(err, &re) {
			return err
		}
		if s.ctx.Err() != nil {
			return fmt.Errorf("download %s: %w", s.url, context.Cause(s.ctx))
		}
		if ferr := s.failed(re); ferr != nil {
			return ferr
		}
		wait = min(re.wait, s.retry.maxBackoff)
	}
}

func (s *source) open() error {
	reqCtx, cancel := context.WithCancelCause(s.ctx)
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, s.url, nil)
	if err != nil {
		cancel(nil)
		return fmt.Errorf("download %q: %w", s.url, err)
	}
	for k, v := range s.header {
		req.Header[k] = v
	}
	// Ask for the bytes as stored: with transparent gzip the offsets
	// would be those of a different stream.
	req.Header.Set("Accept-Encoding", "identity")
	if s.offset > 0 {
		// With the end spelt out when known: some servers (registries
		// among them) accept no open range.
		rng := "bytes=" + strconv.FormatInt(s.offset, 10) + "-"
		if s.size > 0 {
			rng += strconv.FormatInt(s.size-1, 10)
		}
		req.Header.Set("Range", rng)
		switch {
		case s.etag != "" && !strings.HasPrefix(s.etag, "W/"):
			req.Header.Set("If-Range", s.etag)
		case s.modified != "":
			req.Header.Set("If-Range", s.modified)
		}
	}
	// The stall timer covers the wait for headers too.
	timer := time.AfterFunc(s.stall, func() { cancel(errStalled) })
	resp, err := s.client.Do(req)
	if err != nil {
		timer.Stop()
		cancel(nil)
		if errors.Is(context.Cause(reqCtx), errStalled) {
			err = fmt.Errorf("%w for %s", errStalled, s.stall)
		}
		return &retryableError{err: fmt.Errorf("GET %s: %w", s.url, err)}
	}
	keep := false
	defer func() {
		if !keep {
			timer.Stop()
			resp.Body.Close()
			cancel(nil)
		}
	}()
	status := fmt.Errorf("GET %s: %s", s.url, resp.Status)
	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		if s.offset == 0 {
			s.etag, s.modified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
			s.size = resp.ContentLength
			s.total.Store(max(s.size, 0))
			break
		}
		// The server sent the whole file: it ignores ranges, or the file
		// changed (If-Range failed). Only the first is safe to use.
		if s.etag != "" && resp.Header.Get("ETag") != s.etag {
			return fmt.Errorf("GET %s: the file changed on the server during the download (ETag %s, was %s): start again",
				s.url, resp.Header.Get("ETag"), s.etag)
		}
		if s.etag == "" && s.modified != "" && resp.Header.Get("Last-Modified") != s.modified {
			return fmt.Errorf("GET %s: the file changed on the server during the download (Last-Modified %s, was %s): start again",
				s.url, resp.Header.Get("Last-Modified"), s.modified)
		}
		s.out.Logf("download: the server ignores range requests; reading the first %d bytes again", s.offset)
		if _, err := io.CopyN(io.Discard, &stallGuard{resp.Body, timer, s.stall}, s.offset); err != nil {
			return &retryableError{err: fmt.Errorf("GET %s: skipping to byte %d: %w", s.url, s.offset, err)}
		}
	case code == http.StatusPartialContent && s.offset > 0:
		start, err := contentRangeStart(resp.Header.Get("Content-Range"))
		if err != nil || start != s.offset {
			return fmt.Errorf("GET %s: asked for bytes from %d, got Content-Range %q", s.url, s.offset, resp.Header.Get("Content-Range"))
		}
		s.out.Logf("download: resumed at byte %d", s.offset)
	case code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
		return &retryableError{err: status, wait: retryAfter(resp.Header.Get("Retry-After"))}
	default:
		return status
	}
	keep = true
	s.body, s.cancel, s.timer, s.reqCtx = resp.Body, cancel, timer, reqCtx
	timer.Reset(s.stall)
	return nil
}

// stallGuard re-arms the stall timer whenever data arrives.
type stallGuard struct {
	r     io.Reader
	timer *time.Timer
	stall time.Duration
}

func (g *stallGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if n > 0 {
		g.timer.Reset(g.stall)
	}
	return n, err
}

// contentRangeStart parses "bytes START-END/SIZE".
func contentRangeStart(v string) (int64, error) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, errors.New("not a byte range")
	}
	start, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, errors.New("no range")
	}
	return strconv.ParseInt(strings.TrimSpace(start), 10, 64)
}

// retryAfter parses a Retry-After in seconds (dates are ignored).
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

package actions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/schema"
)

func TestImage2DiskEveryCompression(t *testing.T) {
	t.Parallel()
	data := testData(1, 3<<20+1234) // not a multiple of the block size
	for _, format := range []string{formatRaw, formatGzip, formatXz, formatZstd, formatBzip2} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			blob := compress(t, format, data)
			srv := httptest.NewServer(&blobServer{data: blob, etag: `"v1"`})
			t.Cleanup(srv.Close)
			dest := destPath(t)
			rec := newRecorder(t)
			err := newTestActions(t).Run(context.Background(), step("image2disk", map[string]string{
				"IMG_URL":    srv.URL + "/image",
				"DEST_DISK":  dest,
				"CHECKSUM":   "sha256:" + sha256Hex(blob),
				"COMPRESSED": "true", // ignored: detected
			}), rec)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got, want := fileSHA256(t, dest), sha256Hex(data); got != want {
				t.Errorf("sha256 of the disk: got %s, want %s", got, want)
			}
			if !rec.has("image is " + formatName(format) + "; writing with O_DIRECT") {
				t.Errorf("no log line says the image is %s: %q", formatName(format), rec.Lines())
			}
			ps := rec.Progresses()
			if len(ps) == 0 {
				t.Fatal("no progress reported")
			}
			last := ps[len(ps)-1]
			if last.Done != int64(len(blob)) || last.Total != int64(len(blob)) || last.Written != int64(len(data)) {
				t.Errorf("last progress: got %+v, want done=total=%d written=%d", last, len(blob), len(data))
			}
		})
	}
}

func TestImage2DiskThroughPageCache(t *testing.T) {
	t.Parallel()
	// A block size O_DIRECT cannot use: the page cache path, with its
	// write-back windows (8 blocks) and waits (8 windows behind).
	data := testData(10, 7<<20+3)
	srv := httptest.NewServer(&blobServer{data: compress(t, formatGzip, data)})
	t.Cleanup(srv.Close)
	dest := destPath(t)
	rec := newRecorder(t)
	err := newTestActions(t, func(c *Config) { c.WriteBlockSize = 10000 }).Run(context.Background(),
		step("image2disk", map[string]string{"IMG_URL": srv.URL, "DEST_DISK": dest}), rec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := fileSHA256(t, dest), sha256Hex(data); got != want {
		t.Errorf("sha256 of the disk: got %s, want %s", got, want)
	}
	if !rec.has("writing through the page cache") {
		t.Errorf("no log line says the page cache was used: %q", rec.Lines())
	}
}

func TestImage2DiskOverwritesFileInPlace(t *testing.T) {
	t.Parallel()
	// A regular file stands for a disk: the image goes over its start and
	// the rest stays, as on a real disk.
	data := testData(2, 100<<10)
	dest := destPath(t)
	old := make([]byte, 300<<10)
	for i := range old {
		old[i] = 0xAA
	}
	if err := os.WriteFile(dest, old, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&blobServer{data: data})
	t.Cleanup(srv.Close)
	err := newTestActions(t).Run(context.Background(), step("image2disk", map[string]string{
		"IMG_URL": srv.URL, "DEST_DISK": dest,
	}), newRecorder(t))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	got, _ := os.ReadFile(dest)
	if len(got) != len(old) {
		t.Fatalf("disk size: got %d, want %d (unchanged)", len(got), len(old))
	}
	if sha256Hex(got[:len(data)]) != sha256Hex(data) || got[len(data)] != 0xAA {
		t.Errorf("disk content: want the image then the old bytes")
	}
}

func TestImage2DiskChecksumMismatch(t *testing.T) {
	t.Parallel()
	data := testData(3, 1<<20)
	blob := compress(t, formatZstd, data)
	srv := httptest.NewServer(&blobServer{data: blob})
	t.Cleanup(srv.Close)
	wrong := strings.Repeat("ab", 32)
	err := newTestActions(t).Run(context.Background(), step("image2disk", map[string]string{
		"IMG_URL": srv.URL, "DEST_DISK": destPath(t), "CHECKSUM": wrong, // bare hex
	}), newRecorder(t))
	t.Logf("error: %v", err)
	var ce *ChecksumError
	if !errors.As(err, &ce) {
		t.Fatalf("Run: got %v, want a *ChecksumError", err)
	}
	if ce.Got != sha256Hex(blob) || ce.Want != wrong || ce.Algorithm != "sha256" {
		t.Errorf("ChecksumError: got %+v, want got=%s want=%s", ce, sha256Hex(blob), wrong)
	}
	for _, s := range []string{sha256Hex(blob), wrong} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not show digest %s", err, s)
		}
	}
}

func TestImage2DiskSHA512(t *testing.T) {
	t.Parallel()
	data := testData(4, 200<<10)
	srv := httptest.NewServer(&blobServer{data: data})
	t.Cleanup(srv.Close)
	h := checksum{algo: "sha512"}.newHash()
	h.Write(data)
	env := map[string]string{"IMG_URL": srv.URL, "DEST_DISK": destPath(t), "CHECKSUM": fmt.Sprintf("sha512:%x", h.Sum(nil))}
	if err := newTestActions(t).Run(context.Background(), step("image2disk", env), newRecorder(t)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	env["CHECKSUM"] = "sha512:" + strings.Repeat("0", 128)
	env["DEST_DISK"] = destPath(t)
	err := newTestActions(t).Run(context.Background(), step("image2disk", env), newRecorder(t))
	var ce *ChecksumError
	if !errors.As(err, &ce) || ce.Algorithm != "sha512" {
		t.Fatalf("Run with a wrong sha512: got %v, want a sha512 *ChecksumError", err)
	}
}

func TestImage2DiskResumesDroppedConnection(t *testing.T) {
	t.Parallel()
	data := testData(5, 4<<20)
	blob := compress(t, formatZstd, data)
	cuts := []int{len(blob) / 5, len(blob) / 2}
	srv := &blobServer{data: blob, etag: `"abc"`}
	srv.fault = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n > len(cuts) {
			return false
		}
		// Serve the range asked for, broken before cuts[n-1].
		start := 0
		if n > 1 {
			start = cuts[n-2]
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(blob)-1, len(blob)))
		w.Header().Set("Content-Length", fmt.Sprint(len(blob)-start))
		w.Header().Set("ETag", `"abc"`)
		if n == 1 {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusPartialContent)
		}
		w.Write(blob[start:cuts[n-1]])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	dest := destPath(t)
	rec := newRecorder(t)
	err := newTestActions(t).Run(context.Background(), step("image2disk", map[string]string{
		"IMG_URL": hs.URL, "DEST_DISK": dest, "CHECKSUM": "sha256:" + sha256Hex(blob),
	}), rec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := fileSHA256(t, dest), sha256Hex(data); got != want {
		t.Errorf("sha256 of the disk: got %s, want %s", got, want)
	}
	reqs := srv.requests()
	if len(reqs) != 3 {
		t.Fatalf("requests: got %d, want 3 (first, then two resumes)", len(reqs))
	}
	if got := reqs[0].Header.Get("Range"); got != "" {
		t.Errorf("first request Range: got %q, want none", got)
	}
	for i, cut := range cuts {
		r := reqs[i+1]
		if got, want := r.Header.Get("Range"), fmt.Sprintf("bytes=%d-%d", cut, len(blob)-1); got != want {
			t.Errorf("resume %d Range: got %q, want %q", i+1, got, want)
		}
		if got := r.Header.Get("If-Range"); got != `"abc"` {
			t.Errorf("resume %d If-Range: got %q, want the ETag", i+1, got)
		}
		if got := r.Header.Get("Accept-Encoding"); got != "identity" {
			t.Errorf("resume %d Accept-Encoding: got %q, want identity", i+1, got)
		}
	}
	if !rec.has(fmt.Sprintf("resumed at byte %d", cuts[1])) {
		t.Errorf("no log line says it resumed at byte %d", cuts[1])
	}
}

func TestImage2DiskResumeWithoutRangeSupport(t *testing.T) {
	t.Parallel()
	// A server that ignores Range (always 200, same ETag): the agent reads
	// the start again and throws it away.
	data := testData(6, 1<<20)
	blob := compress(t, formatGzip, data)
	srv := &blobServer{data: blob}
	srv.fault = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n == 1 {
			cutAfter(w, blob, `"same"`, len(blob)/3)
		}
		w.Header().Set("ETag", `"same"`)
		w.Header().Set("Content-Length", fmt.Sprint(len(blob)))
		w.Write(blob)
		return true
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	dest := destPath(t)
	rec := newRecorder(t)
	err := newTestActions(t).Run(context.Background(), step("image2disk", map[string]string{
		"IMG_URL": hs.URL, "DEST_DISK": dest, "CHECKSUM": sha256Hex(blob),
	}), rec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := fileSHA256(t, dest), sha256Hex(data); got != want {
		t.Errorf("sha256 of the disk: got %s, want %s", got, want)
	}
	if !rec.has("ignores range requests") {
		t.Errorf("no log line about the server ignoring ranges")
	}
}

func TestImage2DiskFileChangedDuringDownload(t *testing.T) {
	t.Parallel()
	data := testData(7, 1<<20)
	blob := compress(t, formatGzip, data)
	srv := &blobServer{data: blob, etag: `"v1"`}
	srv.fault = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n == 1 {
			cutAfter(w, blob, `"v1"`, len(blob)/2)
		}
		// The file was replaced: If-Range fails, the whole new file comes.
		w.Header().Set("ETag", `"v2"`)
		http.ServeContent(w, r, "image", time.Unix(1700000001, 0), bytes.NewReader(blob))
		return true
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	err := newTestActions(t).Run(context.Background(), step("image2disk", map[string]string{
		"IMG_URL": hs.URL, "DEST_DISK": destPath(t),
	}), newRecorder(t))
	t.Logf("error: %v", err)
	if err == nil || !strings.Contains(err.Error(), "changed on the server") {
		t.Fatalf("Run: got %v, want an error saying the file changed", err)
	}
}

func TestImage2DiskRetries5xx(t *testing.T) {
	t.Parallel()
	data := testData(8, 512<<10)
	blob := compress(t, formatBzip2, data)
	srv := &blobServer{data: blob}
	srv.fault = func(n int, w http.ResponseWriter, r *http.Request) bool {
		switch n {
		case 1:
			http.Error(w, "boom", http.StatusInternalServerError)
		case 2:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case 3:
			w.Header().Set("Retry-After", "0")
			http.Error(w, "slow down", http.StatusTooManyRequests)
		default:
			return false
		}
		return true
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	dest := destPath(t)
	rec := newRecorder(t)
	err := newTestActions(t).Run(context.Background(), step("image2disk", map[string]string{
		"IMG_URL": hs.URL, "DEST_DISK": dest,
	}), rec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := fileSHA256(t, dest), sha256Hex(data); got != want {
		t.Errorf("sha256 of the disk: got %s, want %s", got, want)
	}
	if got := len(srv.requests()); got != 4 {
		t.Errorf("requests: got %d, want 4", got)
	}
	if !rec.has("500 Internal Server Error; retry 1 of 4") {
		t.Errorf("no log line for the first retry: %q", rec.Lines())
	}
}

func TestImage2DiskRetriesAreBounded(t *testing.T) {
	t.Parallel()
	srv := &blobServer{}
	srv.fault = func(n int, w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "down", http.StatusBadGateway)
		return true
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	err := newTestActions(t).Run(context.Background(), step("image2disk", map[string]string{
		"IMG_URL": hs.URL, "DEST_DISK": destPath(t),
	}), newRecorder(t))
	t.Logf("error: %v", err)
	if err == nil || !strings.Contains(err.Error(), "giving up after 5 attempts") || !strings.Contains(err.Error(), "502") {
		t.Fatalf("Run: got %v, want giving up after 5 attempts with the 502", err)
	}
	if got := len(srv.requests()); got != 5 {
		t.Errorf("requests: got %d, want 5 (1 + RetryAttempts)", got)
	}

	// RETRY_ENABLED=false: one request.
	srv2 := &blobServer{fault: srv.fault}
	hs2 := httptest.NewServer(srv2)
	t.Cleanup(hs2.Close)
	err = newTestActions(t).Run(context.Background(), step("image2disk", map[string]string{
		"IMG_URL": hs2.URL, "DEST_DISK": destPath(t), "RETRY_ENABLED": "false",
	}), newRecorder(t))
	if err == nil || len(srv2.requests()) != 1 {
		t.Fatalf("RETRY_ENABLED=false: got %v after %d requests, want an error after 1", err, len(srv2.requests()))
	}
}

func TestImage2DiskNoRetryOn404(t *testing.T) {
	t.Parallel()
	srv := &blobServer{}
	srv.fault = func(n int, w http.ResponseWriter, r *http.Request) bool {
		http.NotFound(w, r)
		return true
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	err := newTestActions(t).Run(context.Background(), step("image2disk", map[string]string{
		"IMG_URL": hs.URL + "/missing.img", "DEST_DISK": destPath(t),
	}), newRecorder(t))
	if err == nil || !strings.Contains(err.Error(), "404 Not Found") {
		t.Fatalf("Run: got %v, want a 404 error", err)
	}
	if got := len(srv.requests()); got != 1 {
		t.Errorf("requests: got %d, want 1", got)
	}
}

func TestImage2DiskStalledConnectionResumes(t *testing.T) {
	t.Parallel()
	data := testData(9, 1<<20)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv := &blobServer{data: data, etag: `"s"`}
	srv.fault = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n > 1 {
			return false
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Header().Set("ETag", `"s"`)
		w.WriteHeader(http.StatusOK)
		w.Write(data[:100<<10])
		w.(http.Flusher).Flush()
		select { // hang, connection open, until the client gives up
		case <-r.Context().Done():
		case <-release:
		}
		return true
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	dest := destPath(t)
	a := newTestActions(t, func(c *Config) { c.StallTimeout = time.Second })
	rec := newRecorder(t)
	err := a.Run(context.Background(), step("image2disk", map[string]string{"IMG_URL": hs.URL, "DEST_DISK": dest}), rec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := fileSHA256(t, dest), sha256Hex(data); got != want {
		t.Errorf("sha256 of the disk: got %s, want %s", got, want)
	}
	if !rec.has("no data received for 1s") {
		t.Errorf("no log line about the stall: %q", rec.Lines())
	}
}

func TestImage2DiskTimeout(t *testing.T) {
	t.Parallel()
	// The server sends a little, then nothing (below the stall timeout):
	// the step's Timeout ends the action.
	var served atomic.Bool
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10000000")
		w.WriteHeader(http.StatusOK)
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		served.Store(true)
		<-r.Context().Done()
	}))
	t.Cleanup(hs.Close)
	st := step("image2disk", map[string]string{"IMG_URL": hs.URL, "DEST_DISK": destPath(t)})
	st.Timeout = schema.Duration(2 * time.Second)
	err := newTestActions(t).Run(context.Background(), st, newRecorder(t))
	t.Logf("error: %v", err)
	var te *TimeoutError
	if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: got %v, want a *TimeoutError matching context.DeadlineExceeded", err)
	}
	if !served.Load() {
		t.Error("the server never answered: the timeout hit something else")
	}

	// A cancelled parent is not the step's timeout.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = newTestActions(t).Run(ctx, st, newRecorder(t))
	if !errors.Is(err, context.Canceled) || errors.As(err, &te) {
		t.Fatalf("Run with a cancelled context: got %v, want context.Canceled and no TimeoutError", err)
	}
}

func TestImage2DiskBadParams(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"nothing", nil, []string{"env IMG_URL: required", "env DEST_DISK: required"}},
		{"bad checksum", map[string]string{"IMG_URL": "http://127.0.0.1:1/x", "DEST_DISK": "/tmp/x", "CHECKSUM": "md5:abc"},
			[]string{`env CHECKSUM="md5:abc": unknown algorithm "md5"`}},
		{"short hex", map[string]string{"IMG_URL": "http://127.0.0.1:1/x", "DEST_DISK": "/tmp/x", "CHECKSUM": "sha256:abcd"},
			[]string{"want 64 hex digits"}},
		{"bad interval", map[string]string{"IMG_URL": "http://127.0.0.1:1/x", "DEST_DISK": "/tmp/x", "PROGRESS_INTERVAL_SECONDS": "soon"},
			[]string{"env PROGRESS_INTERVAL_SECONDS"}},
		{"bad retry", map[string]string{"IMG_URL": "http://127.0.0.1:1/x", "DEST_DISK": "/tmp/x", "RETRY_ENABLED": "maybe"},
			[]string{"env RETRY_ENABLED"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := newTestActions(t).Run(context.Background(), step("image2disk", tc.env), newRecorder(t))
			if err == nil {
				t.Fatal("Run: got nil, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q: want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestImage2DiskRefusesDirectory(t *testing.T) {
	t.Parallel()
	hs := httptest.NewServer(&blobServer{data: []byte("x")})
	t.Cleanup(hs.Close)
	err := newTestActions(t).Run(context.Background(), step("image2disk", map[string]string{
		"IMG_URL": hs.URL, "DEST_DISK": t.TempDir(),
	}), newRecorder(t))
	if err == nil || !strings.Contains(err.Error(), "is a directory, want a block device or a regular file") {
		t.Fatalf("Run: got %v, want a refusal of the directory", err)
	}
}

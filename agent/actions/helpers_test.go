package actions

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/gittest"
)

// recorder is a Reporter that keeps what it is told.
type recorder struct {
	t        testing.TB
	mu       sync.Mutex
	lines    []string
	progress []Progress
}

func newRecorder(t testing.TB) *recorder { return &recorder{t: t} }

func (r *recorder) Logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.lines = append(r.lines, line)
	r.mu.Unlock()
	r.t.Log(line)
}

// Stderr records a command's error line with the prefix "stderr: ".
func (r *recorder) Stderr(line string) { r.Logf("stderr: %s", line) }

func (r *recorder) Progress(p Progress) {
	r.mu.Lock()
	r.progress = append(r.progress, p)
	r.mu.Unlock()
}

func (r *recorder) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

func (r *recorder) Progresses() []Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Progress(nil), r.progress...)
}

// has reports whether some line contains s.
func (r *recorder) has(s string) bool {
	for _, l := range r.Lines() {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// newTestActions returns actions with fast retries and small blocks, so
// that a few MiB exercise every path. AllowReboot is never set here.
func newTestActions(t testing.TB, mod ...func(*Config)) *Actions {
	t.Helper()
	cfg := Config{
		Log:              zerolog.New(zerolog.NewTestWriter(t)),
		TempDir:          t.TempDir(),
		Root:             t.TempDir(),
		ProgressInterval: 50 * time.Millisecond,
		RetryAttempts:    4,
		RetryMinBackoff:  10 * time.Millisecond,
		RetryMaxBackoff:  50 * time.Millisecond,
		StallTimeout:     30 * time.Second,
		WriteBlockSize:   64 << 10,
	}
	for _, m := range mod {
		m(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	// A failed test must not leave mounts behind (nor let TempDir's
	// removal walk into them). Runs before TempDir's own cleanup.
	t.Cleanup(func() {
		for _, m := range slices.Backward(mountedUnder(t, a.cfg.TempDir)) {
			t.Errorf("left mounted: %s", m)
			if err := unmount(m, true); err != nil {
				t.Errorf("unmount %s: %v", m, err)
			}
		}
	})
	return a
}

func step(uses string, env map[string]string, args ...string) schema.Step {
	return schema.Step{Name: "test-" + uses, Uses: uses, Env: env, Args: args}
}

// ci reports whether missing prerequisites must fail rather than skip.
func ci() bool { return os.Getenv("CI") == "true" }

// needRoot skips a test that needs root (mount, loop devices, chown), or
// fails it in CI.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := os.Stat("/dev/loop-control"); err == nil {
			return
		}
		if ci() {
			t.Fatalf("/dev/loop-control is missing: loop devices are needed (CI=true)")
		}
		t.Skip("no /dev/loop-control: loop devices are needed")
	}
	if ci() {
		t.Fatalf("this test needs root (CI=true)")
	}
	t.Skip("this test needs root")
}

// testData makes n bytes that compress like a disk image: random 4 KiB
// blocks, some repeated, some zero.
func testData(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pool := make([][]byte, 8)
	for i := range pool {
		pool[i] = make([]byte, 4096)
		for j := range pool[i] {
			pool[i][j] = byte(rng.UintN(256))
		}
	}
	var b bytes.Buffer
	b.Grow(n)
	for b.Len() < n {
		switch k := rng.UintN(10); {
		case k < 3:
			b.Write(make([]byte, 4096))
		case k < 6:
			b.Write(pool[rng.UintN(uint(len(pool)))])
		default:
			blk := make([]byte, 4096)
			for j := range blk {
				blk[j] = byte(rng.UintN(256))
			}
			b.Write(blk)
		}
	}
	return b.Bytes()[:n]
}

// compress runs the real tool: gzip, xz, zstd or bzip2 ("raw" copies).
func compress(t testing.TB, format string, data []byte) []byte {
	t.Helper()
	if format == formatRaw {
		return data
	}
	tool := map[string][]string{
		formatGzip:  {"gzip", "-c", "-6"},
		formatXz:    {"xz", "-c", "-T1", "-3"},
		formatZstd:  {"zstd", "-c", "-q", "-3"},
		formatBzip2: {"bzip2", "-c", "-6"},
	}[format]
	bin := gittest.NeedTool(t, tool[0])
	cmd := exec.Command(bin, tool[1:]...)
	cmd.Stdin = bytes.NewReader(data)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v: %s", tool[0], err, errb.String())
	}
	return out.Bytes()
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileSHA256(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256Hex(b)
}

// blobServer serves one file with http.ServeContent (ranges, ETag,
// If-Range), with faults injected by fault before it is served.
type blobServer struct {
	data  []byte
	etag  string
	mu    sync.Mutex
	reqs  []*http.Request
	fault func(n int, w http.ResponseWriter, r *http.Request) bool // true: handled
}

func (s *blobServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, r.Clone(r.Context()))
	n := len(s.reqs)
	data, etag := s.data, s.etag
	s.mu.Unlock()
	if s.fault != nil && s.fault(n, w, r) {
		return
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	http.ServeContent(w, r, "image", time.Unix(1700000000, 0), bytes.NewReader(data))
}

func (s *blobServer) requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.reqs...)
}

// cutAfter writes the first n bytes of a full answer and breaks the
// connection, as a network failure would.
func cutAfter(w http.ResponseWriter, data []byte, etag string, n int) {
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.Header().Set("ETag", etag)
	w.Header().Set("Accept-Ranges", "bytes")
	w.WriteHeader(http.StatusOK)
	w.Write(data[:n])
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

func destPath(t testing.TB) string { return filepath.Join(t.TempDir(), "disk.img") }

package actions

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testRegistry runs go-containerregistry's in-process registry. When cut
// is set, the first GET of a blob is broken after cut bytes.
func testRegistry(t testing.TB, cut int) (host string, blobGets func() []string) {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var (
		mu     sync.Mutex
		ranges []string
		broken atomic.Bool
	)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			mu.Lock()
			ranges = append(ranges, r.Header.Get("Range"))
			mu.Unlock()
			if cut > 0 && broken.CompareAndSwap(false, true) {
				rec := httptest.NewRecorder()
				reg.ServeHTTP(rec, r)
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(rec.Body.Bytes()[:cut])
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	return strings.TrimPrefix(hs.URL, "http://"), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), ranges...)
	}
}

// pushDisk pushes an image whose one layer is blob.
func pushDisk(t testing.TB, ref string, layers ...[]byte) {
	t.Helper()
	img := empty.Image
	for _, l := range layers {
		var err error
		img, err = mutate.AppendLayers(img, static.NewLayer(l, types.MediaType("application/vnd.gitmetal.disk.image.v1+zstd")))
		if err != nil {
			t.Fatal(err)
		}
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func TestOCI2Disk(t *testing.T) {
	t.Parallel()
	data := testData(20, 2<<20)
	blob := compress(t, formatZstd, data)
	for _, tc := range []struct {
		name string
		cut  int
	}{
		{"whole", 0},
		{"dropped connection", len(blob) / 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			host, blobGets := testRegistry(t, tc.cut)
			ref := host + "/os/debian:12"
			pushDisk(t, ref, blob)
			dest := destPath(t)
			rec := newRecorder(t)
			err := newTestActions(t).Run(context.Background(), step("oci2disk", map[string]string{
				"IMG_URL": ref, "DEST_DISK": dest,
			}), rec)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got, want := fileSHA256(t, dest), sha256Hex(data); got != want {
				t.Errorf("sha256 of the disk: got %s, want %s", got, want)
			}
			if !rec.has("sha256 verified") {
				t.Errorf("no log line says the layer digest was verified")
			}
			want := []string{""}
			if tc.cut > 0 {
				want = append(want, fmt.Sprintf("bytes=%d-%d", tc.cut, len(blob)-1))
			}
			if got := blobGets(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("blob GET ranges: got %q, want %q", got, want)
			}
		})
	}
}

func TestOCI2DiskErrors(t *testing.T) {
	t.Parallel()
	host, _ := testRegistry(t, 0)
	pushDisk(t, host+"/two:v1", []byte("one"), []byte("two"))
	for _, tc := range []struct {
		name, ref, want string
	}{
		{"two layers", host + "/two:v1", "the image has 2 layers, want exactly one"},
		{"missing", host + "/nothing:v1", "pull " + host + "/nothing:v1"},
		{"bad reference", "UPPER/Case::x", `env IMG_URL="UPPER/Case::x": not an image reference`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := newTestActions(t).Run(context.Background(), step("oci2disk", map[string]string{
				"IMG_URL": tc.ref, "DEST_DISK": destPath(t),
			}), newRecorder(t))
			t.Logf("error: %v", err)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

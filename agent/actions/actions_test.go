package actions

import (
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/schema"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"relative root", Config{Root: "rel"}, `Root "rel": want an absolute path`},
		{"missing temp dir", Config{TempDir: "/no/such/dir"}, "TempDir: stat /no/such/dir"},
		{"root is a file", Config{Root: file}, "not a directory"},
		{"negative interval", Config{ProgressInterval: -time.Second}, "ProgressInterval -1s: want a positive duration"},
		{"backoffs", Config{RetryMinBackoff: time.Minute, RetryMaxBackoff: time.Second}, "RetryMaxBackoff 1s is less than RetryMinBackoff 1m0s"},
		{"attempts", Config{RetryAttempts: -1}, "RetryAttempts -1"},
		{"block size", Config{WriteBlockSize: -1}, "WriteBlockSize -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: got %v, want an error containing %q", err, tc.want)
			}
		})
	}

	a, err := New(Config{})
	if err != nil {
		t.Fatalf("New(Config{}): %v", err)
	}
	if a.cfg.AllowReboot || a.cfg.Root != "/" || a.cfg.ProgressInterval != DefaultProgressInterval ||
		a.cfg.RetryAttempts != DefaultRetryAttempts || a.cfg.WriteBlockSize != DefaultWriteBlockSize || a.cfg.HTTPClient == nil {
		t.Errorf("defaults: got %+v", a.cfg)
	}
}

func TestEveryBuiltinIsImplemented(t *testing.T) {
	t.Parallel()
	a := newTestActions(t)
	for _, b := range schema.Builtins {
		if !a.Has(b) {
			t.Errorf("schema.Builtins has %q, the agent does not", b)
		}
	}
	if got, want := len(a.builtins), len(schema.Builtins); got != want {
		t.Errorf("built-ins: got %d, want %d (schema.Builtins)", got, want)
	}
}

func TestRunUnknownAction(t *testing.T) {
	t.Parallel()
	err := newTestActions(t).Run(context.Background(), schema.Step{Name: "x", Uses: "ghcr.io/org/action:v1"}, nil)
	if !errors.Is(err, ErrUnknownAction) || !strings.Contains(err.Error(), `"ghcr.io/org/action:v1"`) {
		t.Fatalf("Run: got %v, want ErrUnknownAction naming the image", err)
	}
}

func TestRunNilReporter(t *testing.T) {
	t.Parallel()
	a := newTestActions(t)
	if err := a.Run(context.Background(), step("writefile", map[string]string{"DEST_PATH": "/a"}), nil); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// mbrImage is a disk image with an MBR partition table: one Linux
// partition from sector 2048, 2048 sectors long.
func mbrImage(size int) []byte {
	img := testData(30, size)
	copy(img[446:510], make([]byte, 64))
	p := img[446:462]
	p[4] = 0x83
	binary.LittleEndian.PutUint32(p[8:], 2048)
	binary.LittleEndian.PutUint32(p[12:], 2048)
	img[510], img[511] = 0x55, 0xaa
	return img
}

func TestImage2DiskBlockDevice(t *testing.T) {
	t.Parallel()
	needRoot(t)
	backing := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(backing, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	dev, f, err := attachLoop(backing, loopPartscan)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := detachLoop(f); err != nil {
			t.Errorf("detach %s: %v", dev, err)
		}
	})
	name := filepath.Base(dev)
	part := fmt.Sprintf("/sys/class/block/%sp1", name)
	if _, err := os.Stat(part); err == nil {
		t.Fatalf("%s exists before the image is written", part)
	}

	data := mbrImage(2 << 20)
	hs := httptest.NewServer(&blobServer{data: compress(t, formatXz, data)})
	t.Cleanup(hs.Close)
	rec := newRecorder(t)
	err = newTestActions(t).Run(context.Background(), step("image2disk", map[string]string{"IMG_URL": hs.URL, "DEST_DISK": dev}), rec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !rec.has("re-read the partition table of " + dev) {
		t.Errorf("no log line about the partition table")
	}
	if kernelLacks(t, "CONFIG_MSDOS_PARTITION") {
		// Such a kernel (this machine's, for one) finds no partitions
		// whatever the table: BLKRRPART succeeding is all there is.
		t.Logf("the kernel has no MBR partition parser: not looking for %s", part)
	} else if _, err := os.Stat(part); err != nil {
		t.Errorf("partition 1 after image2disk: %v", err)
	}
	got, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	if sha256Hex(got[:len(data)]) != sha256Hex(data) {
		t.Errorf("the device does not hold the image")
	}
}

// kernelLacks reports whether /proc/config.gz says option is not set; it
// is false when the configuration cannot be read.
func kernelLacks(t testing.TB, option string) bool {
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return false
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return false
	}
	b, err := io.ReadAll(z)
	if err != nil {
		return false
	}
	return strings.Contains(string(b), "# "+option+" is not set")
}

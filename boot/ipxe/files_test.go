package ipxe

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/test/gittest"
)

type fileFixture struct {
	ipxeDir, installerDir string
	efi, kernel, initrd   []byte
}

func newFileFixture(t *testing.T) fileFixture {
	t.Helper()
	base := t.TempDir()
	rnd := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	f := fileFixture{
		ipxeDir: filepath.Join(base, "ipxe"), installerDir: filepath.Join(base, "installer"),
		efi: rnd(200_000), kernel: rnd(300_001), initrd: rnd(123_457),
	}
	write := func(p string, b []byte) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(f.ipxeDir, ".hidden"), []byte("no"))
	// Debian links ipxe.efi to /boot/ipxe.efi: a top-level link is served.
	write(filepath.Join(base, "boot", "ipxe.efi"), f.efi)
	if err := os.Symlink(filepath.Join(base, "boot", "ipxe.efi"), filepath.Join(f.ipxeDir, "ipxe.efi")); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(f.installerDir, "vmlinuz"), f.kernel)
	write(filepath.Join(f.installerDir, "v2", "initramfs.cpio.gz"), f.initrd)
	write(filepath.Join(base, "secret"), []byte("secret"))
	for link, target := range map[string]string{
		"link-out": filepath.Join(base, "secret"), "link-up": "../secret", "dir-out": base, "link-in": "v2/initramfs.cpio.gz",
	} {
		if err := os.Symlink(target, filepath.Join(f.installerDir, link)); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func TestFiles(t *testing.T) {
	t.Parallel()
	f := newFileFixture(t)
	_, mux := newHandler(t, Config{Store: store.TestStore(t, nil), Installs: NoInstalls{}, IPXEDir: f.ipxeDir, InstallerDir: f.installerDir})
	tests := []struct {
		path string
		code int
		want []byte
	}{
		{"/ipxe/bin/ipxe.efi", 200, f.efi},
		{"/installer/vmlinuz", 200, f.kernel},
		{"/installer/v2/initramfs.cpio.gz", 200, f.initrd},
		{"/installer/link-in", 200, f.initrd},
		{"/ipxe/bin/.hidden", 404, nil},
		{"/ipxe/bin/missing.efi", 404, nil},
		{"/ipxe/bin/..%2f..%2fsecret", 404, nil},
		{"/ipxe/bin/%2e%2e", 404, nil},
		{"/installer/", 404, nil},
		{"/installer/v2", 404, nil},
		{"/installer/v2/", 404, nil},
		{"/installer/link-out", 404, nil},
		{"/installer/link-up", 404, nil},
		{"/installer/dir-out/secret", 404, nil},
		{"/installer/..%2fsecret", 404, nil},
		{"/installer/v2/..%2f..%2fsecret", 404, nil},
		{"/installer/%2e%2e/secret", 404, nil},
		{"/installer/v2%5cinitramfs.cpio.gz", 404, nil},
		{"/installer/vmlinuz%00", 404, nil},
	}
	for _, tc := range tests {
		code, body, hdr := get(mux, tc.path, "10.9.9.9:1")
		// ServeMux answers a path with ".." with a redirect to the
		// cleaned path; either way nothing is served.
		if tc.code == 404 && (code == 404 || code == http.StatusMovedPermanently) {
			if strings.Contains(body, "secret") {
				t.Errorf("GET %s: got %d with the secret", tc.path, code)
			}
			continue
		}
		if code != tc.code {
			t.Errorf("GET %s: got %d, want %d", tc.path, code, tc.code)
			continue
		}
		if !bytes.Equal([]byte(body), tc.want) {
			t.Errorf("GET %s: got %d bytes, want the file's %d", tc.path, len(body), len(tc.want))
		}
		if got := hdr.Get("Accept-Ranges"); got != "bytes" {
			t.Errorf("GET %s: got Accept-Ranges %q, want bytes", tc.path, got)
		}
	}
}

func TestFilesNotConfigured(t *testing.T) {
	t.Parallel()
	_, mux := newHandler(t, Config{Store: store.TestStore(t, nil), Installs: NoInstalls{}})
	for _, p := range []string{"/ipxe/bin/ipxe.efi", "/installer/vmlinuz"} {
		if code, _, _ := get(mux, p, "10.9.9.9:1"); code != 404 {
			t.Errorf("GET %s: got %d, want 404", p, code)
		}
	}
}

// TestRangeWithCurl fetches byte ranges of the installer files with curl
// over a real listener, as iPXE and the installer resume downloads.
func TestRangeWithCurl(t *testing.T) {
	t.Parallel()
	curl := gittest.NeedTool(t, "curl")
	f := newFileFixture(t)
	_, mux := newHandler(t, Config{Store: store.TestStore(t, nil), Installs: NoInstalls{}, IPXEDir: f.ipxeDir, InstallerDir: f.installerDir})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tests := []struct {
		path, rng string
		want      []byte
	}{
		{"/installer/vmlinuz", "0-99", f.kernel[:100]},
		{"/installer/vmlinuz", "300000-", f.kernel[300000:]},
		{"/installer/v2/initramfs.cpio.gz", "1000-1999", f.initrd[1000:2000]},
		{"/ipxe/bin/ipxe.efi", "-10", f.efi[len(f.efi)-10:]},
		{"/installer/vmlinuz", "", f.kernel},
	}
	for _, tc := range tests {
		args := []string{"-sS", "--fail", "--max-time", "30", "-w", "%{http_code}", "-o", "-"}
		if tc.rng != "" {
			args = append(args, "-r", tc.rng)
		}
		out, err := exec.Command(curl, append(args, srv.URL+tc.path)...).Output()
		if err != nil {
			t.Errorf("curl %s %s: %v", tc.path, tc.rng, err)
			continue
		}
		code := string(out[len(out)-3:])
		body := out[:len(out)-3]
		wantCode := "206"
		if tc.rng == "" {
			wantCode = "200"
		}
		if code != wantCode || !bytes.Equal(body, tc.want) {
			t.Errorf("curl %s range %q: got %s with %d bytes, want %s with %d", tc.path, tc.rng, code, len(body), wantCode, len(tc.want))
		}
	}
	// A HEAD gives the length without the body.
	resp, err := http.Head(srv.URL + "/installer/vmlinuz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(f.kernel)) || len(b) != 0 {
		t.Errorf("HEAD: got %d length %d body %d, want 200 length %d no body", resp.StatusCode, resp.ContentLength, len(b), len(f.kernel))
	}
}

func TestValidNames(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"ipxe.efi": true, "snp-arm64.efi": true, "": false, ".": false, "..": false, ".hidden": false,
		"a/b": false, `a\b`: false, "a\x00b": false, "a\nb": false, "a\x7fb": false, strings.Repeat("a", 256): false,
	} {
		if got := ValidBinaryName(name); got != want {
			t.Errorf("ValidBinaryName(%q): got %v, want %v", name, got, want)
		}
	}
	for name, want := range map[string]bool{
		"vmlinuz": true, "v2/initramfs.cpio.gz": true, ".config/x": true, "": false, "/etc/passwd": false,
		"../x": false, "a/../b": false, "a/./b": false, "a//b": false, "a/": false, `a\b`: false, "a\x00": false,
	} {
		if got := ValidTreePath(name); got != want {
			t.Errorf("ValidTreePath(%q): got %v, want %v", name, got, want)
		}
	}
}

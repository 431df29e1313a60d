package tftp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/test/gittest"
)

// client is a real TFTP client program: get fetches name from
// 127.0.0.1:port into out.
type client struct {
	name string
	tool string
	get  func(port int, name, out string) []string
	// notFoundExit is the client's exit status for a file-not-found error
	// packet, when it has its own (0: it prints "not found").
	notFoundExit int
}

var clients = []client{
	// tftp-hpa: lock-step, 512-byte blocks, no options.
	{"tftp-hpa", "tftp", func(port int, name, out string) []string {
		return []string{"tftp", "-m", "binary", "127.0.0.1", strconv.Itoa(port), "-c", "get", name, out}
	}, 0},
	// busybox tftp with blksize 1468 (and tsize, which busybox always asks for).
	{"busybox-blksize-1468", "busybox", func(port int, name, out string) []string {
		return []string{"busybox", "tftp", "-g", "-b", "1468", "-r", name, "-l", out, "127.0.0.1", strconv.Itoa(port)}
	}, 0},
	// curl with blksize 8192.
	{"curl-blksize-8192", "curl", func(port int, name, out string) []string {
		return []string{"curl", "-sS", "--fail", "--max-time", "60", "--tftp-blksize", "8192",
			"-o", out, fmt.Sprintf("tftp://127.0.0.1:%d/%s", port, name)}
	}, 68}, // CURLE_TFTP_NOTFOUND
}

// run runs a client with a time limit and returns its combined output.
func run(t *testing.T, argv []string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func sha(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// TestRealClients fetches every file with tftp-hpa, busybox and curl and
// compares SHA-256 digests; then checks that each client is refused the
// names outside the trees.
func TestRealClients(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, addr := startServer(t, Config{IPXEDir: f.ipxeDir, AssetDir: f.assetDir})
	names := make([]string, 0, len(f.files))
	for n := range f.files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			gittest.NeedTool(t, c.tool)
			for _, name := range names {
				out := filepath.Join(t.TempDir(), "out")
				msg, err := run(t, c.get(addr.Port, name, out))
				if err != nil {
					t.Errorf("get %s: %v\n%s", name, err, msg)
					continue
				}
				got, err := os.ReadFile(out)
				if err != nil {
					t.Errorf("get %s: %v\n%s", name, err, msg)
					continue
				}
				if sha(got) != sha(f.files[name]) {
					t.Errorf("get %s: got sha256 %s (%d bytes), want %s (%d bytes)", name, sha(got), len(got), sha(f.files[name]), len(f.files[name]))
				}
			}
			for _, name := range []string{"../outside/secret", "/etc/passwd", "link-out", "link-up", "dir-out/secret", "a"} {
				out := filepath.Join(t.TempDir(), "out")
				msg, err := run(t, c.get(addr.Port, name, out))
				got, _ := os.ReadFile(out)
				// tftp-hpa exits 0 after an error packet, so the message
				// decides: each client prints the server's "file not found".
				var ee *exec.ExitError
				notFound := strings.Contains(strings.ToLower(msg), "not found") ||
					(c.notFoundExit != 0 && errors.As(err, &ee) && ee.ExitCode() == c.notFoundExit)
				if !notFound || len(got) > 0 {
					t.Errorf("get %s: got %d bytes, exit %v, output %q; want a file-not-found error", name, len(got), err, msg)
				}
			}
		})
	}
}

// TestDebianIPXE serves Debian's /usr/lib/ipxe as it is installed (ipxe.efi
// is a link to /boot/ipxe.efi there) to tftp-hpa.
func TestDebianIPXE(t *testing.T) {
	t.Parallel()
	const dir = "/usr/lib/ipxe"
	if _, err := os.Stat(filepath.Join(dir, "ipxe.efi")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Debian package ipxe is required: %v", err)
		}
		t.Skipf("Debian package ipxe not installed: %v", err)
	}
	gittest.NeedTool(t, "tftp")
	_, addr := startServer(t, Config{IPXEDir: dir})
	for _, name := range []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"} {
		want, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), name)
		if msg, err := run(t, clients[0].get(addr.Port, name, out)); err != nil {
			t.Fatalf("get %s: %v\n%s", name, err, msg)
		}
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("get %s: got %d bytes (err %v), want the %d bytes of %s", name, len(got), err, len(want), name)
		}
	}
}

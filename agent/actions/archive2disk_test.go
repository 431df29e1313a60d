package actions

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gitmetal/gitmetal/test/gittest"
)

// entry is one tar entry to build.
type entry struct {
	name, link string
	typ        byte
	mode       int64
	uid, gid   int
	body       string
	mtime      time.Time
}

func makeTar(t testing.TB, entries []entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			Size: int64(len(e.body)), ModTime: e.mtime, Format: tar.FormatPAX}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1600000000, 0)
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func serveBlob(t testing.TB, blob []byte) string {
	hs := httptest.NewServer(&blobServer{data: blob, etag: `"t"`})
	t.Cleanup(hs.Close)
	return hs.URL + "/rootfs.tar"
}

func TestArchive2DiskUnpacks(t *testing.T) {
	t.Parallel()
	dirTime := time.Unix(1500000000, 0)
	entries := []entry{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "./etc/", typ: tar.TypeDir, mode: 0o755},
		{name: "./etc/hostname", typ: tar.TypeReg, mode: 0o640, uid: 1000, gid: 1001, body: "node-1\n"},
		{name: "./etc/hostname.hard", typ: tar.TypeLink, link: "./etc/hostname"},
		{name: "./usr/bin/tool", typ: tar.TypeReg, mode: 0o4755, body: "#!/bin/sh\n"}, // parent not listed
		{name: "./bin", typ: tar.TypeSymlink, link: "usr/bin"},
		{name: "./bin/other", typ: tar.TypeReg, mode: 0o755, body: "via the link"}, // through an inside link
		{name: "./etc/resolv.conf", typ: tar.TypeSymlink, link: "/run/systemd/resolve/stub-resolv.conf"},
		{name: "./var/secret/", typ: tar.TypeDir, mode: 0o700, uid: 1000, gid: 1000, mtime: dirTime},
		{name: "./var/secret/key", typ: tar.TypeReg, mode: 0o600, body: "k"},
		{name: "./var/ro/", typ: tar.TypeDir, mode: 0o555},
		{name: "./var/ro/file", typ: tar.TypeReg, mode: 0o444, body: "in a read-only directory"},
		{name: "./etc/hostname", typ: tar.TypeReg, mode: 0o644, uid: 1000, gid: 1001, body: "node-2\n"}, // replaced
	}
	for _, tc := range []struct{ format, archiveType string }{
		{formatRaw, "tar"},
		{formatGzip, "targz"},
		{formatZstd, "tar.zst"},
		{formatZstd, "targz"}, // wrong type: the content decides
	} {
		t.Run(tc.format+"-"+tc.archiveType, func(t *testing.T) {
			t.Parallel()
			blob := compress(t, tc.format, makeTar(t, entries))
			sum := sha512.Sum512(blob)
			a := newTestActions(t)
			rec := newRecorder(t)
			err := a.Run(context.Background(), step("archive2disk", map[string]string{
				"ARCHIVE_URL":      serveBlob(t, blob),
				"ARCHIVE_TYPE":     tc.archiveType,
				"TARFILE_CHECKSUM": "sha512:" + hex.EncodeToString(sum[:]),
				"DEST_PATH":        "/srv/rootfs",
			}), rec)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			dest := filepath.Join(a.cfg.Root, "srv/rootfs")
			// Without root, var/ro would stop TempDir's removal.
			t.Cleanup(func() { os.Chmod(filepath.Join(dest, "var/ro"), 0o755) })
			checkTree(t, dest, map[string]string{
				"etc":               "dir 0755",
				"etc/hostname":      "file 0644 node-2\n",
				"etc/hostname.hard": "file 0640 node-1\n", // a link to the first, replaced, file
				"etc/resolv.conf":   "link /run/systemd/resolve/stub-resolv.conf",
				"usr":               "dir 0755",
				"usr/bin":           "dir 0755",
				"usr/bin/tool":      "file 4755 #!/bin/sh\n",
				"usr/bin/other":     "file 0755 via the link",
				"bin":               "link usr/bin",
				"var":               "dir 0755",
				"var/secret":        "dir 0700",
				"var/secret/key":    "file 0600 k",
				"var/ro":            "dir 0555",
				"var/ro/file":       "file 0444 in a read-only directory",
				"":                  "dir 0755",
			})
			fi, err := os.Stat(filepath.Join(dest, "var/secret"))
			if err != nil {
				t.Fatal(err)
			}
			if !fi.ModTime().Equal(dirTime) {
				t.Errorf("var/secret mtime: got %v, want %v", fi.ModTime(), dirTime)
			}
			if os.Geteuid() == 0 {
				st := fi.Sys().(*syscall.Stat_t)
				if st.Uid != 1000 || st.Gid != 1000 {
					t.Errorf("var/secret owner: got %d:%d, want 1000:1000", st.Uid, st.Gid)
				}
				hfi, _ := os.Stat(filepath.Join(dest, "etc/hostname"))
				if st := hfi.Sys().(*syscall.Stat_t); st.Uid != 1000 || st.Gid != 1001 {
					t.Errorf("etc/hostname owner: got %d:%d, want 1000:1001", st.Uid, st.Gid)
				}
			}
			if tc.archiveType == "targz" && tc.format == formatZstd && !rec.has("ARCHIVE_TYPE says gzip-compressed but the archive is zstd-compressed") {
				t.Errorf("no log line about the wrong ARCHIVE_TYPE")
			}
			if !rec.has("sha512 verified") {
				t.Errorf("no log line says the checksum was verified")
			}
		})
	}
}

// checkTree compares files under dir with want: "dir MODE", "file MODE
// CONTENT", "link TARGET" ("" is dir itself).
func checkTree(t testing.TB, dir string, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for name := range want {
		p := filepath.Join(dir, name)
		fi, err := os.Lstat(p)
		if err != nil {
			got[name] = err.Error()
			continue
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			got[name] = "link " + l
		case fi.IsDir():
			got[name] = "dir " + octal(fi.Mode())
		default:
			b, _ := os.ReadFile(p)
			got[name] = "file " + octal(fi.Mode()) + " " + string(b)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tree under %s (-want +got):\n%s", dir, diff)
	}
}

func octal(m fs.FileMode) string { return fmt.Sprintf("%04o", unixMode(m)) }

func TestArchive2DiskRefusesEscapes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		entries []entry
		want    string
	}{
		{"dot-dot", []entry{{name: "../evil", typ: tar.TypeReg, mode: 0o644, body: "x"}}, `entry "../evil": path with ".." refused`},
		{"dot-dot inside", []entry{{name: "a/../../evil", typ: tar.TypeReg, mode: 0o644, body: "x"}}, `path with ".." refused`},
		{"absolute", []entry{{name: "/etc/evil", typ: tar.TypeReg, mode: 0o644, body: "x"}}, `entry "/etc/evil": absolute path refused`},
		{"symlink climbing out", []entry{{name: "up", typ: tar.TypeSymlink, link: "../../outside"}}, `points outside the destination: refused`},
		{"symlink climbing via subdir", []entry{{name: "d/up", typ: tar.TypeSymlink, link: "../.."}}, `points outside the destination: refused`},
		{"hard link out", []entry{{name: "hl", typ: tar.TypeLink, link: "../../etc/passwd"}}, `path with ".." refused`},
		{"through an absolute symlink", []entry{
			{name: "link", typ: tar.TypeSymlink, link: "OUTSIDE"},
			{name: "link/pwned", typ: tar.TypeReg, mode: 0o644, body: "x"},
		}, `entry "link/pwned"`},
		{"dir through an absolute symlink", []entry{
			{name: "link", typ: tar.TypeSymlink, link: "OUTSIDE"},
			{name: "link/sub/", typ: tar.TypeDir, mode: 0o755},
		}, `entry "link/sub/"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			outside := t.TempDir()
			for i := range tc.entries {
				tc.entries[i].link = strings.ReplaceAll(tc.entries[i].link, "OUTSIDE", outside)
			}
			a := newTestActions(t)
			err := a.Run(context.Background(), step("archive2disk", map[string]string{
				"ARCHIVE_URL": serveBlob(t, makeTar(t, tc.entries)),
				"DEST_PATH":   "/target",
			}), newRecorder(t))
			t.Logf("error: %v", err)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: got %v, want an error containing %q", err, tc.want)
			}
			if ls, _ := os.ReadDir(outside); len(ls) != 0 {
				t.Errorf("something was written outside: %v", ls)
			}
			if _, err := os.Lstat(filepath.Join(a.cfg.Root, "evil")); err == nil {
				t.Errorf("evil was written next to the destination")
			}
		})
	}
}

func TestArchive2DiskChecksumMismatch(t *testing.T) {
	t.Parallel()
	blob := compress(t, formatGzip, makeTar(t, []entry{{name: "f", typ: tar.TypeReg, mode: 0o644, body: "x"}}))
	err := newTestActions(t).Run(context.Background(), step("archive2disk", map[string]string{
		"ARCHIVE_URL": serveBlob(t, blob), "TARFILE_CHECKSUM": "sha256:" + strings.Repeat("1", 64), "DEST_PATH": "/x",
	}), newRecorder(t))
	var ce *ChecksumError
	if !errors.As(err, &ce) || ce.Got != sha256Hex(blob) {
		t.Fatalf("Run: got %v, want a *ChecksumError with got=%s", err, sha256Hex(blob))
	}
}

func TestArchive2DiskCorruptArchiveShowsChecksum(t *testing.T) {
	t.Parallel()
	blob := compress(t, formatGzip, makeTar(t, []entry{{name: "f", typ: tar.TypeReg, mode: 0o644, body: strings.Repeat("x", 100000)}}))
	good := sha256Hex(blob)
	blob[len(blob)/2] ^= 0xff
	err := newTestActions(t).Run(context.Background(), step("archive2disk", map[string]string{
		"ARCHIVE_URL": serveBlob(t, blob), "TARFILE_CHECKSUM": "sha256:" + good, "DEST_PATH": "/x",
	}), newRecorder(t))
	t.Logf("error: %v", err)
	var ce *ChecksumError
	if !errors.As(err, &ce) {
		t.Fatalf("Run: got %v, want a *ChecksumError explaining the corrupt stream", err)
	}
}

// makeExt4 makes a file system image, filled from src when not empty.
func makeExt4(t testing.TB, src string) string {
	t.Helper()
	mkfs := gittest.NeedTool(t, "mkfs.ext4")
	img := filepath.Join(t.TempDir(), "fs.img")
	args := []string{"-q", "-F", "-E", "root_owner=0:0"}
	if src != "" {
		args = append(args, "-d", src)
	}
	args = append(args, img, "64M")
	if out, err := exec.Command(mkfs, args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

// readFromImage mounts img and reads a file from it.
func readFromImage(t testing.TB, a *Actions, img, name string) (string, fs.FileInfo) {
	t.Helper()
	m, err := a.mountFS(img, "ext4", "test", newRecorder(t))
	if err != nil {
		t.Fatalf("mount %s: %v", img, err)
	}
	defer func() {
		if err := m.unmount(newRecorder(t)); err != nil {
			t.Errorf("unmount: %v", err)
		}
	}()
	p := filepath.Join(m.dir, name)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s from the image: %v", name, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), fi
}

func TestArchive2DiskIntoExt4(t *testing.T) {
	t.Parallel()
	needRoot(t)
	img := makeExt4(t, "")
	blob := compress(t, formatZstd, makeTar(t, []entry{
		{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/os-release", typ: tar.TypeReg, mode: 0o644, uid: 7, gid: 8, body: "ID=test\n"},
	}))
	a := newTestActions(t)
	err := a.Run(context.Background(), step("archive2disk", map[string]string{
		"ARCHIVE_URL": serveBlob(t, blob), "ARCHIVE_TYPE": "tzst",
		"DEST_DISK": img, "FS_TYPE": "ext4", "DEST_PATH": "/",
	}), newRecorder(t))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	body, fi := readFromImage(t, a, img, "etc/os-release")
	if body != "ID=test\n" {
		t.Errorf("etc/os-release: got %q, want %q", body, "ID=test\n")
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 7 || st.Gid != 8 {
		t.Errorf("owner: got %d:%d, want 7:8", st.Uid, st.Gid)
	}
	if ls, _ := os.ReadDir(a.cfg.TempDir); len(ls) != 0 {
		t.Errorf("mount points left behind in TempDir: %v", ls)
	}
}

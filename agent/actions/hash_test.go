package actions

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"strings"
	"testing"
)

func TestAsyncHash(t *testing.T) {
	t.Parallel()
	data := testData(40, 5*hashChunk+12345)
	for _, step := range []int{1, 1000, hashChunk - 1, hashChunk, 3*hashChunk + 7, len(data)} {
		a := newAsyncHash(sha256.New())
		for rest := data; len(rest) > 0; {
			n := min(step, len(rest))
			a.Write(rest[:n])
			rest = rest[n:]
		}
		got := hex.EncodeToString(a.Sum())
		a.Close() // after Sum: harmless
		if want := sha256Hex(data); got != want {
			t.Errorf("writes of %d bytes: got %s, want %s", step, got, want)
		}
	}
	a := newAsyncHash(sha256.New())
	a.Close()
	if got, want := hex.EncodeToString(a.Sum()), sha256Hex(nil); got != want {
		t.Errorf("nothing written: got %s, want %s", got, want)
	}
}

// FuzzEntryName: whatever a tar entry is called, an accepted name stays
// inside the destination.
func FuzzEntryName(f *testing.F) {
	for _, s := range []string{"./etc/passwd", "../x", "/abs", "a/../../b", "a//b/./c", ".", "./", "a/..", "..a/b"} {
		f.Add(s, "../up")
	}
	f.Fuzz(func(t *testing.T, name, link string) {
		got, err := entryName(name)
		if err != nil {
			return
		}
		if path.IsAbs(got) || got == ".." || strings.HasPrefix(got, "../") || strings.Contains(got, "/../") || path.Clean("/"+got) != "/"+got && got != "" {
			t.Fatalf("entryName(%q) = %q: escapes or is not clean", name, got)
		}
		if got != "" && symlinkTarget(got, link) == nil && !path.IsAbs(link) {
			if r := path.Join(path.Dir(got), link); r == ".." || strings.HasPrefix(r, "../") {
				t.Fatalf("symlinkTarget(%q, %q) accepted a link to %q", got, link, r)
			}
		}
	})
}

func TestUnescapeMountPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/plain":              "/plain",
		`/with\040space`:      "/with space",
		`/tab\011and\134back`: "/tab\tand\\back",
		`/bad\9`:              `/bad\9`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q): got %q, want %q", in, got, want)
		}
	}
}

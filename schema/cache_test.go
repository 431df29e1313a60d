package schema

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCacheSurvivesRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "validation.cache")
	fleetFiles := withFiles(map[string]string{"hardware/r2/bad.cue": "hardware: {name: \"X\"}\n"})

	l1 := newTestLoader(t)
	_, err1 := l1.Load(ctx, files(fleetFiles))
	if err1 == nil {
		t.Fatal("want the bad file reported")
	}
	if err := l1.SaveCache(path); err != nil {
		t.Fatal(err)
	}

	l2 := newTestLoader(t)
	n, err := l2.LoadCache(path)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(fleetFiles) {
		t.Errorf("loaded %d cache entries, want %d", n, len(fleetFiles))
	}
	_, err2 := l2.Load(ctx, files(fleetFiles))
	if s := l2.Stats(); s.Evaluated != 0 {
		t.Errorf("evaluated %d files after loading the cache, want 0", s.Evaluated)
	}
	if diff := cmp.Diff(issueStrings(t, err1), issueStrings(t, err2)); diff != "" {
		t.Errorf("issues differ after restart (-before +after):\n%s", diff)
	}

	// The valid fleet from the cache equals a freshly evaluated one,
	// positions included.
	f1, err := newTestLoader(t).Load(ctx, files(baseFleet))
	if err != nil {
		t.Fatal(err)
	}
	f2, err := l2.Load(ctx, files(baseFleet))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(f1, f2, cmp.AllowUnexported(Source{}, lineCol{})); diff != "" {
		t.Errorf("fleet from the cache differs (-fresh +cached):\n%s", diff)
	}
}

func TestCacheFromAnotherSchemaIsIgnored(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "validation.cache")
	if err := os.WriteFile(path, []byte("\"some-other-version\"\n{\"k\":1,\"b\":\"x\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := newTestLoader(t).LoadCache(path)
	if err != nil || n != 0 {
		t.Errorf("got %d entries, error %v; want 0 and no error", n, err)
	}
	if n, err := newTestLoader(t).LoadCache(filepath.Join(t.TempDir(), "missing")); err != nil || n != 0 {
		t.Errorf("missing cache: got %d entries, error %v; want 0 and no error", n, err)
	}
}

func TestDamagedCacheIsAnError(t *testing.T) {
	t.Parallel()
	version, err := cacheVersion()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "validation.cache")
	if err := os.WriteFile(path, []byte("\""+version+"\"\n{\"k\":1,\"b\":\"x\"}\n{trunc"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newTestLoader(t).LoadCache(path); err == nil {
		t.Error("got no error for a damaged cache")
	}
}

package source

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/schema"
	"github.com/gitmetal/gitmetal/test/fleetgen"
	"github.com/gitmetal/gitmetal/test/gittest"
)

const benchMachines = 10000

// BenchmarkGitSyncOneFileCommit measures Sync after a commit that changes
// one machine file in a 10k-machine repository: from the start of the
// fetch (file:// remote, so git-upload-pack runs) or the ref lookup (local
// path) to the new Tree with its one Changed path. The commit itself is
// made with the git CLI outside the timer.
func BenchmarkGitSyncOneFileCommit(b *testing.B) {
	r := gittest.New(b, "main")
	paths, err := fleetgen.Write(r.Dir, benchMachines, fleetgen.CUE)
	if err != nil {
		b.Fatal(err)
	}
	r.Commit("fleet")
	for _, bc := range []struct {
		name string
		cfg  GitConfig
	}{
		{"file-remote", GitConfig{URL: "file://" + r.Dir, Dir: filepath.Join(b.TempDir(), "clone")}},
		{"local-path", GitConfig{URL: r.Dir}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			g, err := NewGit(bc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer g.Close()
			ctx := context.Background()
			start := time.Now()
			tree, err := g.Sync(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			first := time.Since(start)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				n := i % len(paths)
				if err := os.WriteFile(filepath.Join(r.Dir, paths[n]), fleetgen.HardwareFile(n, int(time.Now().UnixNano()), fleetgen.CUE), 0o644); err != nil {
					b.Fatal(err)
				}
				r.Git("add", paths[n])
				r.Git("commit", "-q", "-m", "bump")
				b.StartTimer()
				next, err := g.Sync(ctx, tree)
				if err != nil {
					b.Fatal(err)
				}
				if len(next.Changed) != 1 || next.Changed[0] != paths[n] || len(next.Removed) != 0 {
					b.Fatalf("got changed %v removed %v, want [%s]", next.Changed, next.Removed, paths[n])
				}
				tree = next
			}
			b.StopTimer()
			b.ReportMetric(float64(first.Milliseconds()), "first-sync-ms")
			b.ReportMetric(float64(len(tree.Files)), "files")
		})
	}
}

// BenchmarkDirWriteToSync measures, in a 10k-machine directory, the time
// from writing one file to Sync returning the Tree that has it: the
// fsnotify event, the 5ms debounce, the Notify, and Sync re-reading the
// one path. sync-us/op is the Sync alone.
func BenchmarkDirWriteToSync(b *testing.B) {
	dir := b.TempDir()
	paths, err := fleetgen.Write(dir, benchMachines, fleetgen.CUE)
	if err != nil {
		b.Fatal(err)
	}
	d, err := NewDir(DirConfig{Path: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	start := time.Now()
	tree, err := d.Sync(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	first := time.Since(start)
	var syncTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := i % len(paths)
		data := fleetgen.HardwareFile(n, i+1, fleetgen.CUE)
		blob := schema.BlobHash(data)
		if err := os.WriteFile(filepath.Join(dir, paths[n]), data, 0o644); err != nil {
			b.Fatal(err)
		}
		for {
			<-d.Notify()
			s := time.Now()
			next, err := d.Sync(ctx, tree)
			syncTime += time.Since(s)
			if err != nil {
				b.Fatal(err)
			}
			tree = next
			if f, ok := tree.Files[paths[n]]; ok && f.Blob == blob {
				break
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(syncTime.Microseconds())/float64(b.N), "sync-us/op")
	b.ReportMetric(float64(first.Milliseconds()), "first-sync-ms")
}

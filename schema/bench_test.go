package schema

import (
	"context"
	"fmt"
	"testing"

	"github.com/gitmetal/gitmetal/test/fleetgen"
)

// loadedFleet writes a fleetgen fleet of n machines and loads it.
func loadedFleet(b *testing.B, n int) (*Loader, []File) {
	b.Helper()
	dir := b.TempDir()
	if _, err := fleetgen.Write(dir, n, fleetgen.CUE); err != nil {
		b.Fatal(err)
	}
	files, err := ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	l, err := NewLoader(Config{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := l.Load(context.Background(), files); err != nil {
		b.Fatal(err)
	}
	return l, files
}

// BenchmarkUpdateOneChanged is the reconciler's path for a one-file commit
// in a 10k-machine fleet: the loader is handed the changed file only.
func BenchmarkUpdateOneChanged(b *testing.B) {
	l, _ := loadedFleet(b, 10000)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		n := (i * 7919) % 10000
		path := fmt.Sprintf("hardware/r%03d/%s.cue", n/fleetgen.PerRack, fleetgen.Name(n))
		if _, err := l.Update(ctx, []File{{Path: path, Data: fleetgen.HardwareFile(n, i+1, fleetgen.CUE)}}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadUnchanged is the cost of a full load of 10k cached files.
func BenchmarkLoadUnchanged(b *testing.B) {
	l, files := loadedFleet(b, 10000)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		if _, err := l.Load(ctx, files); err != nil {
			b.Fatal(err)
		}
	}
}

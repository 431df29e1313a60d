package schema

import (
	"context"
	"testing"

	"github.com/gitmetal/gitmetal/test/fleetgen"
)

// BenchmarkLoadOneChanged measures the reconciler's path for a one-file
// commit in a 10k-machine fleet: every unchanged file comes with its blob
// (no read, no evaluation), one file is new.
func BenchmarkLoadOneChanged(b *testing.B) {
	dir := b.TempDir()
	if _, err := fleetgen.Write(dir, 10000, fleetgen.CUE); err != nil {
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
	ctx := context.Background()
	if _, err := l.Load(ctx, files); err != nil {
		b.Fatal(err)
	}
	idx := map[string]int{}
	for i, f := range files {
		idx[f.Path] = i
	}
	b.ResetTimer()
	for i := range b.N {
		n := (i * 7919) % 10000
		p := "hardware/" + fleetgen.Name(n)
		_ = p
		path := fleetgenPath(n)
		data := fleetgen.HardwareFile(n, i+1, fleetgen.CUE)
		j := idx[path]
		files[j] = File{Path: path, Data: data}
		if _, err := l.Load(ctx, files); err != nil {
			b.Fatal(err)
		}
	}
}

func fleetgenPath(n int) string {
	return "hardware/r" + pad3(n/fleetgen.PerRack) + "/" + fleetgen.Name(n) + ".cue"
}

func pad3(n int) string {
	s := "00" + itoa(n)
	return s[len(s)-3:]
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// BenchmarkLoadUnchanged is the fixed cost of a load of 10k cached files.
func BenchmarkLoadUnchanged(b *testing.B) {
	dir := b.TempDir()
	if _, err := fleetgen.Write(dir, 10000, fleetgen.CUE); err != nil {
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
	ctx := context.Background()
	if _, err := l.Load(ctx, files); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := l.Load(ctx, files); err != nil {
			b.Fatal(err)
		}
	}
}

package schema

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary content to the loader as each kind of file: it
// must never panic, and must either accept the file or say where the
// problem is.
func FuzzLoad(f *testing.F) {
	err := filepath.WalkDir(exampleFleet, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(exampleFleet, p)
		if KindOf(filepath.ToSlash(rel)) == KindUnknown {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		f.Add(filepath.ToSlash(rel), data)
		return nil
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("hardware/x.yaml", []byte("hardware:\n  name: x\n  interfaces: [{mac: '52:54:00:00:00:01'}]\n"))
	f.Add("hardware/x.json", []byte(`{"hardware": {"name": "x", "interfaces": [{"mac": "52:54:00:00:00:01"}]}}`))
	f.Add("templates/x.cue", []byte("template: {name: \"x\", actions: [{name: \"a\", uses: \"exec\", args: [\"{{.values.x\"]}]}"))

	l := newTestLoader(f)
	f.Fuzz(func(t *testing.T, path string, data []byte) {
		// Keep the path a fleet path of a known kind; the content is free.
		for _, prefix := range []string{"hardware/", "templates/", "workflows/"} {
			if strings.HasPrefix(path, prefix) {
				path = prefix + "f" + filepath.Ext(path)
			}
		}
		if KindOf(path) == KindUnknown {
			path = "hardware/f.cue"
		}
		fleet, err := l.Load(context.Background(), []File{{Path: path, Data: data}})
		if err == nil {
			if fleet == nil {
				t.Fatal("no error and no fleet")
			}
			return
		}
		var es Errors
		if !errors.As(err, &es) {
			t.Fatalf("got error %v (%T), want schema.Errors", err, err)
		}
		for _, i := range es {
			if i.File == "" || i.Message == "" {
				t.Errorf("issue without file or message: %+v", i)
			}
		}
	})
}

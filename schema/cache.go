package schema

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

// cacheFormat changes whenever the Go types or the cache's layout change
// in a way old cache files would not decode into faithfully.
const cacheFormat = "gitmetal-validation-cache/1"

// cacheVersion identifies the schema a cache was written with: a cache from
// another schema is ignored, never trusted.
func cacheVersion() (string, error) {
	h := sha256.New()
	h.Write([]byte(cacheFormat))
	entries, err := fs.ReadDir(cueFS, "cue")
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		b, err := cueFS.ReadFile("cue/" + e.Name())
		if err != nil {
			return "", err
		}
		h.Write([]byte(e.Name()))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// wireEntry is one cached validation result on disk.
type wireEntry struct {
	Kind     Kind                `json:"k"`
	Blob     string              `json:"b"`
	Hardware *Hardware           `json:"h,omitempty"`
	Template *Template           `json:"t,omitempty"`
	Workflow *Workflow           `json:"w,omitempty"`
	Settings *Settings           `json:"s,omitempty"`
	Fields   map[string][2]int32 `json:"f,omitempty"`
	Issues   []Issue             `json:"i,omitempty"`
}

// SaveCache writes the validation cache to path (atomically: a temporary
// file renamed into place), so that a restarted daemon does not evaluate
// unchanged files again.
func (l *Loader) SaveCache(path string) error {
	version, err := cacheVersion()
	if err != nil {
		return err
	}
	l.mu.Lock()
	keys := slices.SortedFunc(maps.Keys(l.cache), func(a, b cacheKey) int {
		if a.blob != b.blob {
			if a.blob < b.blob {
				return -1
			}
			return 1
		}
		return int(a.kind) - int(b.kind)
	})
	entries := make([]wireEntry, 0, len(keys))
	for _, k := range keys {
		d := l.cache[k]
		e := wireEntry{Kind: k.kind, Blob: k.blob, Issues: d.issues}
		switch o := d.obj.(type) {
		case *Hardware:
			e.Hardware = o
		case *Template:
			e.Template = o
		case *Workflow:
			e.Workflow = o
		case *Settings:
			e.Settings = o
		}
		if len(d.fields) > 0 {
			e.Fields = make(map[string][2]int32, len(d.fields))
			for p, lc := range d.fields {
				e.Fields[p] = [2]int32{lc.line, lc.col}
			}
		}
		entries = append(entries, e)
	}
	l.mu.Unlock()

	tmp, err := os.CreateTemp(filepath.Dir(path), ".cache-*")
	if err != nil {
		return fmt.Errorf("save validation cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	w := bufio.NewWriter(tmp)
	enc := json.NewEncoder(w)
	err = enc.Encode(version)
	for i := 0; err == nil && i < len(entries); i++ {
		err = enc.Encode(&entries[i])
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("save validation cache: %w", err)
	}
	return nil
}

// LoadCache reads a cache written by SaveCache into the loader. A missing
// file, or one written for another schema, loads nothing and is not an
// error; a damaged file is an error, and the loader keeps what it read
// before the damage (each entry is whole, so nothing wrong is trusted).
func (l *Loader) LoadCache(path string) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("load validation cache: %w", err)
	}
	defer f.Close()
	version, err := cacheVersion()
	if err != nil {
		return 0, err
	}
	dec := json.NewDecoder(bufio.NewReader(f))
	var got string
	if err := dec.Decode(&got); err != nil {
		return 0, fmt.Errorf("load validation cache %s: %w", path, err)
	}
	if got != version {
		return 0, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for {
		var e wireEntry
		if err := dec.Decode(&e); err == io.EOF {
			return n, nil
		} else if err != nil {
			return n, fmt.Errorf("load validation cache %s: %w", path, err)
		}
		d := &decoded{issues: e.Issues}
		switch {
		case e.Kind == KindHardware && e.Hardware != nil:
			d.obj = e.Hardware
		case e.Kind == KindTemplate && e.Template != nil:
			d.obj = e.Template
		case e.Kind == KindWorkflow && e.Workflow != nil:
			d.obj = e.Workflow
		case e.Kind == KindSettings && e.Settings != nil:
			d.obj = e.Settings
		case e.Issues == nil:
			return n, fmt.Errorf("load validation cache %s: entry %d has neither an object nor issues", path, n)
		}
		if len(e.Fields) > 0 {
			d.fields = make(map[string]lineCol, len(e.Fields))
			for p, lc := range e.Fields {
				d.fields[p] = lineCol{lc[0], lc[1]}
			}
		}
		l.cache[cacheKey{e.Kind, e.Blob}] = d
		n++
	}
}

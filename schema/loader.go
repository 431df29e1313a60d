package schema

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// SettingsFile is the path of the repository settings file.
const SettingsFile = "gitmetal.cue"

// KindOf returns the kind of the file at a slash-separated path relative to
// the fleet root, or KindUnknown for files the loader does not read
// (documentation, hidden files, cue.mod, other extensions).
func KindOf(p string) Kind {
	switch strings.ToLower(path.Ext(p)) {
	case ".cue", ".yaml", ".yml", ".json":
	default:
		return KindUnknown
	}
	// No hidden part and no cue.mod anywhere in the path (checked without
	// splitting: this runs for every file of every load).
	for rest := p; rest != ""; {
		part, next, _ := strings.Cut(rest, "/")
		if strings.HasPrefix(part, ".") || part == "cue.mod" {
			return KindUnknown
		}
		rest = next
	}
	if p == SettingsFile {
		return KindSettings
	}
	top, rest, ok := strings.Cut(p, "/")
	if !ok || rest == "" {
		return KindUnknown
	}
	switch top {
	case "hardware":
		return KindHardware
	case "templates":
		return KindTemplate
	case "workflows":
		return KindWorkflow
	}
	return KindUnknown
}

func dirOf(k Kind) string {
	switch k {
	case KindHardware:
		return "hardware/"
	case KindTemplate:
		return "templates/"
	case KindWorkflow:
		return "workflows/"
	}
	return SettingsFile
}

// File is one repository file handed to the loader.
type File struct {
	// Path is slash-separated and relative to the fleet root, e.g.
	// "hardware/rack-a/node-1.cue".
	Path string
	// Blob is the git blob hash of the content (hex). When empty it is
	// computed from Data.
	Blob string
	// Data is the content. When nil, Open is called, and only if the
	// content's validation is not cached.
	Data []byte
	Open func() ([]byte, error)
}

// BlobHash returns the git blob hash of data, the key of the validation
// cache, so that a file read from a directory and the same file in a git
// tree share one cache entry.
func BlobHash(data []byte) string {
	h := sha1.New()
	h.Write([]byte("blob " + strconv.Itoa(len(data)) + "\x00"))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// Config configures a Loader. Zero values take the documented defaults.
type Config struct {
	// Workers is how many files are evaluated at once (default GOMAXPROCS).
	Workers int
	// MaxFileSize is the largest file accepted, in bytes (default 1 MiB).
	MaxFileSize int
	// RecycleAfter is how many files a worker evaluates before it replaces
	// its cue.Context (default 250).
	RecycleAfter int
}

// Loader validates repository files into Fleets. It caches each file's
// validation by kind and blob hash, and the finished objects by path, so
// loading a repository where one file changed evaluates one file and
// returns a Fleet that shares every unchanged object with the previous one.
// A Loader is safe for concurrent use; loads are serialised.
type Loader struct {
	cfg  Config
	help helpTable

	// pool holds idle evaluators (each owns a cue.Context).
	pool chan *evaluator

	mu sync.Mutex
	// cache maps kind and blob to the file's validation result.
	cache map[cacheKey]*decoded
	// final maps a path to the object last built from it.
	final map[string]*finalEntry
	// gen counts loads; a final entry not touched by the current load is
	// for a file that is gone.
	gen uint64
	// rendered maps a workflow name to the result of its last render check.
	rendered map[string]renderEntry
	// claims are the MACs, IPs and hostnames of the machines last loaded.
	claims *claims
	// last is the fleet of the last successful Load or Update, which Update
	// builds on; nil after a failure.
	last *Fleet
	// defaults are the settings of a repository without a settings file.
	defaults *Settings
	stats    Stats
}

// Stats counts the loader's work since it was made.
type Stats struct {
	Loads     int // calls to Load
	Evaluated int // files evaluated with CUE
	Cached    int // files whose validation came from the cache
}

// Stats returns the loader's counters.
func (l *Loader) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

type cacheKey struct {
	kind Kind
	blob string
}

type finalEntry struct {
	gen      uint64
	blob     string
	settings *Settings // the settings the object was finished with
	obj      any
}

// NewLoader returns a Loader.
func NewLoader(cfg Config) (*Loader, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxFileSize <= 0 {
		cfg.MaxFileSize = 1 << 20
	}
	if cfg.RecycleAfter <= 0 {
		cfg.RecycleAfter = 250
	}
	defs, err := cueFS.ReadFile("cue/defs.cue")
	if err != nil {
		return nil, err
	}
	return &Loader{
		cfg:      cfg,
		help:     newHelpTable(string(defs)),
		pool:     make(chan *evaluator, cfg.Workers),
		cache:    map[cacheKey]*decoded{},
		final:    map[string]*finalEntry{},
		rendered: map[string]renderEntry{},
		claims:   newClaims(),
		defaults: DefaultSettings(),
	}, nil
}

// Load validates a whole repository, given as its files, and returns the
// Fleet. Files of unknown kind are ignored. Load fills in the Blob of files
// that lack one (reading their Data through Open). When anything is invalid
// the error is an Errors holding every issue of every file, and the Fleet is
// nil.
func (l *Loader) Load(ctx context.Context, files []File) (*Fleet, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = nil // a failure below leaves nothing to update from

	jobs, issues := prepare(files)
	more, err := l.evaluate(ctx, jobs)
	if err != nil {
		return nil, err
	}
	issues = append(issues, more...)

	// Settings first: every other object is finished with them. Without a
	// settings file, the same defaults every time, so objects are reused.
	settings := l.defaults
	for _, j := range jobs {
		if j.kind != KindSettings {
			continue
		}
		d := l.cache[cacheKey{j.kind, j.file.Blob}]
		if d == nil || d.issues != nil {
			continue
		}
		settings = l.finish(j.file, d, nil).(*Settings)
	}

	fleet := &Fleet{
		Settings:  settings,
		Hardware:  make(map[string]*Hardware, len(jobs)),
		Templates: map[string]*Template{},
		Workflows: map[string]*Workflow{},
	}
	l.gen++
	ps := newPass(issues)
	for _, j := range jobs {
		d := l.cache[cacheKey{j.kind, j.file.Blob}]
		if d == nil {
			continue // a read error, reported above
		}
		l.touch(j.file.Path)
		if j.kind == KindSettings && d.issues == nil {
			continue // finished above
		}
		l.place(fleet, j, d, settings, ps)
	}
	// Forget the files that are gone; a machine file that is gone claims
	// nothing.
	for p, e := range l.final {
		if e.gen != l.gen {
			delete(l.final, p)
			l.claims.set(p, nil)
		}
	}
	return l.conclude(fleet, ps)
}

// Update is Load for a change to the files of the last successful Load or
// Update: changed are the files added or modified since, removed the paths
// deleted. It costs what the change costs, not what the repository costs.
// It returns ErrNeedLoad (and does nothing) when it cannot stand in for a
// Load: the last load failed, or the settings file changed; the caller then
// calls Load with every file.
func (l *Loader) Update(ctx context.Context, changed []File, removed []string) (*Fleet, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	base := l.last
	if base == nil {
		return nil, ErrNeedLoad
	}
	for _, f := range changed {
		if KindOf(f.Path) == KindSettings {
			return nil, ErrNeedLoad
		}
	}
	for _, p := range removed {
		if KindOf(p) == KindSettings {
			return nil, ErrNeedLoad
		}
	}
	l.last = nil

	jobs, issues := prepare(changed)
	more, err := l.evaluate(ctx, jobs)
	if err != nil {
		return nil, err
	}
	issues = append(issues, more...)

	fleet := &Fleet{
		Settings:  base.Settings,
		Hardware:  maps.Clone(base.Hardware),
		Templates: maps.Clone(base.Templates),
		Workflows: maps.Clone(base.Workflows),
	}
	// Take out what the changed and removed files defined before.
	drop := func(p string) {
		e := l.final[p]
		if e == nil {
			return
		}
		switch o := e.obj.(type) {
		case *Hardware:
			dropNamed(fleet.Hardware, o.Name, o)
		case *Template:
			dropNamed(fleet.Templates, o.Name, o)
		case *Workflow:
			dropNamed(fleet.Workflows, o.Name, o)
		}
		l.claims.set(p, nil)
	}
	for _, p := range removed {
		drop(p)
		delete(l.final, p)
	}
	for _, j := range jobs {
		drop(j.file.Path)
	}
	ps := newPass(issues)
	for _, j := range jobs {
		d := l.cache[cacheKey{j.kind, j.file.Blob}]
		if d == nil {
			continue // a read error, reported above
		}
		l.place(fleet, j, d, fleet.Settings, ps)
	}
	return l.conclude(fleet, ps)
}

// pass is what one Load or Update gathers while it places objects.
type pass struct {
	issues []Issue
	// broken names the objects, by kind, whose files are invalid: a
	// reference to one of them is not a second problem.
	broken map[Kind]map[string]bool
	// dups lists every object of a name that more than one object has.
	dups map[dupKey][]Source
}

type dupKey struct {
	kind string
	name string
}

func newPass(issues []Issue) *pass {
	return &pass{issues: issues, broken: map[Kind]map[string]bool{}, dups: map[dupKey][]Source{}}
}

// ErrNeedLoad is Update's answer when only a full Load can give the fleet.
var ErrNeedLoad = errors.New("a full load is needed")

type job struct {
	kind Kind
	file *File
}

// prepare keeps the files the loader reads and fills in their blob hashes.
func prepare(files []File) ([]job, []Issue) {
	var (
		jobs   = make([]job, 0, len(files))
		issues []Issue
	)
	for n := range files {
		f := &files[n]
		k := KindOf(f.Path)
		if k == KindUnknown {
			continue
		}
		if f.Blob == "" {
			if f.Data == nil && f.Open != nil {
				data, err := f.Open()
				if err != nil {
					issues = append(issues, Issue{Position: Position{File: f.Path}, Message: "read: " + err.Error()})
					continue
				}
				f.Data = data
			}
			f.Blob = BlobHash(f.Data)
		}
		jobs = append(jobs, job{k, f})
	}
	return jobs, issues
}

// evaluate validates, in parallel, the files whose content the cache does
// not know, and caches the results. It returns the files' read errors; the
// error is the context's, or a broken schema's.
func (l *Loader) evaluate(ctx context.Context, jobs []job) ([]Issue, error) {
	var misses []job
	for _, j := range jobs {
		if _, ok := l.cache[cacheKey{j.kind, j.file.Blob}]; !ok {
			misses = append(misses, j)
		}
	}
	l.stats.Loads++
	l.stats.Evaluated += len(misses)
	l.stats.Cached += len(jobs) - len(misses)
	if len(misses) == 0 {
		return nil, nil
	}
	results := make([]*decoded, len(misses))
	readErrs := make([]error, len(misses))
	var (
		next        sync.Mutex
		i           int
		wg          sync.WaitGroup
		evalErr     error
		evalErrOnce sync.Once
	)
	for range min(l.cfg.Workers, len(misses)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := l.evaluator()
			if err != nil {
				evalErrOnce.Do(func() { evalErr = err })
				return
			}
			defer func() { l.pool <- e }()
			for ctx.Err() == nil {
				next.Lock()
				n := i
				i++
				next.Unlock()
				if n >= len(misses) {
					return
				}
				f := misses[n].file
				data := f.Data
				if data == nil && f.Open != nil {
					if data, readErrs[n] = f.Open(); readErrs[n] != nil {
						continue
					}
				}
				results[n] = e.eval(misses[n].kind, f.Path, data)
			}
		}()
	}
	wg.Wait()
	if evalErr != nil {
		return nil, evalErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var issues []Issue
	for n, m := range misses {
		if readErrs[n] != nil {
			issues = append(issues, Issue{Position: Position{File: m.file.Path}, Message: "read: " + readErrs[n].Error()})
			continue
		}
		// Issues are cached without the file name: the same content may
		// live at another path.
		d := results[n]
		for k := range d.issues {
			d.issues[k].File = ""
		}
		l.cache[cacheKey{m.kind, m.file.Blob}] = d
	}
	return issues, nil
}

// place puts the object of one validated file into the fleet, or records
// the file's issues.
func (l *Loader) place(fleet *Fleet, j job, d *decoded, settings *Settings, ps *pass) {
	if d.issues != nil {
		l.touch(j.file.Path).obj = nil // an invalid file defines nothing
		if j.kind == KindHardware {
			l.claims.set(j.file.Path, nil) // and claims nothing
		}
		if d.name != "" {
			if ps.broken[j.kind] == nil {
				ps.broken[j.kind] = map[string]bool{}
			}
			ps.broken[j.kind][d.name] = true
		}
		for _, is := range d.issues {
			is.File = j.file.Path
			ps.issues = append(ps.issues, is)
		}
		return
	}
	switch o := l.finish(j.file, d, settings).(type) {
	case *Hardware:
		l.claims.set(j.file.Path, o)
		addNamed(ps, fleet.Hardware, "hardware", o.Name, o)
	case *Template:
		addNamed(ps, fleet.Templates, "template", o.Name, o)
	case *Workflow:
		addNamed(ps, fleet.Workflows, "workflow", o.Name, o)
	}
}

// conclude runs the rules across files and returns the fleet, or every
// issue found. A valid fleet is remembered for Update.
func (l *Loader) conclude(fleet *Fleet, ps *pass) (*Fleet, error) {
	issues := append(ps.issues, l.checkFleet(fleet, ps.broken)...)
	// Of objects sharing a name, the one at the first path keeps it; every
	// other is reported against it, whatever order the files came in.
	for k, srcs := range ps.dups {
		slices.SortFunc(srcs, func(a, b Source) int { return strings.Compare(a.Path, b.Path) })
		for _, src := range srcs[1:] {
			issues = append(issues, Issue{
				Position: src.Pos("name"),
				Field:    k.kind + ".name",
				Message:  fmt.Sprintf("%s name %q is already used by %s", k.kind, k.name, srcs[0].Pos("name")),
			})
		}
	}
	if len(issues) > 0 {
		sortIssues(issues)
		return nil, Errors(issues)
	}
	l.last = fleet
	return fleet, nil
}

// dropNamed removes obj from m when it holds the name.
func dropNamed[T comparable](m map[string]T, name string, obj T) {
	if m[name] == obj {
		delete(m, name)
	}
}

// evaluator takes an idle evaluator or makes one.
func (l *Loader) evaluator() (*evaluator, error) {
	select {
	case e := <-l.pool:
		return e, nil
	default:
		return newEvaluator(l.cfg.RecycleAfter, l.cfg.MaxFileSize, l.help)
	}
}

// finish returns the object of a file with its source and the repository
// defaults applied, reusing the previous one when neither the content nor
// the settings changed (callers compare objects by pointer).
func (l *Loader) finish(f *File, d *decoded, settings *Settings) any {
	e := l.touch(f.Path)
	if e.obj != nil && e.blob == f.Blob && e.settings == settings {
		return e.obj
	}
	src := Source{Path: f.Path, Blob: f.Blob, fields: d.fields}
	var obj any
	switch o := d.obj.(type) {
	case *Hardware:
		h := *o
		h.Source = src
		h.Interfaces = make([]Interface, len(o.Interfaces))
		for n, i := range o.Interfaces {
			if i.LeaseTime == 0 {
				i.LeaseTime = settings.LeaseTime
			}
			if len(i.Nameservers) == 0 {
				i.Nameservers = settings.Nameservers
			}
			if len(i.Timeservers) == 0 {
				i.Timeservers = settings.Timeservers
			}
			if i.Domain == "" {
				i.Domain = settings.Domain
			}
			h.Interfaces[n] = i
		}
		if h.Site == "" {
			h.Site = settings.Site
		}
		obj = &h
	case *Template:
		t := *o
		t.Source = src
		obj = &t
	case *Workflow:
		w := *o
		w.Source = src
		obj = &w
	case *Settings:
		s := *o
		s.Source = src
		obj = &s
	}
	e.blob, e.settings, e.obj = f.Blob, settings, obj
	return obj
}

// touch marks the file at path as part of the current load and returns
// its entry.
func (l *Loader) touch(path string) *finalEntry {
	e := l.final[path]
	if e == nil {
		e = &finalEntry{}
		l.final[path] = e
	}
	e.gen = l.gen
	return e
}

// addNamed adds obj to m under its name. When another object has the name,
// the one at the first path keeps it and both are noted in ps.dups.
func addNamed[T interface{ source() Source }](ps *pass, m map[string]T, kind, name string, obj T) {
	prev, ok := m[name]
	if !ok {
		m[name] = obj
		return
	}
	k := dupKey{kind, name}
	if len(ps.dups[k]) == 0 {
		ps.dups[k] = append(ps.dups[k], prev.source())
	}
	ps.dups[k] = append(ps.dups[k], obj.source())
	if obj.source().Path < prev.source().Path {
		m[name] = obj
	}
}

// LoadDir reads the fleet in a directory and validates it.
func (l *Loader) LoadDir(ctx context.Context, dir string) (*Fleet, error) {
	files, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	return l.Load(ctx, files)
}

// ReadDir lists the files of a fleet directory that the loader reads, with
// their content opened lazily.
func ReadDir(dir string) ([]File, error) {
	var files []File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "cue.mod") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || KindOf(rel) == KindUnknown {
			return nil
		}
		files = append(files, File{Path: rel, Open: func() ([]byte, error) { return os.ReadFile(p) }})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read fleet directory: %w", err)
	}
	return files, nil
}

package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gitmetal/gitmetal/schema/tinkerbell"
)

func cmdImport(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "tinkerbell" {
		fmt.Fprintln(stderr, "usage: gitmetal import tinkerbell [--out DIR] [--site SITE] [--force] FILE...")
		return errSilent(2)
	}
	fset := newFlagSet("import tinkerbell", stderr)
	out := fset.String("out", ".", "fleet directory to write the converted files into")
	site := fset.String("site", "", "site of the imported machines (hardware/<site>/...; default hardware/imported/)")
	force := fset.Bool("force", false, "overwrite files that already exist")
	if err := parseFlags(fset, args[1:]); err != nil {
		return err
	}
	if fset.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: gitmetal import tinkerbell [--out DIR] [--site SITE] [--force] FILE...")
		return errSilent(2)
	}

	// Convert everything before writing anything: one bad input writes
	// nothing.
	var (
		files []tinkerbell.File
		from  = map[string]string{} // output path → input file
	)
	opts := tinkerbell.Options{Site: *site}
	for _, in := range fset.Args() {
		data, err := os.ReadFile(in)
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		res, err := opts.Convert(in, data)
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		for _, w := range res.Warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		for _, f := range res.Files {
			if prev, ok := from[f.Path]; ok {
				return &exitError{code: 1, err: fmt.Errorf("%s and %s both define %s", prev, in, f.Path)}
			}
			from[f.Path] = in
			files = append(files, f)
		}
	}
	for _, f := range files {
		dst := filepath.Join(*out, filepath.FromSlash(f.Path))
		if _, err := os.Stat(dst); err == nil && !*force {
			return &exitError{code: 1, err: fmt.Errorf("%s exists (use --force to overwrite); nothing written", dst)}
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, f := range files {
		dst := filepath.Join(*out, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, f.Data, 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", dst)
	}
	fmt.Fprintf(stdout, "imported %d files; check them with: gitmetal validate %s\n", len(files), *out)
	return nil
}

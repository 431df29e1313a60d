package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/gitmetal/gitmetal/schema"
)

func cmdValidate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("validate", stderr)
	format := fs.String("format", "text", "output format: text or json")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: gitmetal validate [--format text|json] [DIR]")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return &exitError{code: 2, err: fmt.Errorf("--format %q: allowed: text, json", *format)}
	}
	dir := "."
	switch fs.NArg() {
	case 0:
	case 1:
		dir = fs.Arg(0)
	default:
		fs.Usage()
		return errSilent(2)
	}

	l, err := schema.NewLoader(schema.Config{})
	if err != nil {
		return err
	}
	fleet, err := l.LoadDir(ctx, dir)
	var issues schema.Errors
	if err != nil && !errors.As(err, &issues) {
		return err
	}

	if *format == "json" {
		out := struct {
			Valid  bool           `json:"valid"`
			Dir    string         `json:"dir"`
			Counts map[string]int `json:"counts,omitempty"`
			Errors []schema.Issue `json:"errors"`
		}{Valid: fleet != nil, Dir: dir, Errors: issues}
		if out.Errors == nil {
			out.Errors = []schema.Issue{}
		}
		if fleet != nil {
			h, t, w := fleet.Counts()
			out.Counts = map[string]int{"hardware": h, "templates": t, "workflows": w}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		for _, is := range issues {
			fmt.Fprintln(stdout, is.String())
		}
		if fleet != nil {
			h, t, w := fleet.Counts()
			fmt.Fprintf(stdout, "%s: valid: %d hardware, %d templates, %d workflows\n", dir, h, t, w)
		} else {
			fmt.Fprintf(stdout, "%s: invalid: %d errors in %d files\n", dir, len(issues), filesIn(issues))
		}
	}
	if fleet == nil {
		return errSilent(1)
	}
	return nil
}

func filesIn(issues []schema.Issue) int {
	files := map[string]struct{}{}
	for _, is := range issues {
		files[is.File] = struct{}{}
	}
	return len(files)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/gitmetal/gitmetal/reconciler/plan"
	"github.com/gitmetal/gitmetal/reconciler/source"
	"github.com/gitmetal/gitmetal/schema"
)

const planUsage = `usage: gitmetal plan [--repo DIR] [--path SUBDIR] [--site SITE] [--format text|json|markdown] [BASE [HEAD]]

Shows what merging HEAD over BASE would do to the fleet: per machine, the
DHCP, netboot and metadata changes and the workflow runs that would start or
stop, with a blast-radius summary. BASE defaults to HEAD (the commit), HEAD
to the working tree. With --site, what the daemon of that site (serve
--site) would do: a machine that moves between sites leaves one and joins
the other. Exit status: 0 no changes, 2 changes, 1 invalid.
`

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("plan", stderr)
	repo := fs.String("repo", ".", "local git repository")
	path := fs.String("path", "", "subdirectory of the repository that holds the fleet")
	format := fs.String("format", "text", "text, json or markdown")
	site := fs.String("site", "", "plan for the daemon of this site only (default: every machine)")
	fs.Usage = func() { fmt.Fprint(stderr, planUsage); fs.PrintDefaults() }
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	write := map[string]func(*plan.Plan, io.Writer) error{
		"text":     (*plan.Plan).WriteText,
		"json":     (*plan.Plan).WriteJSON,
		"markdown": (*plan.Plan).WriteMarkdown,
	}[*format]
	if write == nil {
		return &exitError{code: 2, err: fmt.Errorf("--format %q: allowed: text, json, markdown", *format)}
	}
	if fs.NArg() > 2 {
		fs.Usage()
		return errSilent(2)
	}
	if err := checkSite(*site); err != nil {
		return err
	}
	baseRev, headRev := "HEAD", ""
	if fs.NArg() >= 1 {
		baseRev = fs.Arg(0)
	}
	if fs.NArg() == 2 {
		headRev = fs.Arg(1)
	}

	baseTree, err := source.ReadRevision(*repo, baseRev, *path)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("base %s: %w", baseRev, err)}
	}
	var headTree *source.Tree
	if headRev == "" {
		headTree, err = source.ReadWorkTree(*repo, *path)
		headRev = "working tree"
	} else {
		headTree, err = source.ReadRevision(*repo, headRev, *path)
	}
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("head %s: %w", headRev, err)}
	}

	// The very loader serve uses, shared so that files the two sides have
	// in common are evaluated once.
	loader, err := schema.NewLoader(schema.Config{})
	if err != nil {
		return err
	}
	load := func(name string, t *source.Tree) (*schema.Fleet, error) {
		files := make([]schema.File, 0, len(t.Files))
		for _, f := range t.Files {
			files = append(files, f)
		}
		fleet, err := loader.Load(ctx, files)
		var issues schema.Errors
		if errors.As(err, &issues) {
			for _, is := range issues {
				fmt.Fprintln(stderr, is.String())
			}
			return nil, &exitError{code: 1, err: fmt.Errorf("%s is invalid: %d errors", name, len(issues))}
		}
		if err == nil && *site != "" {
			fleet = fleet.Site(*site)
		}
		return fleet, err
	}
	head, err := load(headRev, headTree)
	if err != nil {
		return err
	}
	base, err := load("base "+baseRev, baseTree)
	if err != nil {
		return err
	}
	p := plan.Compute(base, head)
	if err := write(p, stdout); err != nil {
		return err
	}
	if !p.Empty() {
		return errSilent(2)
	}
	return nil
}

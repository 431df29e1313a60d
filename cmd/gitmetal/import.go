package main

import (
	"fmt"
	"io"
)

func cmdImport(args []string, stdout, stderr io.Writer) error {
	fmt.Fprintln(stderr, "gitmetal import: not wired yet")
	return errSilent(2)
}

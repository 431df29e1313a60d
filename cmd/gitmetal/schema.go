package main

import (
	"fmt"
	"io"

	"github.com/gitmetal/gitmetal/schema"
)

func cmdSchema(args []string, stdout, stderr io.Writer) error {
	if len(args) != 2 || args[0] != "export" {
		fmt.Fprintln(stderr, "usage: gitmetal schema export DIR")
		return errSilent(2)
	}
	if err := schema.Export(args[1]); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote the schema to %s; check a fleet with: %s/vet.sh FLEET_DIR\n", args[1], args[1])
	return nil
}

// Package schema is gitmetal's data model: the CUE schema of the repository
// format, the Go types the rest of the program uses, and the loader that
// turns repository files into a validated Fleet.
//
// Every file is validated on its own against a schema compiled once per
// worker, never as one CUE instance for the whole repository: measured on
// these machines, one instance costs 8 s and 2 GB for 10k machines, and one
// bad file blocks all. Each worker owns a cue.Context (the CUE API is not
// safe for concurrent use) and replaces it every few hundred files because a
// context keeps memory for every file it has seen. Results are cached by the
// file's git blob hash, so a file that did not change is neither read nor
// evaluated again.
//
// Rules that span files (a MAC, IP or hostname used twice, a workflow naming
// a missing machine or template) and rules that CUE states badly (a known
// action, a template that renders with the workflow's values) are checked in
// Go after every file passed its schema.
//
// Nothing outside this package touches cue.Value.
package schema

//go:build !linux

package main

import "os"

// peakRSS returns the peak resident set size of a finished child process
// in bytes; ok is false when the platform does not report it. Only Linux's
// unit (KiB) is known here.
func peakRSS(*os.ProcessState) (bytes int64, ok bool) { return 0, false }

// flushWrites does nothing where the benchmark has not been tuned.
func flushWrites() {}

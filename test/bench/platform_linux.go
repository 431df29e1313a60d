package main

import (
	"os"
	"syscall"
)

// peakRSS returns the peak resident set size of a finished child process
// in bytes; ok is false when the platform does not report it.
func peakRSS(ps *os.ProcessState) (bytes int64, ok bool) {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, false
	}
	return int64(ru.Maxrss) * 1024, true // Linux reports KiB
}

// flushWrites writes dirty pages to disk, so that the kernel's writeback of
// the fleets just written does not compete with the timed runs.
func flushWrites() { syscall.Sync() }

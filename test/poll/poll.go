// Package poll waits in tests for what the code under test does on its
// own goroutines: a counter a server bumps after the reply has left, a
// revision a daemon applies after the commit. It polls rather than
// sleeps a fixed time, so a slow machine waits longer and a fast one
// does not wait at all.
package poll

import (
	"testing"
	"time"
)

// Limit is how long Until waits before it fails the test.
const Limit = 10 * time.Second

// Until calls cond every 10 ms until it returns true, and fails the test
// naming what it waited for if that has not happened within Limit.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Limit, what, cond)
}

// Within is Until with its own limit, for what takes long on a loaded
// machine (a VM, a process restart under -race).
func Within(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

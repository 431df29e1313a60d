package store

import (
	"testing"

	"github.com/gitmetal/gitmetal/schema"
)

// TestRevision is the revision TestStore applies its fleet at.
const TestRevision = "test"

// TestStore returns a new store holding f at revision TestRevision, or an
// empty store when f is nil. It is for tests in other packages; it fails the
// test on error.
func TestStore(t testing.TB, f *schema.Fleet) *Store {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	if f == nil {
		return s
	}
	if _, err := s.Apply(TestRevision, f); err != nil {
		t.Fatalf("apply test fleet: %v", err)
	}
	return s
}

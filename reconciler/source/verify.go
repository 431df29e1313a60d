package source

import (
	"fmt"
	"slices"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// verifyLocked checks that head and every commit reachable from it but not
// from from (git's from..head) is signed by a key of the armored keyring.
// With no from (the first sync, or a revision this repository does not
// know) only head is checked: the history before the first synced revision
// is trusted as the starting point.
func (rp *repo) verifyLocked(keyring string, from plumbing.Hash, head *object.Commit) error {
	commits := []*object.Commit{head}
	if !from.IsZero() && from != head.Hash {
		if _, err := rp.commitLocked(from); err == nil {
			commits, err = rp.rangeLocked(from, head)
			if err != nil {
				return err
			}
		}
	}
	// Oldest first, so the refusal names the first bad commit on the way.
	for _, c := range slices.Backward(commits) {
		if c.PGPSignature == "" {
			return &VerifyError{Revision: head.Hash.String(), Commit: c.Hash.String(), Reason: "commit is not signed"}
		}
		if _, err := c.Verify(keyring); err != nil {
			return &VerifyError{Revision: head.Hash.String(), Commit: c.Hash.String(), Reason: "signature not valid for the keyring: " + err.Error()}
		}
	}
	return nil
}

// rangeLocked returns head and the commits reachable from head but not from
// from, newest first (breadth-first). The walk stops at from; when it
// reaches a root commit some of what it found may be ancestors of from too
// (a merge of older history, a rewind), and those are removed by walking
// from's history.
func (rp *repo) rangeLocked(from plumbing.Hash, head *object.Commit) ([]*object.Commit, error) {
	seen := map[plumbing.Hash]bool{head.Hash: true, from: true}
	queue := []*object.Commit{head}
	var (
		found   []*object.Commit
		sawRoot bool
	)
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		found = append(found, c)
		if len(c.ParentHashes) == 0 {
			sawRoot = true
		}
		for _, p := range c.ParentHashes {
			if seen[p] {
				continue
			}
			seen[p] = true
			pc, err := rp.commitLocked(p)
			if err != nil {
				return nil, fmt.Errorf("walk history: %w", err)
			}
			queue = append(queue, pc)
		}
	}
	if !sawRoot {
		return found, nil
	}
	// Paint from's ancestors and drop them.
	ancestors := map[plumbing.Hash]bool{from: true}
	stack := []plumbing.Hash{from}
	for len(stack) > 0 {
		h := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		c, err := rp.commitLocked(h)
		if err != nil {
			return nil, fmt.Errorf("walk history: %w", err)
		}
		for _, p := range c.ParentHashes {
			if !ancestors[p] {
				ancestors[p] = true
				stack = append(stack, p)
			}
		}
	}
	found = slices.DeleteFunc(found, func(c *object.Commit) bool { return ancestors[c.Hash] })
	if len(found) == 0 || found[0].Hash != head.Hash {
		found = append([]*object.Commit{head}, found...)
	}
	return found, nil
}

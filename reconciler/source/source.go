// Package source is where the reconciler gets the fleet's files from: a git
// repository (remote, cloned into the state directory and fetched; or local,
// read in place) or a plain directory watched with fsnotify (development
// mode).
//
// A Source turns "what is in the repository now" into a Tree: the fleet's
// files at one revision, keyed by their path relative to the fleet root,
// each with its git blob hash (the loader's cache key) and a lazy Open. Sync
// is given the previous Tree and says which paths changed, at a cost
// proportional to the change rather than to the repository: the git source
// compares tree hashes top-down and descends only into subtrees that differ;
// the directory source re-reads only the paths fsnotify named.
//
//	src, err := source.NewGit(source.GitConfig{URL: url, Dir: stateDir + "/repo"})
//	...
//	var tree *source.Tree
//	for {
//		next, err := src.Sync(ctx, tree)
//		switch {
//		case err != nil:
//			// keep serving tree, back off; a *VerifyError names the unsigned commit
//		case next != tree:
//			// validate next.Changed, drop next.Removed, apply next.Files
//			tree = next
//		}
//		// wait for src.Notify(), the poll interval, or a webhook
//	}
//
// The package only reads: it never writes to a local repository or
// directory it follows (the clone of a remote, in GitConfig.Dir, is its own),
// validates nothing (the schema loader does), and keeps no package state.
// IsRepository tells a local repository (NewGit reads it in place) from a
// plain directory (NewDir). ReadRevision and ReadWorkTree read one revision
// of a local repository, or its working tree, for `gitmetal plan`.
package source

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/gitmetal/gitmetal/schema"
	"github.com/go-git/go-git/v5/plumbing"
)

// Tree is the fleet's content at one revision. A Tree, its Files map and
// everything in it are read-only: successive Trees share them.
type Tree struct {
	// Revision identifies the content: the commit hash for git, and for a
	// plain directory "dir:" followed by a digest of the path→blob map.
	Revision string
	// Files maps a path relative to the fleet root (slash-separated) to the
	// file, for the files the loader reads (schema.KindOf is not
	// KindUnknown). Each File has Path and Blob (git blob hash, hex) set,
	// Data nil and an Open that reads the content; Open is safe to call
	// from several goroutines.
	Files map[string]schema.File
	// Changed lists the paths (sorted) that are new or whose content
	// differs from the Tree given to Sync, and Removed those that are gone.
	// With no previous Tree every path is Changed.
	Changed, Removed []string
	// Commit describes the revision's commit; nil for a directory.
	Commit *Commit

	// owner is the git source (or revision reader) that made the tree and
	// root the hash of its fleet-root tree: a later tree of the same owner
	// can be diffed from root top-down.
	owner any
	root  plumbing.Hash
}

// Commit describes a git commit.
type Commit struct {
	Hash    string
	Author  string    // "Name <email>"
	Time    time.Time // committer time
	Summary string    // first line of the message
}

// Source is a place the fleet's files come from.
type Source interface {
	// Sync brings the source up to date and returns the content at its
	// newest revision, with Changed and Removed relative to prev, the last
	// Tree Sync returned (nil at start). When the revision is prev's it
	// returns prev itself. On error prev stays the answer: the caller keeps
	// serving it and retries later; a refused signature is a *VerifyError.
	Sync(ctx context.Context, prev *Tree) (*Tree, error)
	// Notify returns a channel that receives when the source knows it has
	// news (a file written in directory mode, a local repository's ref
	// moving), or nil when the source must be polled.
	Notify() <-chan struct{}
	// String describes the source for logs and status: URL or path, ref,
	// subdirectory. It never includes a password.
	String() string
	// Close releases the source's watchers and files and stops its
	// goroutines.
	Close() error
}

// VerifyError is returned by Sync when a commit on the way to the new head
// is not signed by a key of the configured keyring. Nothing was synced:
// the update stays refused until the head moves.
type VerifyError struct {
	Revision string // the head that was refused
	Commit   string // the offending commit
	Reason   string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("refusing revision %s: commit %s: %s", e.Revision, e.Commit, e.Reason)
}

// diffFiles returns the paths of next that are new or differ from prev, and
// those of prev missing in next, both sorted.
func diffFiles(prev, next map[string]schema.File) (changed, removed []string) {
	for p, f := range next {
		if old, ok := prev[p]; !ok || old.Blob != f.Blob {
			changed = append(changed, p)
		}
	}
	for p := range prev {
		if _, ok := next[p]; !ok {
			removed = append(removed, p)
		}
	}
	slices.Sort(changed)
	slices.Sort(removed)
	return changed, removed
}

// filesOf returns the files of t, nil for a nil t.
func filesOf(t *Tree) map[string]schema.File {
	if t == nil {
		return nil
	}
	return t.Files
}

package actions

import (
	"hash"
	"sync"
)

// hashChunk is the unit handed to the hashing goroutine.
const hashChunk = 1 << 20

// asyncHash hashes in a goroutine of its own, so that verifying a fast
// download does not slow the goroutine that reads it: on a 2-core machine
// sha256 of the compressed stream costs about as much CPU as reading it
// from the socket. Bytes are copied into pooled chunks (a copy costs a
// tenth of hashing them). Write is called from one goroutine; Sum and
// Close from that goroutine too, after the last Write.
type asyncHash struct {
	h    hash.Hash
	free chan []byte
	full chan []byte
	cur  []byte
	done chan struct{}
	once sync.Once
	sum  []byte
}

func newAsyncHash(h hash.Hash) *asyncHash {
	a := &asyncHash{h: h, free: make(chan []byte, 4), full: make(chan []byte, 4), done: make(chan struct{})}
	for range cap(a.free) {
		a.free <- make([]byte, 0, hashChunk)
	}
	go func() { // ends when full is closed, by Sum or Close
		defer close(a.done)
		for b := range a.full {
			a.h.Write(b)
			a.free <- b[:0]
		}
	}()
	return a
}

func (a *asyncHash) Write(p []byte) {
	for len(p) > 0 {
		if a.cur == nil {
			a.cur = <-a.free
		}
		n := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur, p = a.cur[:len(a.cur)+n], p[n:]
		if len(a.cur) == cap(a.cur) {
			a.full <- a.cur
			a.cur = nil
		}
	}
}

// Sum waits for everything written to be hashed and returns the digest.
func (a *asyncHash) Sum() []byte {
	a.once.Do(func() {
		if len(a.cur) > 0 {
			a.full <- a.cur
			a.cur = nil
		}
		close(a.full)
		<-a.done
		a.sum = a.h.Sum(nil)
	})
	return a.sum
}

// Close stops the goroutine; Sum after Close returns the digest of what
// was written.
func (a *asyncHash) Close() { a.Sum() }

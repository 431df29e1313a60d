package source

import (
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watcher turns fsnotify events into a debounced notification: it fires
// once no accepted event has arrived for the debounce delay, and at the
// latest maxWaitFactor delays after the first pending one, so a stream of
// writes still wakes the reader.
type watcher struct {
	fs       *fsnotify.Watcher
	debounce time.Duration
	// accept is called on the watcher's goroutine for each event and says
	// whether it is news; it may add watches to fw.
	accept func(fw *fsnotify.Watcher, ev fsnotify.Event) bool
	// lost is called on the watcher's goroutine when events may have been
	// lost (the kernel queue overflowed, or a read failed).
	lost func()

	notify    chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

const maxWaitFactor = 20

// newWatcher starts a watcher with no watches yet.
func newWatcher(debounce time.Duration, accept func(*fsnotify.Watcher, fsnotify.Event) bool, lost func()) (*watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	w := &watcher{
		fs:       fw,
		debounce: debounce,
		accept:   accept,
		lost:     lost,
		notify:   make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	go w.run()
	return w, nil
}

// run ends when the fsnotify watcher is closed.
func (w *watcher) run() {
	defer close(w.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var (
		armed bool
		first time.Time
	)
	arm := func() {
		now := time.Now()
		switch {
		case !armed:
			armed, first = true, now
			timer.Reset(w.debounce)
		case now.Add(w.debounce).Sub(first) <= maxWaitFactor*w.debounce:
			timer.Reset(w.debounce)
		}
	}
	for {
		select {
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			if w.accept(w.fs, ev) {
				arm()
			}
		case _, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			w.lost()
			arm()
		case <-timer.C:
			armed = false
			select {
			case w.notify <- struct{}{}:
			default:
			}
		}
	}
}

// close stops the watcher and waits for its goroutine.
func (w *watcher) close() error {
	w.closeOnce.Do(func() {
		w.closeErr = w.fs.Close()
		<-w.done
	})
	return w.closeErr
}

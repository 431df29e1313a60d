package actions

import (
	"fmt"
	"sync"
	"time"
)

// progress reports a transfer every interval from a goroutine of its own,
// and once more when stopped.
type progress struct {
	src      *source
	written  func() int64
	out      Reporter
	done     chan struct{}
	wg       sync.WaitGroup
	lastDone int64
	lastAt   time.Time
}

func startProgress(interval time.Duration, src *source, written func() int64, out Reporter) *progress {
	p := &progress{src: src, written: written, out: out, done: make(chan struct{}), lastAt: time.Now()}
	p.wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
				p.report(true)
			}
		}
	})
	return p
}

// stop ends the goroutine and sends the final figures.
func (p *progress) stop() {
	close(p.done)
	p.wg.Wait()
	p.report(false)
}

func (p *progress) report(log bool) {
	now := time.Now()
	pr := Progress{Done: p.src.Done(), Total: p.src.Total(), Written: p.written()}
	if dt := now.Sub(p.lastAt).Seconds(); dt > 0 {
		pr.Rate = float64(pr.Done-p.lastDone) / dt
	}
	p.lastDone, p.lastAt = pr.Done, now
	p.out.Progress(pr)
	if log {
		line := "downloaded " + size(pr.Done)
		if pr.Total > 0 {
			line += fmt.Sprintf(" of %s (%d%%)", size(pr.Total), pr.Done*100/pr.Total)
		}
		p.out.Logf("%s at %s/s, wrote %s", line, size(int64(pr.Rate)), size(pr.Written))
	}
}

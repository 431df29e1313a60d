package actions

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gitmetal/gitmetal/schema"
)

// image2disk: IMG_URL, DEST_DISK, CHECKSUM, COMPRESSED (ignored),
// PROGRESS_INTERVAL_SECONDS, RETRY_ENABLED, RETRY_DURATION_MINUTES.
func (a *Actions) image2disk(ctx context.Context, step schema.Step, out Reporter) error {
	p := newParams(step.Env)
	url := p.required("IMG_URL")
	dest := p.required("DEST_DISK")
	sum := p.checksum("CHECKSUM")
	interval := p.seconds("PROGRESS_INTERVAL_SECONDS", a.cfg.ProgressInterval)
	retry := a.retryPolicy(p)
	if err := p.err(); err != nil {
		return err
	}
	if p.has("COMPRESSED") {
		out.Logf("COMPRESSED is ignored: the compression is detected from the image's first bytes")
	}
	src := a.newSource(ctx, a.cfg.HTTPClient, url, sum.newHash(), retry, out)
	defer src.Close()
	out.Logf("writing %s to %s", url, dest)
	return a.streamToDisk(ctx, src, dest, sum, interval, out)
}

// streamToDisk decompresses src onto dest and verifies src's checksum.
func (a *Actions) streamToDisk(ctx context.Context, src *source, dest string, sum checksum, interval time.Duration, out Reporter) error {
	start := time.Now()
	// The buffer lets detect peek, and batches the decompressor's small
	// reads into large ones from the connection.
	br := bufio.NewReaderSize(src, 1<<20)
	dec, format, err := decompress(br)
	if err != nil {
		return firstErr(src.Err(), err)
	}
	defer dec.Close()
	d, err := openDisk(dest, a.cfg.WriteBlockSize)
	if err != nil {
		return err
	}
	defer d.f.Close()
	how := "through the page cache"
	if d.direct {
		how = "with O_DIRECT"
	}
	out.Logf("image is %s; writing %s", formatName(format), how)

	prog := startProgress(interval, src, d.written.Load, out)
	err = d.copyFrom(ctx, dec, a.cfg.WriteBlockSize)
	if err == nil {
		// The checksum covers every byte served: read what the
		// decompressor left (padding, trailing data).
		_, err = io.Copy(io.Discard, br)
	}
	prog.stop()
	if err != nil {
		return firstErr(src.Err(), ctx.Err(), err)
	}
	if err := sum.verify(src.Sum()); err != nil {
		return fmt.Errorf("%s: %w", src.url, err)
	}
	flushStart := time.Now()
	if err := d.finish(out); err != nil {
		return err
	}
	elapsed := time.Since(start)
	msg := fmt.Sprintf("wrote %s to %s in %s (%s/s, the final flush %s); downloaded %s", size(d.written.Load()), dest,
		elapsed.Round(time.Millisecond), size(int64(float64(d.written.Load())/elapsed.Seconds())),
		time.Since(flushStart).Round(time.Millisecond), size(src.Done()))
	if sum.algo != "" {
		msg += ", " + sum.algo + " verified"
	}
	out.Logf("%s", msg)
	return nil
}

func formatName(f string) string {
	if f == formatRaw {
		return "not compressed"
	}
	return f + "-compressed"
}

// firstErr returns the first non-nil error, so that a download's own
// failure is reported rather than what the decompressor made of it.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			if errors.Is(err, errClosed) {
				continue
			}
			return err
		}
	}
	return nil
}

// size formats a byte count for people.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

package actions

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gitmetal/gitmetal/schema"
)

// archiveTypes are the ARCHIVE_TYPE values accepted, Tinkerbell's (tar,
// targz) and the obvious others, with the compression each implies.
var archiveTypes = map[string]string{
	"tar":   formatRaw,
	"targz": formatGzip, "tar.gz": formatGzip, "tgz": formatGzip, "gz": formatGzip,
	"tarzst": formatZstd, "tar.zst": formatZstd, "tzst": formatZstd, "zst": formatZstd,
	"tarxz": formatXz, "tar.xz": formatXz, "txz": formatXz, "xz": formatXz,
	"tarbz2": formatBzip2, "tar.bz2": formatBzip2, "tbz2": formatBzip2, "bz2": formatBzip2,
}

// archive2disk: ARCHIVE_URL, ARCHIVE_TYPE (optional: the compression is
// detected), TARFILE_CHECKSUM (of the archive as downloaded), DEST_DISK +
// FS_TYPE or Config.Root, DEST_PATH (default "/"),
// HTTP_CLIENT_TIMEOUT_MINUTES (bounds the download), and the download
// settings of image2disk.
func (a *Actions) archive2disk(ctx context.Context, step schema.Step, out Reporter) (err error) {
	p := newParams(step.Env)
	url := p.required("ARCHIVE_URL")
	sum := p.checksum("TARFILE_CHECKSUM")
	want := ""
	if v := p.str("ARCHIVE_TYPE"); v != "" {
		var ok bool
		if want, ok = archiveTypes[strings.ToLower(v)]; !ok {
			p.fail("ARCHIVE_TYPE", v, "want tar, targz, tar.zst (tzst), tar.xz or tar.bz2")
		}
	}
	dest := "."
	if v := p.str("DEST_PATH"); strings.Trim(v, "/") != "" {
		dest = relPath(p, "DEST_PATH")
	}
	interval := p.seconds("PROGRESS_INTERVAL_SECONDS", a.cfg.ProgressInterval)
	retry := a.retryPolicy(p)
	limit := p.minutes("HTTP_CLIENT_TIMEOUT_MINUTES")
	if err := p.err(); err != nil {
		return err
	}
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}

	dir, done, err := a.targetRoot(p, out)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, done()) }()
	top, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer top.Close()
	if err := top.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("env DEST_PATH: %w", err)
	}
	root, err := top.OpenRoot(dest)
	if err != nil {
		return fmt.Errorf("env DEST_PATH: %w", err)
	}
	defer root.Close()

	src := a.newSource(ctx, a.cfg.HTTPClient, url, sum.newHash(), retry, out)
	defer src.Close()
	br := bufio.NewReaderSize(src, 1<<20)
	dec, format, err := decompress(br)
	if err != nil {
		return firstErr(src.Err(), err)
	}
	defer dec.Close()
	if want != "" && want != format {
		out.Logf("ARCHIVE_TYPE says %s but the archive is %s: going by its content", formatName(want), formatName(format))
	}
	out.Logf("unpacking %s (%s) into %s", url, formatName(format), "/"+strings.TrimPrefix(dest, "."))

	start := time.Now()
	x := newExtractor(root, out)
	prog := startProgress(interval, src, x.written.Load, out)
	err = x.extract(ctx, tar.NewReader(dec))
	if err == nil {
		// The checksum covers the whole file: tar's end padding and
		// anything after it too.
		if _, err = io.Copy(io.Discard, dec); err == nil {
			_, err = io.Copy(io.Discard, br)
		}
	}
	prog.stop()
	if err != nil {
		// A checksum mismatch explains a corrupt archive better than
		// the corruption does, when the whole file arrived.
		if src.Err() == nil {
			if _, derr := io.Copy(io.Discard, br); derr == nil {
				if serr := sum.verify(src.Sum()); serr != nil {
					return fmt.Errorf("%s: %w (and unpacking failed: %w)", url, serr, err)
				}
			}
		}
		return firstErr(src.Err(), ctx.Err(), err)
	}
	if err := sum.verify(src.Sum()); err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	msg := fmt.Sprintf("unpacked %d entries (%s) in %s", x.files, size(x.written.Load()), time.Since(start).Round(time.Millisecond))
	if x.skipped > 0 {
		msg += fmt.Sprintf("; skipped %d device nodes (not running as root)", x.skipped)
	}
	if sum.algo != "" {
		msg += "; " + sum.algo + " verified"
	}
	out.Logf("%s", msg)
	return nil
}

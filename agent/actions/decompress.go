package actions

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Compression formats, detected from the first bytes of a stream.
const (
	formatRaw   = "raw"
	formatGzip  = "gzip"
	formatXz    = "xz"
	formatZstd  = "zstd"
	formatBzip2 = "bzip2"
)

// detect looks at the first bytes of r without consuming them. Anything
// that is not one of the compressed formats' magic numbers is raw: a disk
// image starts with boot code or zeros, a tar archive with a file name.
func detect(r *bufio.Reader) (string, error) {
	head, err := r.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return formatGzip, nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return formatXz, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return formatZstd, nil
	// A zstd skippable frame (0x184D2A5?, little-endian), as pzstd and
	// seekable-format writers put first.
	case len(head) >= 4 && head[0]&0xf0 == 0x50 && head[1] == 0x2a && head[2] == 0x4d && head[3] == 0x18:
		return formatZstd, nil
	case len(head) >= 4 && head[0] == 'B' && head[1] == 'Z' && head[2] == 'h' && head[3] >= '1' && head[3] <= '9':
		return formatBzip2, nil
	}
	return formatRaw, nil
}

// decompress detects r's format and returns a reader of the decompressed
// bytes. Close releases the decoder's goroutines; it does not close r.
func decompress(r *bufio.Reader) (io.ReadCloser, string, error) {
	format, err := detect(r)
	if err != nil {
		return nil, "", fmt.Errorf("read the first bytes: %w", err)
	}
	switch format {
	case formatGzip:
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, format, fmt.Errorf("gzip: %w", err)
		}
		return z, format, nil
	case formatXz:
		z, err := xz.NewReader(r)
		if err != nil {
			return nil, format, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(z), format, nil
	case formatZstd:
		// Decoding in the reading goroutine (concurrency 1) is faster
		// for one stream than the decoder's own goroutines, and uses
		// less CPU (measured: 1.6 against 1.4 GB/s, 0.53 against
		// 0.72 s CPU per GiB): the copy to the disk and the hashing run
		// in goroutines of their own already.
		z, err := zstd.NewReader(r,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(1<<31))
		if err != nil {
			return nil, format, fmt.Errorf("zstd: %w", err)
		}
		return zstdCloser{z}, format, nil
	case formatBzip2:
		return io.NopCloser(bzip2.NewReader(r)), format, nil
	}
	return io.NopCloser(r), format, nil
}

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error {
	z.Decoder.Close()
	return nil
}

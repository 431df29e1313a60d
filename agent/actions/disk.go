package actions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync/atomic"
	"unsafe"
)

// directAlign is the alignment of O_DIRECT writes (offset, length and
// memory): 4096 suits 512-byte and 4Kn disks and ext4's blocks alike.
const directAlign = 4096

// flushBlocks is how many write blocks make a flush window when writing
// through the page cache: once a window is written its write-back is
// started, so that the disk works while the download goes on instead of
// a whole image of dirty pages waiting for the final fsync (32 MiB with
// 4 MiB blocks).
const flushBlocks = 8

// flushLag is how many windows may be in write-back before the writer
// waits for the oldest (256 MiB with 4 MiB blocks).
const flushLag = 8

// bufferDepth is how many write blocks are in flight between the
// decompressor and the writer goroutine.
const bufferDepth = 4

// disk is a destination opened for writing from its start: a block
// device, or a regular file (created if missing, never truncated: a file
// stands for a disk).
//
// It is written with O_DIRECT when the file system or device allows it:
// an image is written once and never read back, so the page cache is
// pure cost (measured here: a tenth of the CPU time of buffered writes,
// and no flush at the end). Without O_DIRECT (tmpfs, an unaligned block
// size) it writes through the page cache and starts write-back as it
// goes. The last, partial block is written through the page cache.
type disk struct {
	f       *os.File
	path    string
	block   bool
	direct  bool
	written atomic.Int64
	window  int64 // flush window, set by copyFrom
	flushed int64 // write-back started up to here
	waited  int64 // write-back finished up to here
}

// openDisk opens path for writes of blockSize bytes: with O_DIRECT when
// blockSize allows it and the file system accepts it.
func openDisk(path string, blockSize int) (*disk, error) {
	fi, err := os.Stat(path)
	d := &disk{path: path, direct: blockSize%directAlign == 0}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if d.f, err = openDirect(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, &d.direct); err != nil {
			return nil, fmt.Errorf("create %s: %w", path, err)
		}
		return d, nil
	case err != nil:
		return nil, err
	case fi.Mode().IsRegular():
		if d.f, err = openDirect(path, os.O_WRONLY, &d.direct); err != nil {
			return nil, err
		}
		return d, nil
	case fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0:
		// O_EXCL on a block device fails while a file system on it is
		// mounted: never write under a mounted file system.
		if d.f, err = openDirect(path, os.O_WRONLY|os.O_EXCL, &d.direct); err != nil {
			return nil, fmt.Errorf("open %s (is one of its partitions mounted?): %w", path, err)
		}
		d.block = true
		return d, nil
	}
	return nil, fmt.Errorf("%s is a %s, want a block device or a regular file", path, kind(fi.Mode()))
}

// openDirect opens with O_DIRECT if *direct, or without when the file
// system refuses it (EINVAL), and says which in *direct.
func openDirect(path string, flag int, direct *bool) (*os.File, error) {
	if oDirect != 0 && *direct {
		f, err := os.OpenFile(path, flag|oDirect, 0o644)
		if err == nil {
			*direct = true
			return f, nil
		}
		if !errors.Is(err, errInvalid) {
			return nil, err
		}
		// O_CREATE|O_EXCL may have made the file before O_DIRECT failed.
		flag &^= os.O_EXCL
	}
	*direct = false
	return os.OpenFile(path, flag, 0o644)
}

// alignedBuffer returns a buffer of n bytes that starts at a multiple of
// directAlign.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % directAlign); r != 0 {
		off = directAlign - r
	}
	return b[off : off+n : off+n]
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

// copyFrom writes everything r yields, in blocks of blockSize, with the
// writes in a goroutine of their own so that reading (download and
// decompression) and writing overlap. It returns r's error or the write
// error, whichever came first.
func (d *disk) copyFrom(ctx context.Context, r io.Reader, blockSize int) error {
	d.window = int64(blockSize) * flushBlocks
	if blockSize%directAlign != 0 && d.direct {
		if err := d.setBuffered(); err != nil {
			return err
		}
	}
	free := make(chan []byte, bufferDepth)
	for range bufferDepth {
		free <- alignedBuffer(blockSize)
	}
	// full never blocks a sender: only bufferDepth buffers exist.
	full := make(chan []byte, bufferDepth)
	failed := make(chan struct{})
	writeErr := make(chan error, 1)
	go func() {
		var err error
		for b := range full {
			if err == nil {
				if err = d.write(b); err != nil {
					close(failed)
				}
			}
			free <- b[:cap(b)]
		}
		writeErr <- err
	}()

	var readErr error
	for readErr == nil {
		var buf []byte
		select {
		case <-failed:
		case <-ctx.Done():
			readErr = ctx.Err()
		case buf = <-free:
		}
		if buf == nil {
			break
		}
		n, err := fill(r, buf)
		if n > 0 {
			full <- buf[:n]
		} else {
			free <- buf
		}
		switch {
		case errors.Is(err, io.EOF):
			close(full)
			return <-writeErr
		case err != nil:
			readErr = err
		}
	}
	close(full)
	if werr := <-writeErr; werr != nil {
		return werr
	}
	return readErr
}

// fill reads until buf is full or r fails; unlike io.ReadFull it returns
// r's own error, so a reader's io.ErrUnexpectedEOF is not mistaken for the
// end of the stream.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (d *disk) write(b []byte) error {
	if d.direct {
		// Only the last block can be short: its aligned part goes
		// direct, the rest through the page cache.
		n := len(b) &^ (directAlign - 1)
		if n > 0 {
			m, err := d.f.Write(b[:n])
			d.written.Add(int64(m))
			switch {
			case errors.Is(err, errInvalid) && m == 0 && d.written.Load() == 0:
				// Opened O_DIRECT but refused at the first write
				// (some file systems): write through the page cache.
				if err := d.setBuffered(); err != nil {
					return err
				}
				return d.write(b)
			case err != nil:
				return fmt.Errorf("write %s at byte %d: %w", d.path, d.written.Load(), err)
			}
			b = b[n:]
		}
		if len(b) == 0 {
			return nil
		}
		if err := d.setBuffered(); err != nil {
			return err
		}
	}
	n, err := d.f.Write(b)
	d.written.Add(int64(n))
	if err != nil {
		return fmt.Errorf("write %s at byte %d: %w", d.path, d.written.Load(), err)
	}
	d.flushBehind()
	return nil
}

// setBuffered turns O_DIRECT off for the rest of the writes.
func (d *disk) setBuffered() error {
	if err := clearDirect(d.f); err != nil {
		return fmt.Errorf("%s: turn O_DIRECT off: %w", d.path, err)
	}
	d.direct = false
	d.flushed, d.waited = d.written.Load(), d.written.Load()
	return nil
}

// flushBehind starts write-back of each full window, so that the disk
// writes while the download goes on instead of after it, and waits for
// the windows more than flushLag behind, which bounds the dirty pages
// without stalling the writer while the disk keeps up.
func (d *disk) flushBehind() {
	w := d.written.Load()
	for w-d.flushed >= d.window {
		startWriteback(d.f, d.flushed, d.window)
		d.flushed += d.window
	}
	for d.flushed-d.waited > flushLag*d.window {
		waitWriteback(d.f, d.waited, d.window)
		d.waited += d.window
	}
}

// finish makes the data durable and, on a block device, makes the kernel
// read the new partition table; it closes the file.
func (d *disk) finish(out Reporter) error {
	defer d.f.Close()
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", d.path, err)
	}
	if d.block {
		if err := rereadPartitions(d.f); err != nil {
			return fmt.Errorf("re-read the partition table of %s: %w", d.path, err)
		}
		out.Logf("re-read the partition table of %s", d.path)
	}
	return d.f.Close()
}

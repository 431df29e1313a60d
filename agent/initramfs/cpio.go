package initramfs

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"
)

// File modes of cpio entries (the S_IFMT bits of stat(2)).
const (
	ModeFile    = 0o100000
	ModeDir     = 0o040000
	ModeSymlink = 0o120000
	ModeChar    = 0o020000
	modeType    = 0o170000
)

// File is one entry of a cpio archive. Name is relative, without a leading
// slash ("lib/modules/virtio_net.ko"). A symlink's Data is its target.
type File struct {
	Name                 string
	Mode                 uint32 // type and permission bits: ModeFile|0o644
	Data                 []byte
	RdevMajor, RdevMinor uint32 // for ModeChar
}

// WriteCPIO writes files as a cpio archive in the "newc" format (070701),
// the one the kernel unpacks into its initial root file system. Entries
// are sorted by name, so parent directories come before what they hold,
// and owners (root), times (0) and inode numbers are fixed: the same files
// give the same bytes in any order. Names must be unique.
func WriteCPIO(w io.Writer, files []File) error {
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	bw := bufio.NewWriterSize(w, 1<<20)
	for i, f := range sorted {
		if f.Name == "" || strings.HasPrefix(f.Name, "/") || strings.Contains(f.Name, "\x00") {
			return fmt.Errorf("cpio entry %q: want a relative name", f.Name)
		}
		if i > 0 && sorted[i-1].Name == f.Name {
			return fmt.Errorf("cpio entry %q appears twice", f.Name)
		}
		if f.Mode&modeType == 0 {
			return fmt.Errorf("cpio entry %q: mode %o has no file type", f.Name, f.Mode)
		}
		if err := writeEntry(bw, uint32(i+1), f); err != nil {
			return err
		}
	}
	if err := writeEntry(bw, 0, File{Name: "TRAILER!!!"}); err != nil {
		return err
	}
	return bw.Flush()
}

func writeEntry(w *bufio.Writer, ino uint32, f File) error {
	nlink := uint32(1)
	if f.Mode&modeType == ModeDir {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check.
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, f.Mode, 0, 0, nlink, 0, len(f.Data), 0, 0, f.RdevMajor, f.RdevMinor, len(f.Name)+1, 0)
	n := len(hdr) + len(f.Name) + 1
	w.WriteString(hdr)
	w.WriteString(f.Name)
	w.WriteByte(0)
	pad(w, n)
	w.Write(f.Data)
	_, err := w.Write(make([]byte, padding(len(f.Data))))
	return err
}

// pad writes the zeros that align n written bytes to 4.
func pad(w *bufio.Writer, n int) {
	w.Write(make([]byte, padding(n)))
}

func padding(n int) int { return (4 - n%4) % 4 }

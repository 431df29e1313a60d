package initramfs

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// firmwareTrees are where Debian packages keep firmware: lib/firmware up
// to Debian 12, usr/lib/firmware after the /usr merge.
var firmwareTrees = []string{"lib/firmware", "usr/lib/firmware"}

// firmwareFiles collects the firmware of every entry (a package name, a
// .deb file or a directory), keyed by the path under /lib/firmware. The
// kernel's firmware loader reads /lib/firmware itself (no udev needed),
// including .xz-compressed files.
func firmwareFiles(ctx context.Context, cacheDir string, entries []string) (map[string]File, error) {
	out := map[string]File{}
	from := map[string]string{} // path → entry, for conflict messages
	for _, e := range entries {
		var roots []string
		st, err := os.Stat(e)
		switch {
		case err == nil && st.IsDir():
			roots = []string{e}
		case err == nil && strings.HasSuffix(e, ".deb"):
			dir, err := UnpackDeb(ctx, cacheDir, e)
			if err != nil {
				return nil, err
			}
			roots = trees(dir)
		case err != nil && (strings.Contains(e, "/") || strings.HasSuffix(e, ".deb")):
			return nil, fmt.Errorf("%s: %w", e, err)
		default:
			dir, err := Unpack(ctx, cacheDir, e)
			if err != nil {
				return nil, fmt.Errorf("%w\n(most of Debian's firmware packages are in the non-free-firmware component: add it to apt's sources and run apt-get update)", err)
			}
			roots = trees(dir)
		}
		n := 0
		for _, root := range roots {
			err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				rel, err := filepath.Rel(root, p)
				if err != nil || rel == "." {
					return err
				}
				rel = filepath.ToSlash(rel)
				var f File
				switch {
				case d.Type()&fs.ModeSymlink != 0:
					target, err := os.Readlink(p)
					if err != nil {
						return err
					}
					// An absolute link into the package's firmware tree
					// points at the same file under /lib/firmware.
					for _, t := range firmwareTrees {
						if rest, ok := strings.CutPrefix(target, "/"+t+"/"); ok {
							target = "/lib/firmware/" + rest
						}
					}
					f = File{Mode: ModeSymlink | 0o777, Data: []byte(target)}
				case d.IsDir():
					f = File{Mode: ModeDir | 0o755}
				case d.Type().IsRegular():
					b, err := os.ReadFile(p)
					if err != nil {
						return err
					}
					f = File{Mode: ModeFile | 0o644, Data: b}
					n++
				default:
					return nil
				}
				if old, ok := out[rel]; ok {
					if old.Mode != f.Mode || !bytes.Equal(old.Data, f.Data) {
						return fmt.Errorf("lib/firmware/%s differs in %s and %s", rel, from[rel], e)
					}
					return nil
				}
				out[rel], from[rel] = f, e
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", e, err)
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("%s holds no firmware files (looked in %s)", e, strings.Join(firmwareTrees, ", "))
		}
	}
	return out, nil
}

// trees returns the firmware trees of an unpacked package that exist.
func trees(dir string) []string {
	var out []string
	for _, t := range firmwareTrees {
		p := filepath.Join(dir, t)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

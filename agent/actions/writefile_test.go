package actions

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWriteFile(t *testing.T) {
	t.Parallel()
	root := os.Geteuid() == 0
	for _, tc := range []struct {
		name     string
		env      map[string]string
		path     string
		want     string // content
		mode     string
		uid, gid uint32 // checked when root
		dirs     map[string]string
	}{
		{
			name: "defaults",
			env:  map[string]string{"DEST_PATH": "/etc/hostname", "CONTENTS": "node-1\n"},
			path: "etc/hostname", want: "node-1\n", mode: "0644",
			dirs: map[string]string{"etc": "0755"},
		},
		{
			name: "modes and owner",
			env: map[string]string{"DEST_PATH": "/home/ops/.ssh/authorized_keys", "CONTENTS": "ssh-ed25519 AAAA ops",
				"MODE": "0600", "DIRMODE": "0700", "UID": "1000", "GID": "1000"},
			path: "home/ops/.ssh/authorized_keys", want: "ssh-ed25519 AAAA ops", mode: "0600", uid: 1000, gid: 1000,
			dirs: map[string]string{"home": "0700", "home/ops": "0700", "home/ops/.ssh": "0700"},
		},
		{
			name: "setuid and empty",
			env:  map[string]string{"DEST_PATH": "usr/bin/x", "MODE": "4755"},
			path: "usr/bin/x", want: "", mode: "4755",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !root && tc.uid != 0 {
				needRoot(t) // chown
			}
			a := newTestActions(t)
			if err := a.Run(context.Background(), step("writefile", tc.env), newRecorder(t)); err != nil {
				t.Fatalf("Run: %v", err)
			}
			p := filepath.Join(a.cfg.Root, tc.path)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("content: got %q, want %q", b, tc.want)
			}
			fi, _ := os.Stat(p)
			if got := octal(fi.Mode()); got != tc.mode {
				t.Errorf("mode: got %s, want %s", got, tc.mode)
			}
			if st := fi.Sys().(*syscall.Stat_t); root && (st.Uid != tc.uid || st.Gid != tc.gid) {
				t.Errorf("owner: got %d:%d, want %d:%d", st.Uid, st.Gid, tc.uid, tc.gid)
			}
			for d, mode := range tc.dirs {
				fi, err := os.Stat(filepath.Join(a.cfg.Root, d))
				if err != nil {
					t.Fatal(err)
				}
				if got := octal(fi.Mode()); got != mode {
					t.Errorf("%s mode: got %s, want %s", d, got, mode)
				}
				if st := fi.Sys().(*syscall.Stat_t); root && (st.Uid != tc.uid || st.Gid != tc.gid) {
					t.Errorf("%s owner: got %d:%d, want %d:%d", d, st.Uid, st.Gid, tc.uid, tc.gid)
				}
			}
			if ls, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".gitmetal-*")); len(ls) != 0 {
				t.Errorf("temporary files left: %v", ls)
			}
		})
	}
}

func TestWriteFileReplacesSymlinkWithoutFollowing(t *testing.T) {
	t.Parallel()
	a := newTestActions(t)
	outside := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(outside, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(a.cfg.Root, "etc"), 0o755)
	if err := os.Symlink(outside, filepath.Join(a.cfg.Root, "etc/resolv.conf")); err != nil {
		t.Fatal(err)
	}
	err := a.Run(context.Background(), step("writefile", map[string]string{"DEST_PATH": "/etc/resolv.conf", "CONTENTS": "nameserver 192.0.2.1\n"}), newRecorder(t))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if b, _ := os.ReadFile(outside); string(b) != "keep" {
		t.Errorf("the link's target was written: %q", b)
	}
	fi, err := os.Lstat(filepath.Join(a.cfg.Root, "etc/resolv.conf"))
	if err != nil || !fi.Mode().IsRegular() {
		t.Errorf("etc/resolv.conf: got %v, %v, want a regular file", fi, err)
	}
}

func TestWriteFileRefuses(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	for _, tc := range []struct {
		name  string
		env   map[string]string
		setup func(root string)
		want  string
	}{
		{"dot-dot", map[string]string{"DEST_PATH": "/etc/../../x"}, nil, `env DEST_PATH="/etc/../../x": must not contain ".."`},
		{"no path", map[string]string{"CONTENTS": "x"}, nil, "env DEST_PATH: required"},
		{"root", map[string]string{"DEST_PATH": "/"}, nil, "names the root directory"},
		{"bad mode", map[string]string{"DEST_PATH": "/x", "MODE": "rw-r--r--"}, nil, "env MODE"},
		{"bad uid", map[string]string{"DEST_PATH": "/x", "UID": "root"}, nil, "env UID"},
		{"fs type missing", map[string]string{"DEST_PATH": "/x", "DEST_DISK": "/dev/null"}, nil, "env FS_TYPE: required with DEST_DISK"},
		{"not a block device", map[string]string{"DEST_PATH": "/x", "DEST_DISK": "/dev/null", "FS_TYPE": "ext4"}, nil, "character device, want a block device"},
		{"directory through a link out", map[string]string{"DEST_PATH": "/etc/x/y"}, func(root string) {
			os.Symlink(outside, filepath.Join(root, "etc"))
		}, "/etc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := newTestActions(t)
			if tc.setup != nil {
				tc.setup(a.cfg.Root)
			}
			err := a.Run(context.Background(), step("writefile", tc.env), newRecorder(t))
			t.Logf("error: %v", err)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: got %v, want an error containing %q", err, tc.want)
			}
			if ls, _ := os.ReadDir(outside); len(ls) != 0 {
				t.Errorf("written outside: %v", ls)
			}
		})
	}
}

func TestWriteFileIntoExt4(t *testing.T) {
	t.Parallel()
	needRoot(t)
	img := makeExt4(t, "")
	a := newTestActions(t)
	err := a.Run(context.Background(), step("writefile", map[string]string{
		"DEST_DISK": img, "FS_TYPE": "ext4", "DEST_PATH": "/etc/cloud/cloud.cfg.d/90-gitmetal.cfg",
		"CONTENTS": "datasource_list: [Ec2]\n", "MODE": "0640", "UID": "0", "GID": "4", "DIRMODE": "0750",
	}), newRecorder(t))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	body, fi := readFromImage(t, a, img, "etc/cloud/cloud.cfg.d/90-gitmetal.cfg")
	if body != "datasource_list: [Ec2]\n" || octal(fi.Mode()) != "0640" {
		t.Errorf("file: got %q mode %s, want the contents with mode 0640", body, octal(fi.Mode()))
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Gid != 4 {
		t.Errorf("gid: got %d, want 4", st.Gid)
	}
}

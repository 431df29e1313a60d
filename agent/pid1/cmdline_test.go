package pid1

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCmdline(t *testing.T) {
	t.Parallel()
	const base = "gitmetal.server=http://10.0.0.1:8080 gitmetal.token=tok-1 "
	tests := []struct {
		name    string
		cmdline string
		want    Settings
		errs    []string // substrings of the error; none when empty
	}{
		{"the iPXE script's line",
			"gitmetal.server=http://10.0.0.1:8080 gitmetal.token=tok-1 gitmetal.mac=52:54:00:12:34:56 console=ttyS0,115200 console=tty0 initrd=initramfs.cpio.gz\n",
			Settings{Server: "http://10.0.0.1:8080", Token: "tok-1", MAC: "52:54:00:12:34:56"}, nil},
		{"upper-case MAC, debug", base + "gitmetal.mac=52:54:00:AB:CD:EF gitmetal.debug=1",
			Settings{Server: "http://10.0.0.1:8080", Token: "tok-1", MAC: "52:54:00:ab:cd:ef", Debug: true}, nil},
		{"BOOTIF", base + "BOOTIF=01-52-54-00-ab-cd-ef",
			Settings{Server: "http://10.0.0.1:8080", Token: "tok-1", MAC: "52:54:00:ab:cd:ef"}, nil},
		{"gitmetal.mac wins over BOOTIF", base + "BOOTIF=01-52-54-00-00-00-02 gitmetal.mac=52:54:00:00:00:01",
			Settings{Server: "http://10.0.0.1:8080", Token: "tok-1", MAC: "52:54:00:00:00:01"}, nil},
		{"quoted values, tabs", "gitmetal.server=\"https://gm.example:8443/base\"\tgitmetal.token=\"a b\" gitmetal.debug",
			Settings{Server: "https://gm.example:8443/base", Token: "a b", Debug: true}, nil},
		{"last one wins", base + "gitmetal.token=tok-2",
			Settings{Server: "http://10.0.0.1:8080", Token: "tok-2"}, nil},
		{"nothing", "console=ttyS0 quiet", Settings{}, []string{"no gitmetal.server=", "no gitmetal.token="}},
		{"bad server", "gitmetal.server=ftp://x gitmetal.token=t", Settings{Token: "t"}, []string{"want an http:// or https:// URL"}},
		{"bad MAC", base + "gitmetal.mac=52:54:00", Settings{Server: "http://10.0.0.1:8080", Token: "tok-1"}, []string{"gitmetal.mac=\"52:54:00\""}},
		{"bad BOOTIF", base + "BOOTIF=52-54-00-ab-cd-ef", Settings{Server: "http://10.0.0.1:8080", Token: "tok-1"}, []string{"BOOTIF="}},
		{"debug off", base + "gitmetal.debug=0", Settings{Server: "http://10.0.0.1:8080", Token: "tok-1"}, nil},
	}
	for _, tc := range tests {
		got, err := ParseCmdline(tc.cmdline)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: settings (-want +got):\n%s", tc.name, diff)
		}
		if len(tc.errs) == 0 && err != nil {
			t.Errorf("%s: got error %v, want none", tc.name, err)
		}
		if len(tc.errs) > 0 && err == nil {
			t.Errorf("%s: got no error, want %q", tc.name, tc.errs)
		}
		for _, e := range tc.errs {
			if err != nil && !strings.Contains(err.Error(), e) {
				t.Errorf("%s: got error %q, want it to contain %q", tc.name, err, e)
			}
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	got := redact("gitmetal.server=http://x gitmetal.token=secret console=ttyS0")
	if want := "gitmetal.server=http://x gitmetal.token=<redacted> console=ttyS0"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDefaultAgentArgs(t *testing.T) {
	t.Parallel()
	got := DefaultAgentArgs(Settings{Server: "http://s", Token: "t", Debug: true}, "52:54:00:00:00:01")
	want := []string{"agent", "--server", "http://s", "--token", "t", "--mac", "52:54:00:00:00:01", "--allow-reboot", "--log-level", "debug"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

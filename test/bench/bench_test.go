package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/test/fleetgen"
)

// writeJSONFleet writes a JSON fleet of n machines and returns its directory.
func writeJSONFleet(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := fleetgen.Write(dir, n, fleetgen.JSON); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestFloorAcceptsGeneratedFleet(t *testing.T) {
	t.Parallel()
	dir := writeJSONFleet(t, 95)
	f, issues, err := loadFloor(context.Background(), dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(issues) > 0 {
		t.Fatalf("got issues %q, want none", issues)
	}
	if got, want := f.counts(), [3]int{95, 2, 10}; got != want {
		t.Errorf("counts: got %v, want %v", got, want)
	}
	if f.settings == nil {
		t.Errorf("settings: got nil, want gitmetal.json's")
	}
}

// TestFloorRejects checks that the floor does the work it is credited
// with: each case breaks one rule in one file and must be reported.
func TestFloorRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string // relative to the fleet root
		from string // replaced once in the file
		to   string
		want string // in one issue
	}{
		{"bad mac", "hardware/r000/node-00001.json", `"52:54:00:00:00:01"`, `"52:54:00:00:00:zz"`, "interfaces.0.mac"},
		{"duplicate mac", "hardware/r000/node-00001.json", `"52:54:00:00:00:01"`, `"52-54-00-00-00-02"`, "MAC"},
		{"duplicate ip", "hardware/r000/node-00001.json", `"10.0.1.3/24"`, `"10.0.1.4/16"`, "IP address"},
		{"duplicate hostname", "hardware/r000/node-00001.json", `"hostname": "node-00001"`, `"hostname": "node-00002"`, "hostname"},
		{"bad ip", "hardware/r000/node-00001.json", `"10.0.1.3/24"`, `"10.0.1.300/24"`, "interfaces.0.ip"},
		{"bad hostname", "hardware/r000/node-00001.json", `"hostname": "node-00001"`, `"hostname": "Node_1"`, "interfaces.0.hostname"},
		{"bad arch", "hardware/r000/node-00001.json", `"x86_64"`, `"ppc64"`, "interfaces.0.arch"},
		{"lease time too short", "hardware/r000/node-00001.json", `"arch"`, `"leaseTime": 0, "arch"`, "interfaces.0.leaseTime"},
		{"unknown field", "hardware/r000/node-00001.json", `"arch"`, `"archh": "x", "arch"`, "unknown field"},
		{"unknown action", "templates/ubuntu.json", `"image2disk"`, `"image2dsk"`, "uses"},
		{"missing hardware", "workflows/node-00010.json", `"hardware": "node-00010"`, `"hardware": "node-99999"`, "no hardware"},
		{"does not render", "templates/ubuntu.json", `{{.values.image}}`, `{{.values.missing}}`, "does not render"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := writeJSONFleet(t, 20)
			p := filepath.Join(dir, filepath.FromSlash(tt.file))
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), tt.from) {
				t.Fatalf("%s does not contain %s", tt.file, tt.from)
			}
			if err := os.WriteFile(p, []byte(strings.Replace(string(data), tt.from, tt.to, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			_, issues, err := loadFloor(context.Background(), dir, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, is := range issues {
				if strings.Contains(is, tt.want) {
					return
				}
			}
			t.Errorf("got issues %q, want one containing %q", issues, tt.want)
		})
	}
}

func TestParseSizes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{in: "1000,10000", want: []int{1000, 10000}},
		{in: " 5 ", want: []int{5}},
		{in: "", wantErr: true},
		{in: "0", wantErr: true},
		{in: "1000,", wantErr: true},
		{in: "1e3", wantErr: true},
		{in: "100001", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseSizes(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseSizes(%q): got error %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !slices.Equal(got, tt.want) {
			t.Errorf("parseSizes(%q): got %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestStatistics(t *testing.T) {
	t.Parallel()
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	twenty := ms(20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
	tests := []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{"median odd", median(ms(3, 1, 2)), 2 * time.Millisecond},
		{"median even", median(ms(4, 1, 3, 2)), 2500 * time.Microsecond},
		{"median none", median(nil), 0},
		{"p90 of 20", percentile(twenty, 90), 18 * time.Millisecond},
		{"p90 of 3", percentile(ms(1, 2, 3), 90), 3 * time.Millisecond},
		{"p50 of 20", percentile(twenty, 50), 10 * time.Millisecond},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestChangedMachine(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 7, 1000, 10000} {
		seen := map[int]bool{}
		for i := range oneFileRuns {
			m := changedMachine(i, oneFileRuns, n)
			if m < 0 || m >= n {
				t.Fatalf("n=%d: changedMachine(%d) = %d, out of range", n, i, m)
			}
			seen[m] = true
		}
		if want := min(n, oneFileRuns); n >= oneFileRuns && len(seen) != want {
			t.Errorf("n=%d: got %d distinct machines, want %d", n, len(seen), want)
		}
	}
}

func TestFmtCount(t *testing.T) {
	t.Parallel()
	for in, want := range map[int]string{1: "1", 999: "999", 1000: "1,000", 10000: "10,000", 1234567: "1,234,567"} {
		if got := fmtCount(in); got != want {
			t.Errorf("fmtCount(%d): got %q, want %q", in, got, want)
		}
	}
}

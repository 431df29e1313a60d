package main

import (
	"bufio"
	"cmp"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The targets of issue 2, on two cores. The cold targets are for 10,000
// machines; warm and one-file are judged on fleets up to that size.
const (
	targetSize    = 10_000
	coldTarget    = 4 * time.Second
	rssTarget     = 400e6 // bytes
	warmTarget    = time.Second
	oneFileTarget = 5 * time.Millisecond
)

// machineInfo describes where the benchmark ran.
type machineInfo struct {
	numCPU, maxProcs int
	cpu              string
	goVersion        string
	platform         string
	date             time.Time
	// load is the 1-minute load average when the benchmark started and
	// ended: other work on the machine inflates the wall times.
	loadStart, loadEnd string
}

// describeMachine describes this machine at now; the caller sets loadEnd.
func describeMachine(now time.Time) machineInfo {
	return machineInfo{
		loadStart: loadAverage(),
		numCPU:    runtime.NumCPU(),
		maxProcs:  runtime.GOMAXPROCS(0),
		cpu:       cpuModel(),
		goVersion: runtime.Version(),
		platform:  runtime.GOOS + "/" + runtime.GOARCH,
		date:      now.UTC(),
	}
}

// cpuModel returns the first "model name" of /proc/cpuinfo, or "unknown".
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// loadAverage returns the 1-minute load average from /proc/loadavg, or "unknown".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "unknown"
}

// cell is one figure of the table, judged against its target when the
// target applies to the figure's fleet size.
type cell struct {
	text   string
	judged bool
	ok     bool
}

func (c cell) String() string {
	switch {
	case !c.judged:
		return c.text
	case c.ok:
		return c.text + " ✔"
	}
	return c.text + " ✘"
}

// row is one measurement of the table.
type row struct {
	label  string
	target string
	cell   func(r result) cell
}

// rows returns the table's measurements; runs is the -runs flag.
func rows(runs int) []row {
	n := strconv.Itoa(runs)
	return []row{
		{"cold, fresh process (`gitmetal validate DIR`): wall, median of " + n, "≤ 4 s at 10k", func(r result) cell {
			d := median(r.cold)
			return cell{fmtDuration(d), r.size == targetSize, d <= coldTarget}
		}},
		{"cold, fresh process: CPU time (user + system), median of " + n, "", func(r result) cell {
			return cell{text: fmtDuration(median(r.coldCPU))}
		}},
		{"cold, fresh process: peak RSS, max of " + n, "≤ 400 MB at 10k", func(r result) cell {
			if r.coldRSS == 0 {
				return cell{text: "n/a"}
			}
			return cell{fmtMB(r.coldRSS), r.size == targetSize, r.coldRSS <= rssTarget}
		}},
		{"cold, in process (new Loader, LoadDir, store.New, Apply): median of " + n, "", func(r result) cell {
			return cell{text: fmtDuration(median(r.inProcess))}
		}},
		{"warm (LoadDir again, same Loader: read + hash, no eval): median of " + strconv.Itoa(warmRuns), "≤ 1 s", func(r result) cell {
			d := median(r.warm)
			return cell{fmtDuration(d), r.size <= targetSize, d <= warmTarget}
		}},
		{"one changed file (Update + Apply): median of " + strconv.Itoa(oneFileRuns), "≤ 5 ms", func(r result) cell {
			d := median(r.oneFile)
			return cell{fmtDuration(d), r.size <= targetSize, d <= oneFileTarget}
		}},
		{"one changed file: p90 of " + strconv.Itoa(oneFileRuns), "", func(r result) cell {
			return cell{text: fmtDuration(percentile(r.oneFile, 90))}
		}},
		{"one changed file: of which store.Apply, median of " + strconv.Itoa(oneFileRuns), "", func(r result) cell {
			return cell{text: fmtDuration(median(r.oneApply))}
		}},
		{"floor (JSON + hand validation in Go): median of " + n, "", func(r result) cell {
			return cell{text: fmtDuration(median(r.floor))}
		}},
		{"cold fresh process ÷ floor", "", func(r result) cell {
			return cell{text: fmt.Sprintf("%.1f×", float64(median(r.cold))/float64(median(r.floor)))}
		}},
	}
}

// renderReport returns the report as markdown: the machine, the table,
// the targets missed, and the method.
func renderReport(m machineInfo, runs int, results []result) string {
	var b strings.Builder
	b.WriteString("## gitmetal loader benchmark\n\n")
	fmt.Fprintf(&b, "Machine: %s; runtime.NumCPU %d, GOMAXPROCS %d; %s, %s. Date: %s. Load average (1 min) at start %s, at end %s.\n\n",
		m.cpu, m.numCPU, m.maxProcs, m.platform, m.goVersion, m.date.Format("2006-01-02 15:04 MST"), m.loadStart, m.loadEnd)

	header := []string{"measurement"}
	for _, r := range results {
		header = append(header, fmtCount(r.size)+" machines")
	}
	header = append(header, "target")
	table := [][]string{header}
	var gaps []string
	for _, rw := range rows(runs) {
		line := []string{rw.label}
		for _, r := range results {
			c := rw.cell(r)
			line = append(line, c.String())
			if c.judged && !c.ok {
				gaps = append(gaps, fmt.Sprintf("%s at %s machines: %s, target %s", rw.label, fmtCount(r.size), c.text, rw.target))
			}
		}
		line = append(line, cmp.Or(rw.target, "—"))
		table = append(table, line)
	}
	writeTable(&b, table)

	b.WriteString("\n")
	if len(gaps) == 0 {
		b.WriteString("Targets: every target that applies is met (✔).\n")
	} else {
		b.WriteString("Targets missed (✘):\n")
		for _, g := range gaps {
			b.WriteString("- " + g + "\n")
		}
	}
	b.WriteString("\n" + method(runs))
	return b.String()
}

// method says how every figure was measured.
func method(runs int) string {
	return fmt.Sprintf(`Method (`+"`go run ./test/bench`"+`; fleets from test/fleetgen: hardware/<rack>/<name>.cue, 40 machines to a rack, 2 templates, a workflow for every tenth machine; the files were just written and synced to disk, so the OS page cache is warm for every measurement; the load average counts this benchmark's own work, up to about 2 on two cores, so much more means other work competed and inflated the wall times, not the CPU times):
- cold, fresh process: the gitmetal binary is built once (`+"`go build ./cmd/gitmetal`"+`) and `+"`gitmetal validate DIR`"+` is run %[1]d times; wall time from start to exit, median, and the child's user + system CPU time from its rusage, median. It loads and validates but does not apply to a store. Peak RSS is the child's rusage Maxrss (KiB on Linux), the largest of the runs; MB = 10^6 bytes.
- cold, in process: a new schema.Loader, LoadDir, store.New and store.Apply of the fleet, %[1]d times, median, with a GC before each run.
- warm: LoadDir of the same directory %[2]d more times with the last cold run's Loader: every file is read and hashed, none evaluated (checked with Loader.Stats); median.
- one changed file: the reconciler's path for a commit or a directory write: the loader, having loaded the fleet, is handed only the changed file (Loader.Update, as the git and directory sources list changed paths); one machine's file is replaced by fleetgen.HardwareFile with a new revision, then Update and store.Apply are timed; no unchanged file is opened (checked). %[3]d iterations, each changing another machine, alternating machines with and without a workflow; each must evaluate exactly one file and change one hardware row (checked). Median and p90 (nearest rank); the store.Apply part is timed within the same iterations.
- floor: the same fleet written as JSON, read and decoded with encoding/json into hand-written structs mirroring hardware/template/workflow/settings (DisallowUnknownFields), validated by hand with the rules of schema/cue (name, MAC, hostname, label, SSH key and device regexps, net/netip address, prefix and netmask checks, lease-time and VLAN ranges, arch and policy enums, durations, action uses), then unique names, MACs, IPs and hostnames (maps), workflow references, and that every workflow's template renders (text/template parsed once per template) — files and renders in parallel across GOMAXPROCS. %[1]d runs, median; it must find the fleet valid with gitmetal's counts (checked). The ratio is the fresh-process cold median over the floor median.
`, runs, warmRuns, oneFileRuns)
}

// writeTable writes rows as a markdown table with padded columns, the
// first row as the header.
func writeTable(b *strings.Builder, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	line := func(cells []string) {
		b.WriteString("|")
		for i, c := range cells {
			b.WriteString(" " + c + strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)) + " |")
		}
		b.WriteString("\n")
	}
	line(rows[0])
	rule := make([]string, len(widths))
	for i, w := range widths {
		rule[i] = strings.Repeat("-", w)
	}
	line(rule)
	for _, r := range rows[1:] {
		line(r)
	}
}

// median returns the median of ds, the mean of the middle two for an even
// count, or 0 for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid]
	}
	return (s[mid-1] + s[mid]) / 2
}

// percentile returns the p-th percentile of ds by nearest rank, or 0 for none.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	rank := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	return s[min(max(rank, 1), len(s))-1]
}

// fmtDuration formats d with three significant digits or so.
func fmtDuration(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0f ms", ms)
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.2f ms", ms)
}

// fmtMB formats bytes in MB (10^6 bytes).
func fmtMB(bytes int64) string { return fmt.Sprintf("%.0f MB", float64(bytes)/1e6) }

// fmtCount formats n with thousands separators.
func fmtCount(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

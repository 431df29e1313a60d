package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the orchestrator's flags.
type options struct {
	fetches, rounds, sendAhead int
	file, blksizes, tftpd      string
	timeout                    time.Duration
}

// server is one server under test, running as a child process.
type server struct {
	name string
	addr string
	cmd  *exec.Cmd
}

// stop ends the server by its PID and reaps it.
func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// cell is the measurements of one server at one block size.
type cell struct {
	server  string
	blksize int
	rounds  []loadResult
}

func orchestrate(ctx context.Context, o options, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	blksizes, err := parseBlksizes(o.blksizes)
	if err != nil {
		return err
	}
	if _, err := os.Stat(o.tftpd); err != nil {
		return fmt.Errorf("the peer %s is missing (apt-get install -y tftpd-hpa): %w", o.tftpd, err)
	}
	dir, err := os.MkdirTemp("", "tftpload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	content, source, err := payload(o.file)
	if err != nil {
		return err
	}
	// in.tftpd chroots into dir and drops to nobody: dir must be world-readable.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ipxe.efi"), content, 0o644); err != nil {
		return err
	}
	sum := sha256.Sum256(content)
	digest := hex.EncodeToString(sum[:])

	self, err := os.Executable()
	if err != nil {
		return err
	}
	pinServer, pinLoad := pinning()
	servers := []*server{}
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	g, err := startGitmetal(ctx, "gitmetal", self, dir, 0, pinServer)
	if err != nil {
		return err
	}
	servers = append(servers, g)
	if o.sendAhead > 1 {
		g, err := startGitmetal(ctx, fmt.Sprintf("gitmetal send-ahead %d", o.sendAhead), self, dir, o.sendAhead, pinServer)
		if err != nil {
			return err
		}
		servers = append(servers, g)
	}
	t, err := startTftpd(ctx, o.tftpd, dir, pinServer)
	if err != nil {
		return err
	}
	servers = append(servers, t)
	for _, s := range servers {
		if err := waitReady(ctx, self, s.addr, digest); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}

	cells := map[string]*cell{}
	key := func(s string, b int) string { return s + "/" + strconv.Itoa(b) }
	var order []string
	for _, b := range blksizes {
		for _, s := range servers {
			cells[key(s.name, b)] = &cell{server: s.name, blksize: b}
			order = append(order, key(s.name, b))
		}
	}
	truncated := false
rounds:
	for r := range o.rounds {
		for _, b := range blksizes {
			for i := range servers {
				// Alternate which server goes first.
				s := servers[(i+r)%len(servers)]
				fmt.Fprintf(stderr, "round %d blksize %d %s\n", r+1, b, s.name)
				res, err := runLoad(ctx, self, pinLoad, s.addr, digest, b, o.fetches)
				if err != nil {
					if ctx.Err() != nil {
						truncated = true
						break rounds
					}
					return fmt.Errorf("%s: %w", s.name, err)
				}
				c := cells[key(s.name, b)]
				c.rounds = append(c.rounds, res)
			}
		}
	}
	report(stdout, o, source, len(content), pinServer != nil, truncated, order, cells)
	return nil
}

func parseBlksizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 512 || n > 65464 {
			return nil, fmt.Errorf("-blksize %q: want sizes 512 to 65464", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// payload returns the file to fetch and says where it came from.
func payload(file string) ([]byte, string, error) {
	b, err := os.ReadFile(file)
	if err == nil {
		return b, file, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, "", err
	}
	b = make([]byte, 850528) // the size of Debian 12's ipxe.efi
	rand.Read(b)
	return b, "random bytes (" + file + " missing)", nil
}

// pinning returns the taskset prefixes for the servers (CPU 0) and the
// load generator (CPU 1), or nil when there are fewer than two CPUs or no
// taskset.
func pinning() (srv, ld []string) {
	if runtime.NumCPU() < 2 {
		return nil, nil
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return nil, nil
	}
	return []string{"taskset", "-c", "0"}, []string{"taskset", "-c", "1"}
}

func command(ctx context.Context, prefix []string, argv ...string) *exec.Cmd {
	argv = append(append([]string{}, prefix...), argv...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

func startGitmetal(ctx context.Context, name, self, dir string, sendAhead int, prefix []string) (*server, error) {
	cmd := command(ctx, prefix, self, "-serve", dir, "-serve-sendahead", strconv.Itoa(sendAhead))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{name: name, cmd: cmd}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		io.Copy(io.Discard, out)
	}()
	select {
	case l, ok := <-line:
		if !ok {
			s.stop()
			return nil, errors.New("gitmetal server printed no address")
		}
		s.addr = l
		return s, nil
	case <-time.After(10 * time.Second):
		s.stop()
		return nil, errors.New("gitmetal server did not start in 10 s")
	}
}

// startTftpd starts tftp-hpa's in.tftpd in the foreground on a free
// loopback port.
func startTftpd(ctx context.Context, tftpd, dir string, prefix []string) (*server, error) {
	// Find a free port; in.tftpd binds it a moment later.
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	addr := c.LocalAddr().String()
	c.Close()
	cmd := command(ctx, prefix, tftpd, "-L", "-u", "nobody", "-s", dir, "-a", addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &server{name: "in.tftpd (tftp-hpa)", addr: addr, cmd: cmd}, nil
}

// waitReady fetches the file once with one client until it works.
func waitReady(ctx context.Context, self, addr, digest string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := runLoad(ctx, self, nil, addr, digest, 512, 1)
		if err == nil && res.OK == 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not serving after 10 s: %v %v", err, res.Errors)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func runLoad(ctx context.Context, self string, prefix []string, addr, digest string, blksize, fetches int) (loadResult, error) {
	cmd := command(ctx, prefix, self, "-load", addr, "-load-sha256", digest,
		"-load-blksize", strconv.Itoa(blksize), "-n", strconv.Itoa(fetches))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return loadResult{}, fmt.Errorf("load: %w: %s", err, stderr.String())
	}
	var res loadResult
	if err := json.Unmarshal(out, &res); err != nil {
		return loadResult{}, fmt.Errorf("load output %q: %w", out, err)
	}
	return res, nil
}

// report prints the table: per cell the median round by total time.
func report(w io.Writer, o options, source string, size int, pinned, truncated bool, order []string, cells map[string]*cell) {
	fmt.Fprintf(w, "TFTP: %d concurrent fetches of %s (%d bytes), pin/tftp v3 Go client, loopback\n", o.fetches, source, size)
	pin := "servers pinned to CPU 0, load generator to CPU 1 (taskset)"
	if !pinned {
		pin = "not pinned (fewer than 2 CPUs or no taskset)"
	}
	fmt.Fprintf(w, "method: %s; %d rounds, order alternated, median round by total time shown; total = first request to last block; MB/s = all bytes / total\n", pin, o.rounds)
	if truncated {
		fmt.Fprintf(w, "NOTE: the %v bound was reached; rounds not run are missing\n", o.timeout)
	}
	peer := map[int]time.Duration{}
	for _, k := range order {
		c := cells[k]
		if strings.HasPrefix(c.server, "in.tftpd") {
			if m, ok := median(c.rounds); ok {
				peer[c.blksize] = m.Elapsed
			}
		}
	}
	rows := [][]string{{"server", "blksize", "fetches", "failed", "total", "MB/s", "p50", "p99", "speed vs in.tftpd", "rounds"}}
	for _, k := range order {
		c := cells[k]
		m, ok := median(c.rounds)
		if !ok {
			rows = append(rows, []string{c.server, strconv.Itoa(c.blksize), "-", "-", "-", "-", "-", "-", "-", "0"})
			continue
		}
		ratio := "-"
		if p, ok := peer[c.blksize]; ok && m.Elapsed > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(p)/float64(m.Elapsed))
		}
		failed := 0
		for _, r := range c.rounds {
			failed += r.Failed
		}
		rows = append(rows, []string{
			c.server, strconv.Itoa(c.blksize), strconv.Itoa(m.OK + m.Failed), fmt.Sprintf("%d (all rounds %d)", m.Failed, failed),
			m.Elapsed.Round(time.Millisecond).String(),
			fmt.Sprintf("%.1f", float64(m.Bytes)/1e6/m.Elapsed.Seconds()),
			m.P50.Round(time.Millisecond).String(), m.P99.Round(time.Millisecond).String(),
			ratio, strconv.Itoa(len(c.rounds)),
		})
		for _, e := range m.Errors {
			fmt.Fprintf(w, "  %s blksize %d error: %s\n", c.server, c.blksize, e)
		}
	}
	writeTable(w, rows)
}

func median(rs []loadResult) (loadResult, bool) {
	if len(rs) == 0 {
		return loadResult{}, false
	}
	s := append([]loadResult(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Elapsed < s[j].Elapsed })
	return s[len(s)/2], true
}

func writeTable(w io.Writer, rows [][]string) {
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			fmt.Fprintf(&b, "%-*s  ", width[i], c)
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

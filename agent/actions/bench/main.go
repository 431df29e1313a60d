// Command bench measures the image2disk action against the shell
// pipeline it replaces, in the same run on the same machine:
//
//	curl -s URL | zstd -d | dd of=FILE bs=4M conv=fsync
//
// It makes a zstd image of -size bytes once (64 KiB blocks: a tenth zero,
// a third drawn from a pool of random blocks, the rest random with every
// other 8-byte word zeroed: about 1.6:1, not trivial to decompress;
// compressed with `zstd -T0 -3`), keeps it in -cache, serves it with
// net/http's FileServer on loopback, and writes it to a new file in -dir
// with each method in turn, -rounds times, the order rotating each round.
// Every written file is checked against the image's sha256, then removed.
//
// Methods, each compared with its peer:
//   - curl | zstd -d | dd conv=fsync: the peer the goal names;
//   - curl | tee >(sha256sum) | zstd -d | dd: the same, verifying the
//     download as image2disk does with CHECKSUM;
//   - image2disk, without and with CHECKSUM (sha256);
//   - curl | zstd -d | dd oflag=direct: not a goal, shown because
//     image2disk writes with O_DIRECT too, so that the table says where
//     a gain comes from.
//
// It prints every run, then per method the best and median wall time, MB/s
// (decompressed bytes per second, 10^6 bytes, fsync included) and CPU
// time (user+system of the bench process, its HTTP server included, and
// of the pipeline's processes), and the ratios of image2disk to its peers:
// of the best runs, and the median of the per-round ratios (runs seconds
// apart, less exposed to a machine whose load changes). The goal is at
// least 95%. No round starts after -budget (3 minutes).
//
// Needs bash, curl, zstd, coreutils (Debian: apt-get install -y curl zstd).
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/agent/actions"
	"github.com/gitmetal/gitmetal/schema"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	size   int64
	cache  string
	dir    string
	rounds int
	budget time.Duration
	prof   string
	v      bool
}

func run() error {
	var o options
	cacheDir, err := os.UserCacheDir()
	if err != nil {
		cacheDir = os.TempDir()
	}
	flag.Int64Var(&o.size, "size", 1<<30, "image size in bytes (decompressed)")
	flag.StringVar(&o.cache, "cache", filepath.Join(cacheDir, "gitmetal", "imagebench"), "where the compressed image is kept between runs")
	flag.StringVar(&o.dir, "dir", os.TempDir(), "where the disk files are written (and removed)")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of each method")
	flag.DurationVar(&o.budget, "budget", 3*time.Minute, "no round starts after this much time")
	flag.StringVar(&o.prof, "cpuprofile", "", "write a CPU profile of the image2disk runs to this file")
	flag.BoolVar(&o.v, "v", false, "print image2disk's log lines")
	flag.Parse()
	if o.size < 1<<20 || o.rounds < 1 {
		return errors.New("-size must be at least 1 MiB and -rounds at least 1")
	}
	for _, tool := range []string{"curl", "zstd", "bash", "dd", "tee", "sha256sum", "mkfifo"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is needed (apt-get install -y curl zstd): %w", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.budget+2*time.Minute)
	defer cancel()
	start := time.Now()

	img, err := prepare(ctx, o)
	if err != nil {
		return err
	}
	fmt.Printf("image: %s, %d bytes, zstd %d bytes (%.2f:1), made in %s\n",
		img.path, o.size, img.compressedSize, float64(o.size)/float64(img.compressedSize), img.made.Round(time.Millisecond))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(o.cache)), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) // ends with srv.Close below
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/" + filepath.Base(img.path)

	a, err := actions.New(actions.Config{Log: zerolog.Nop(), ProgressInterval: 5 * time.Second})
	if err != nil {
		return err
	}
	var rep actions.Reporter
	if o.v {
		rep = printer{}
	}
	sumFile := filepath.Join(o.dir, fmt.Sprintf("imagebench-%d.sha256", os.Getpid()))
	defer os.Remove(sumFile)
	image2disk := func(checksum string) func(ctx context.Context, dest string) error {
		return func(ctx context.Context, dest string) error {
			env := map[string]string{"IMG_URL": url, "DEST_DISK": dest}
			if checksum != "" {
				env["CHECKSUM"] = "sha256:" + checksum
			}
			if o.prof != "" {
				stop, err := profile(o.prof)
				if err != nil {
					return err
				}
				defer stop()
			}
			return a.Run(ctx, schema.Step{Name: "bench", Uses: "image2disk", Env: env}, rep)
		}
	}
	// peer is the index of the method a method is compared with.
	methods := []method{
		{name: "curl | zstd -d | dd", peer: 0, run: func(ctx context.Context, dest string) error {
			return shell(ctx, `curl -sf "$1" | zstd -d -q | dd of="$2" bs=4M conv=fsync status=none`, url, dest)
		}},
		{name: "curl | tee sha256sum | zstd | dd", peer: 1, run: func(ctx context.Context, dest string) error {
			os.Remove(sumFile)
			err := shell(ctx, `fifo="$3.fifo"; rm -f "$fifo"; mkfifo "$fifo"
sha256sum < "$fifo" > "$3" & sum=$!
curl -sf "$1" | tee "$fifo" | zstd -d -q | dd of="$2" bs=4M conv=fsync status=none
wait $sum; st=$?; rm -f "$fifo"; exit $st`, url, dest, sumFile)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(sumFile)
			if err != nil {
				return err
			}
			if got := strings.Fields(string(b)); len(got) == 0 || got[0] != img.compressedSHA {
				return fmt.Errorf("sha256sum printed %q, want %s", b, img.compressedSHA)
			}
			return nil
		}},
		{name: "image2disk", peer: 0, run: image2disk("")},
		{name: "image2disk, sha256 verified", peer: 1, run: image2disk(img.compressedSHA)},
		// Not the peer the goal names: dd writing around the page cache,
		// as image2disk does, for an honest view of where a gain comes from.
		{name: "curl | zstd -d | dd oflag=direct", peer: 0, run: func(ctx context.Context, dest string) error {
			return shell(ctx, `curl -sf "$1" | zstd -d -q | dd of="$2" bs=4M iflag=fullblock oflag=direct conv=fsync status=none`, url, dest)
		}},
	}
	for round := 0; round < o.rounds; round++ {
		if round > 0 && time.Since(start) > o.budget {
			fmt.Printf("budget of %s spent: stopping after %d rounds\n", o.budget, round)
			break
		}
		for i := range methods {
			m := &methods[(i+round)%len(methods)] // alternate who goes first
			d, cpu, err := m.measure(ctx, o.dir, img.rawSHA)
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			fmt.Printf("round %d: %-34s %8s  %7.1f MB/s  CPU %s\n", round+1, m.name, d.Round(time.Millisecond), mbps(o.size, d), cpu.Round(10*time.Millisecond))
		}
	}

	fmt.Println()
	fmt.Printf("%-34s %8s %8s %10s %12s %7s  %s\n", "method", "best", "median", "best MB/s", "median MB/s", "CPU", "best vs its peer")
	for _, m := range methods {
		peer := methods[m.peer]
		vs := "(peer)"
		if peer.name != m.name {
			vs = fmt.Sprintf("%5.1f%% of %s", 100*mbps(o.size, m.best())/mbps(o.size, peer.best()), peer.name)
		}
		fmt.Printf("%-34s %8s %8s %10.1f %12.1f %7s  %s\n", m.name, m.best().Round(time.Millisecond), m.median().Round(time.Millisecond),
			mbps(o.size, m.best()), mbps(o.size, m.median()), m.medianCPU().Round(10*time.Millisecond), vs)
	}
	fmt.Println()
	for _, i := range []int{2, 3} {
		m, peer := methods[i], methods[methods[i].peer]
		ratio := mbps(o.size, m.best()) / mbps(o.size, peer.best())
		verdict := "meets"
		if ratio < 0.95 {
			verdict = "misses"
		}
		fmt.Printf("ratio %s / %s: best runs %.1f%% (%s the goal of 95%%); median of the rounds' ratios %.1f%%\n",
			m.name, peer.name, 100*ratio, verdict, 100*medianRatio(m, peer))
	}
	fmt.Println("MB/s: decompressed bytes written per second of wall time (10^6 bytes), fsync included; CPU: median user+system")
	fmt.Println("time of a run, all processes and the bench's HTTP server included")
	fmt.Printf("host: %d CPUs; data written to %s; total %s\n", numCPU(), o.dir, time.Since(start).Round(time.Second))
	return nil
}

type method struct {
	name  string
	peer  int
	run   func(ctx context.Context, dest string) error
	times []time.Duration
	cpus  []time.Duration
}

// measure runs the method into a new file, checks the file, removes it.
// It returns the wall time and the CPU time of this process and of the
// children it waited for (the pipeline's bash, with curl, zstd and dd).
func (m *method) measure(ctx context.Context, dir, wantSHA string) (time.Duration, time.Duration, error) {
	f, err := os.CreateTemp(dir, "imagebench-*.img")
	if err != nil {
		return 0, 0, err
	}
	dest := f.Name()
	f.Close()
	os.Remove(dest) // image2disk creates it; dd too
	defer os.Remove(dest)
	syncAll()
	cpu0 := cpuTime()
	t0 := time.Now()
	if err := m.run(ctx, dest); err != nil {
		return 0, 0, err
	}
	d := time.Since(t0)
	cpu := cpuTime() - cpu0
	got, err := fileSHA(dest)
	if err != nil {
		return 0, 0, err
	}
	if got != wantSHA {
		return 0, 0, fmt.Errorf("wrote a file with sha256 %s, want %s", got, wantSHA)
	}
	m.times = append(m.times, d)
	m.cpus = append(m.cpus, cpu)
	return d, cpu, nil
}

// medianRatio is the median over rounds of peer's time over m's, that is
// m's throughput relative to its peer's in the same round: runs of one
// round are seconds apart, so it is less exposed to a machine whose load
// changes than a ratio of bests.
func medianRatio(m, peer method) float64 {
	var r []float64
	for i := range min(len(m.times), len(peer.times)) {
		r = append(r, peer.times[i].Seconds()/m.times[i].Seconds())
	}
	slices.Sort(r)
	return r[len(r)/2]
}

func (m *method) medianCPU() time.Duration {
	s := slices.Clone(m.cpus)
	slices.Sort(s)
	return s[len(s)/2]
}

// cpuTime is the user and system time of this process and its waited-for
// children so far.
func cpuTime() time.Duration {
	var total time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return total
}

func (m *method) best() time.Duration { return slices.Min(m.times) }

func (m *method) median() time.Duration {
	s := slices.Clone(m.times)
	slices.Sort(s)
	return s[len(s)/2]
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

type image struct {
	path           string
	rawSHA         string
	compressedSHA  string
	compressedSize int64
	made           time.Duration
}

// prepare returns the cached image, making it when missing.
func prepare(ctx context.Context, o options) (image, error) {
	base := fmt.Sprintf("image-%d-v1.raw.zst", o.size)
	img := image{path: filepath.Join(o.cache, base)}
	meta := img.path + ".sha256"
	if b, err := os.ReadFile(meta); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if fi, err := os.Stat(img.path); err == nil {
				img.rawSHA, img.compressedSHA, img.compressedSize = f[0], f[1], fi.Size()
				return img, nil
			}
		}
	}
	if err := os.MkdirAll(o.cache, 0o755); err != nil {
		return img, err
	}
	t0 := time.Now()
	tmp := img.path + ".tmp"
	cmd := exec.CommandContext(ctx, "zstd", "-T0", "-3", "-q", "-f", "-o", tmp)
	in, err := cmd.StdinPipe()
	if err != nil {
		return img, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return img, err
	}
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(in, h), 1<<20)
	genErr := generate(w, o.size)
	if genErr == nil {
		genErr = w.Flush()
	}
	in.Close()
	if err := errors.Join(genErr, cmd.Wait()); err != nil {
		os.Remove(tmp)
		return img, fmt.Errorf("make the image: %w", err)
	}
	img.rawSHA = hex.EncodeToString(h.Sum(nil))
	if img.compressedSHA, err = fileSHA(tmp); err != nil {
		return img, err
	}
	if err := os.Rename(tmp, img.path); err != nil {
		return img, err
	}
	fi, err := os.Stat(img.path)
	if err != nil {
		return img, err
	}
	img.compressedSize, img.made = fi.Size(), time.Since(t0)
	return img, os.WriteFile(meta, []byte(img.rawSHA+" "+img.compressedSHA+"\n"), 0o644)
}

// generate writes n bytes of compressible, non-trivial data: 64 KiB
// blocks, a tenth zero, a third drawn from a pool of 256 random blocks,
// the rest fresh random data with every other 8-byte word zeroed.
func generate(w io.Writer, n int64) error {
	rng := rand.New(rand.NewPCG(42, 1337))
	const blk = 64 << 10
	fill := func(b []byte) {
		for i := 0; i+8 <= len(b); i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				b[i+j] = byte(v >> (8 * j))
			}
		}
	}
	pool := make([][]byte, 256)
	for i := range pool {
		pool[i] = make([]byte, blk)
		fill(pool[i])
	}
	zero := make([]byte, blk)
	fresh := make([]byte, blk)
	for written := int64(0); written < n; {
		var b []byte
		switch k := rng.IntN(30); {
		case k < 3:
			b = zero
		case k < 13:
			b = pool[rng.IntN(len(pool))]
		default:
			fill(fresh)
			for i := 0; i < blk; i += 16 {
				copy(fresh[i:i+8], zero[:8])
			}
			b = fresh
		}
		b = b[:min(int64(len(b)), n-written)]
		if _, err := w.Write(b); err != nil {
			return err
		}
		written += int64(len(b))
	}
	return nil
}

func fileSHA(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// syncAll flushes what earlier runs left dirty, so that no run pays for
// another's writes.
func syncAll() { syscall.Sync() }

func numCPU() int { return runtime.NumCPU() }

// profile appends a CPU profile of one run to path (path.N for run N).
func profile(path string) (stop func(), err error) {
	n := 1
	for ; ; n++ {
		if _, err := os.Stat(fmt.Sprintf("%s.%d", path, n)); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", path, n))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// printer shows an action's log lines (-v).
type printer struct{}

func (printer) Logf(format string, args ...any) { fmt.Printf("    | "+format+"\n", args...) }
func (printer) Stderr(line string)              { fmt.Printf("    ! %s\n", line) }
func (printer) Progress(actions.Progress)       {}

// shell runs a bash script with pipefail; args are $1, $2...
func shell(ctx context.Context, script string, args ...string) error {
	cmd := exec.CommandContext(ctx, "bash", append([]string{"-c", "set -o pipefail\n" + script, "bench"}, args...)...)
	cmd.Stderr = os.Stderr
	return cmd.Run()
}

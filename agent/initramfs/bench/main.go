// Command bench measures gitmetal's installer (`make bench` runs it as
// root): its size, and the time from QEMU's start to the agent's hello at
// the runner, booting directly (-kernel/-initrd) under TCG in a network
// namespace with gitmetal's DHCP server and runner (agent/initramfs's
// lab). The peer, measured the same way in the same run, is the smallest
// Linux that does the same network work: the same Debian kernel with a
// busybox init that loads the virtio modules, runs udhcpc and fetches one
// URL; the ratio says what the installer's own steps (more modules, a Go
// PID 1, the agent's inventory) cost on top of booting Linux.
//
//	go run ./agent/initramfs/bench [-installer installer] [-runs 3]
//
// Without installer/vmlinuz and installer/initramfs.cpio.gz it builds
// them first (as make installer does). Runs are sequential: one VM at a
// time on two cores.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/agent/initramfs"
	"github.com/gitmetal/gitmetal/agent/initramfs/internal/lab"
	"github.com/gitmetal/gitmetal/test/qemu"
)

// goal is issue 7's: QEMU start to hello, TCG, direct boot.
const goal = 20 * time.Second

func main() {
	dir := flag.String("installer", "installer", "directory with vmlinuz and initramfs.cpio.gz (built when missing)")
	runs := flag.Int("runs", 3, "boots of each image (1 to 10)")
	flag.Parse()
	if *runs < 1 || *runs > 10 {
		fmt.Fprintln(os.Stderr, "bench: -runs must be 1 to 10")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *dir, *runs)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string, runs int) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces and a tap device)")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	tmp, err := os.MkdirTemp("", "gitmetal-installer-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	kernel, initrd := filepath.Join(dir, initramfs.KernelFile), filepath.Join(dir, initramfs.InitramfsFile)
	if !exists(kernel) || !exists(initrd) {
		fmt.Printf("building the installer into %s (no %s)\n", tmp, dir)
		init := filepath.Join(tmp, "init")
		if err := initramfs.BuildInit(ctx, ".", initramfs.DefaultInitPackage, init); err != nil {
			return err
		}
		res, err := initramfs.Build(ctx, initramfs.Config{OutDir: filepath.Join(tmp, "installer"), Init: init})
		if err != nil {
			return err
		}
		kernel, initrd = res.Kernel, res.Initramfs
	}
	ks, is := size(kernel), size(initrd)
	peer, err := qemu.BuildImage(ctx, qemu.ImageConfig{
		KernelABI: initramfs.DefaultKernelABI, DHCP: true,
		Script: "timeout 20 wget -q -O /dev/null http://" + lab.ServerIP + ":8080" + lab.PeerPath + " || m FAIL peer-fetch\n",
	})
	if err != nil {
		return fmt.Errorf("peer image: %w", err)
	}

	fmt.Printf("\ngitmetal installer size\n")
	fmt.Printf("  %-28s %8s\n  %-28s %8s\n  %-28s %8s  (budget %s: %s)\n",
		"vmlinuz", mib(ks), "initramfs.cpio.gz", mib(is), "total", mib(ks+is), mib(initramfs.DefaultMaxBytes), verdict(ks+is <= initramfs.DefaultMaxBytes))
	fmt.Printf("\ntime from QEMU start to the agent's hello at the runner\n")
	fmt.Printf("  method: qemu-system-x86_64 -accel tcg -machine q35 -smp 1 -m 1024, -kernel/-initrd, virtio NIC on a tap,\n")
	fmt.Printf("  virtio disk, virtio-rng; gitmetal's DHCP server and runner in the tap's network namespace; the clock\n")
	fmt.Printf("  starts before QEMU is started and stops when the runner's HTTP handler receives the request.\n")
	fmt.Printf("  stages are the guest's uptime (kernel and PID 1 timestamps on the serial console).\n")
	var inst, base []time.Duration
	for i := 1; i <= runs; i++ {
		d, stages, err := boot(ctx, filepath.Join(tmp, fmt.Sprintf("inst-%d", i)), kernel, initrd, false)
		if err != nil {
			return fmt.Errorf("installer run %d: %w", i, err)
		}
		inst = append(inst, d)
		fmt.Printf("  installer run %d: %6.2f s   %s\n", i, d.Seconds(), stages)
		d, _, err = boot(ctx, filepath.Join(tmp, fmt.Sprintf("peer-%d", i)), peer.Kernel, peer.Initrd, true)
		if err != nil {
			return fmt.Errorf("peer run %d: %w", i, err)
		}
		base = append(base, d)
		fmt.Printf("  peer      run %d: %6.2f s   (busybox init: insmod virtio, udhcpc, wget)\n", i, d.Seconds())
	}
	mi, mp := median(inst), median(base)
	fmt.Printf("\n  %-34s median %6.2f s  min %6.2f s  max %6.2f s  (goal <= %v: %s)\n", "installer, QEMU start to hello", mi.Seconds(),
		slices.Min(inst).Seconds(), slices.Max(inst).Seconds(), goal, verdict(mi <= goal))
	fmt.Printf("  %-34s median %6.2f s  min %6.2f s  max %6.2f s\n", "peer, QEMU start to first fetch", mp.Seconds(),
		slices.Min(base).Seconds(), slices.Max(base).Seconds())
	fmt.Printf("  ratio installer/peer (medians): %.2fx\n", mi.Seconds()/mp.Seconds())
	return nil
}

// boot starts a lab and a VM and returns the time to the first hello (or,
// for the peer, its fetch) and the guest's stages.
func boot(ctx context.Context, dir, kernel, initrd string, peer bool) (time.Duration, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, lab.Config{Dir: dir, Log: zerolog.Nop()})
	if err != nil {
		return 0, "", err
	}
	defer l.Close()
	cmdline := "console=ttyS0,115200 panic=-1"
	if !peer {
		token, err := l.Token(ctx)
		if err != nil {
			return 0, "", err
		}
		cmdline = l.Cmdline(token)
	}
	disk := filepath.Join(dir, "disk.raw")
	if err := lab.Disk(disk, 64<<20); err != nil {
		return 0, "", err
	}
	start := time.Now()
	vm, err := qemu.Start(ctx, l.QEMU(kernel, initrd, cmdline, dir, disk))
	if err != nil {
		return 0, "", err
	}
	defer vm.Stop()
	for {
		a, err := l.Next(ctx)
		if err != nil {
			return 0, "", fmt.Errorf("%w; serial console (%s):\n%s", err, vm.SerialLog, vm.Tail(20))
		}
		if a.Peer == peer {
			return a.At.Sub(start), stages(vm.SerialLog), nil
		}
	}
}

var (
	kernelInit = regexp.MustCompile(`^\[\s*([0-9.]+)\] Run /init as init process`)
	pid1Line   = regexp.MustCompile(`^\[\s*([0-9.]+)\] INF (gitmetal installer starting|kernel modules loaded|random number generator ready|dhcp lease|agent started)`)
)

// stages reads the guest's uptime at each step from the serial log.
func stages(serial string) string {
	f, err := os.Open(serial)
	if err != nil {
		return ""
	}
	defer f.Close()
	at := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := qemu.Clean(sc.Text())
		if m := kernelInit.FindStringSubmatch(line); m != nil {
			at["/init"] = m[1]
		}
		if m := pid1Line.FindStringSubmatch(line); m != nil {
			if _, ok := at[m[2]]; !ok {
				at[m[2]] = m[1]
			}
		}
	}
	s := ""
	for _, k := range []struct{ key, label string }{
		{"/init", "kernel ran /init"}, {"kernel modules loaded", "modules loaded"},
		{"dhcp lease", "lease"}, {"agent started", "agent started"},
	} {
		if v, ok := at[k.key]; ok {
			f, _ := strconv.ParseFloat(v, 64)
			s += fmt.Sprintf("%s %.1f s, ", k.label, f)
		}
	}
	if s == "" {
		return ""
	}
	return "(guest uptime: " + s[:len(s)-2] + ")"
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func size(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

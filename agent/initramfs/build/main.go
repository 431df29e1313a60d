// Command build builds gitmetal's installer: `make installer` runs it.
//
//	go run ./agent/initramfs/build -out installer \
//	    [-modules "sfc mlx4_ib"] [-firmware "firmware-bnx2x ./my-fw/"] \
//	    [-abi 6.1.0-56-amd64|latest] [-busybox] [-init-pkg ./cmd/gitmetal | -init FILE]
//
// It compiles /init (static, stripped), fetches the pinned Debian kernel
// with apt-get download (never installing it), and writes
// OUT/vmlinuz and OUT/initramfs.cpio.gz, then prints their sizes and
// digests. Run it from the repository's root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/agent/initramfs"
)

func main() {
	out := flag.String("out", "installer", "directory for vmlinuz and initramfs.cpio.gz")
	initPkg := flag.String("init-pkg", initramfs.DefaultInitPackage, "Go package built as /init")
	initBin := flag.String("init", "", "a static binary to use as /init instead of building -init-pkg")
	abi := flag.String("abi", initramfs.DefaultKernelABI, "kernel ABI (linux-image-ABI), or \"latest\" for what linux-image-amd64 depends on")
	modules := flag.String("modules", "", "more kernel modules, separated by spaces or commas (INSTALLER_MODULES)")
	firmware := flag.String("firmware", "", "firmware: Debian package names, .deb files or directories, separated by spaces or commas (INSTALLER_FIRMWARE)")
	busybox := flag.Bool("busybox", false, "add busybox-static as /bin/sh for gitmetal.debug=1 (INSTALLER_BUSYBOX=1)")
	cache := flag.String("cache", initramfs.DefaultCacheDir(), "download and unpack cache")
	maxBytes := flag.Int64("max-bytes", initramfs.DefaultMaxBytes, "size budget of kernel and initramfs together; exceeding it fails the build (0: no budget)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "build: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *out, *initPkg, *initBin, *abi, list(*modules), list(*firmware), *busybox, *cache, *maxBytes)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
}

func list(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

func run(ctx context.Context, out, initPkg, initBin, abi string, modules, firmware []string, busybox bool, cache string, maxBytes int64) error {
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}).With().Timestamp().Logger()
	start := time.Now()
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if initBin == "" {
		tmp, err := os.MkdirTemp("", "gitmetal-init-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		initBin = filepath.Join(tmp, "init")
		log.Info().Str("package", initPkg).Msg("building /init")
		if err := initramfs.BuildInit(ctx, ".", initPkg, initBin); err != nil {
			return err
		}
	} else if err := initramfs.CheckInit(initBin); err != nil {
		return err
	}
	st, err := os.Stat(initBin)
	if err != nil {
		return err
	}
	res, err := initramfs.Build(ctx, initramfs.Config{
		OutDir: out, Init: initBin, KernelABI: abi, Modules: modules, Firmware: firmware,
		Busybox: busybox, CacheDir: cache, Log: log,
	})
	if err != nil {
		return err
	}
	mb := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	fmt.Printf("installer (kernel %s, %d modules, %d firmware files, built in %s):\n",
		res.ABI, len(res.Modules), res.FirmwareFiles, time.Since(start).Round(100*time.Millisecond))
	fmt.Printf("  %-40s %10s  sha256 %s\n", res.Kernel, mb(res.KernelBytes), res.KernelSHA256)
	fmt.Printf("  %-40s %10s  sha256 %s\n", res.Initramfs, mb(res.InitramfsBytes), res.InitramfsSHA256)
	fmt.Printf("  total %s of a %s budget; /init %s uncompressed, the unpacked initramfs %s in RAM\n",
		mb(res.TotalBytes()), mb(maxBytes), mb(st.Size()), mb(res.CPIOBytes))
	if maxBytes > 0 && res.TotalBytes() > maxBytes {
		return fmt.Errorf("the installer is %s, over its %s budget (-max-bytes)", mb(res.TotalBytes()), mb(maxBytes))
	}
	return nil
}

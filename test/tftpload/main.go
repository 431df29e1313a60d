// Command tftpload measures gitmetal's TFTP server against tftp-hpa's
// in.tftpd in the same run: N concurrent fetches of ipxe.efi (Debian's,
// about 0.85 MB) from a Go client built on github.com/pin/tftp/v3, on
// loopback, at the block sizes PXE firmware uses (512 without options,
// 1468 for iPXE and EDK2). It prints total time, failures, MB/s, per-fetch
// p50/p99 and the ratio to in.tftpd.
//
// Each server runs in its own process pinned to CPU 0 and the load
// generator in another pinned to CPU 1 (taskset), so neither steals the
// other's core; in.tftpd forks one process per transfer, all on CPU 0.
// Rounds alternate which server goes first; the table shows the median
// round. The whole run is bounded by -timeout (default 60 s), after which
// whatever has been measured is printed; every process started is stopped
// by its PID.
//
// Roles: with no role flag the command orchestrates; -serve DIR runs
// gitmetal's server (internal); -load ADDR runs one load round (internal).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Bounds on the flags, so that a typo cannot run for hours.
const (
	maxFetches = 1000
	maxRounds  = 10
	maxTimeout = 5 * time.Minute
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tftpload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tftpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.fetches, "n", 100, "concurrent fetches per round (at most 1000)")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds per server and block size (at most 10)")
	fs.StringVar(&o.file, "file", "/usr/lib/ipxe/ipxe.efi", "the file fetched (a random file of the same size stands in when it is missing)")
	fs.StringVar(&o.blksizes, "blksize", "512,1468", "block sizes, comma-separated; 512 asks for no option")
	fs.IntVar(&o.sendAhead, "sendahead", 0, "also measure gitmetal with this SendAhead (0: skip)")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "bound on the whole run (at most 5m)")
	fs.StringVar(&o.tftpd, "tftpd", "/usr/sbin/in.tftpd", "tftp-hpa's server, the peer")
	serveDir := fs.String("serve", "", "internal: serve DIR with gitmetal's TFTP server and print its address")
	sendAhead := fs.Int("serve-sendahead", 0, "internal: SendAhead of -serve")
	loadAddr := fs.String("load", "", "internal: run one load round against ADDR and print JSON")
	loadName := fs.String("load-file", "ipxe.efi", "internal: the name -load fetches")
	loadSHA := fs.String("load-sha256", "", "internal: the digest -load checks")
	loadBlk := fs.Int("load-blksize", 512, "internal: the block size -load asks for")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *serveDir != "":
		return serve(ctx, *serveDir, *sendAhead, stdout)
	case *loadAddr != "":
		return load(ctx, loadConfig{addr: *loadAddr, name: *loadName, sha: *loadSHA, blksize: *loadBlk, fetches: o.fetches}, stdout)
	}
	if o.fetches < 1 || o.fetches > maxFetches || o.rounds < 1 || o.rounds > maxRounds || o.timeout <= 0 || o.timeout > maxTimeout {
		return fmt.Errorf("-n 1..%d, -rounds 1..%d, -timeout up to %v", maxFetches, maxRounds, maxTimeout)
	}
	return orchestrate(ctx, o, stdout, stderr)
}

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	pintftp "github.com/pin/tftp/v3"
	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/boot/tftp"
)

// serve runs gitmetal's TFTP server on a loopback port, prints the address
// on stdout and serves until ctx ends (the orchestrator sends SIGTERM).
func serve(ctx context.Context, dir string, sendAhead int, stdout io.Writer) error {
	s, err := tftp.New(tftp.Config{
		IPXEDir:   dir,
		SendAhead: sendAhead,
		Log:       zerolog.New(os.Stderr).Level(zerolog.WarnLevel),
	})
	if err != nil {
		return err
	}
	defer s.Close()
	conn, err := tftp.Listen("127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, conn.LocalAddr().String())
	return s.Serve(ctx, conn)
}

// loadConfig is one load round.
type loadConfig struct {
	addr, name, sha string
	blksize         int
	fetches         int
}

// loadResult is what a load round prints, as JSON.
type loadResult struct {
	OK, Failed int
	Elapsed    time.Duration
	P50, P99   time.Duration
	Bytes      int64
	Errors     []string // the first few
}

// load starts cfg.fetches fetches at once and waits for all of them. A
// fetch fails on any client error or a wrong digest; the pin/tftp client
// gives up on a server that is silent for 5 s × 5 tries, which bounds the
// round.
func load(ctx context.Context, cfg loadConfig, stdout io.Writer) error {
	var (
		mu  sync.Mutex
		res loadResult
		lat []time.Duration
		wg  sync.WaitGroup
	)
	start := time.Now()
	for range cfg.fetches {
		wg.Go(func() {
			t0 := time.Now()
			n, err := fetch(ctx, cfg)
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			res.Bytes += n
			if err != nil {
				res.Failed++
				if len(res.Errors) < 3 {
					res.Errors = append(res.Errors, err.Error())
				}
				return
			}
			res.OK++
			lat = append(lat, d)
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		res.P50 = lat[len(lat)*50/100]
		res.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return json.NewEncoder(stdout).Encode(res)
}

func fetch(ctx context.Context, cfg loadConfig) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c, err := pintftp.NewClient(cfg.addr)
	if err != nil {
		return 0, err
	}
	if cfg.blksize > 512 {
		c.SetBlockSize(cfg.blksize)
	}
	wt, err := c.Receive(cfg.name, "octet")
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	n, err := wt.WriteTo(h)
	if err != nil {
		return n, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != cfg.sha {
		return n, fmt.Errorf("got sha256 %s, want %s", got, cfg.sha)
	}
	return n, nil
}

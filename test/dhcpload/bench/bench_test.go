package main

import (
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// perfdhcpOutput is perfdhcp 2.2's report, abridged.
const perfdhcpOutput = `Running: perfdhcp -4 -l cli0 -r 5000 -p 10 -M macs -d 2 -W 2000000 10.200.0.1
Multi-thread mode enabled.
***Rate statistics***
Rate: 2709.89 4-way exchanges/second, expected rate: 5000

***Statistics for: DISCOVER-OFFER***
sent packets: 49872
received packets: 33373
drops: 16499
drops ratio: 33.0827 %
orphans: 0

***Statistics for: REQUEST-ACK***
sent packets: 33373
received packets: 32580
drops: 793
drops ratio: 2.376 %
`

func TestPerfdhcpParse(t *testing.T) {
	t.Parallel()
	want := []exchangeStats{
		{name: "DISCOVER-OFFER", sent: 49872, received: 33373, drops: 16499},
		{name: "REQUEST-ACK", sent: 33373, received: 32580, drops: 793},
	}
	if diff := cmp.Diff(want, perfdhcpStats(perfdhcpOutput), cmp.AllowUnexported(exchangeStats{})); diff != "" {
		t.Errorf("perfdhcpStats (-want +got):\n%s", diff)
	}
	if got := perfdhcpRate(perfdhcpOutput); got != 2709.89 {
		t.Errorf("perfdhcpRate: got %v, want 2709.89", got)
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	c, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(c.sizes, []int{1, 1000, 10000}) || !cmp.Equal(c.inflight, []int{1, 32}) || c.rounds != 3 || c.duration != time.Second {
		t.Errorf("defaults: got %+v", c)
	}
	for _, args := range [][]string{
		{"-sizes", "0"}, {"-sizes", "1,x"}, {"-duration", "1h"}, {"-perfdhcp-secs", "100"},
		{"-servers", "kea"}, {"-rounds", "0"}, {"-nice", "-30"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q): got nil, want an error", args)
		}
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	var rounds []measurement
	for i, rate := range []float64{300, 100, 200} {
		m := measurement{server: "gitmetal", size: 10, inflight: 32}
		m.res.Rate, m.res.P50, m.res.Lost = rate, time.Duration(i+1)*time.Millisecond, 1
		rounds = append(rounds, m, measurement{server: "raw", size: 10, inflight: 32})
	}
	got := median(rounds, "gitmetal", 10, 32)
	if got.res.Rate != 200 || got.res.P50 != 2*time.Millisecond || got.res.Lost != 3 {
		t.Errorf("median: got rate %v p50 %s lost %d, want 200, 2ms, 3", got.res.Rate, got.res.P50, got.res.Lost)
	}
}

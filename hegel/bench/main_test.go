package main

import (
	"strings"
	"testing"
	"time"
)

const wrkReport = `Running 10s test @ http://127.0.0.1:40000/latest/meta-data/hostname
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   640.12us  300.00us   9.00ms   90.00%
    Req/Sec    50.00k     1.00k   52.00k    70.00%
  Latency Distribution
     50%  600.00us
     75%  700.00us
     90%  800.00us
     99%    1.50ms
  500000 requests in 10.00s, 60.00MB read
Requests/sec:  49999.50
Transfer/sec:      6.00MB
`

func TestParseWrk(t *testing.T) {
	t.Parallel()
	got, err := parseWrk(wrkReport)
	if err != nil {
		t.Fatal(err)
	}
	if got.rps != 49999.5 || got.p99 != 1500*time.Microsecond {
		t.Errorf("got %+v, want 49999.5 req/s and p99 1.5ms", got)
	}
	bad := strings.Replace(wrkReport, "Requests/sec", "  Non-2xx or 3xx responses: 12\nRequests/sec", 1)
	if _, err := parseWrk(bad); err == nil || !strings.Contains(err.Error(), "Non-2xx") {
		t.Errorf("non-2xx answers: got %v, want an error", err)
	}
	if _, err := parseWrk("garbage"); err == nil {
		t.Error("garbage: got no error")
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-duration", "2h"}, {"-runs", "50"}, {"-machines", "0"}, {"-caller", "10", "-machines", "5"}, {"-connections", "1,x"}} {
		if _, err := parseFlags(args, &strings.Builder{}); err == nil {
			t.Errorf("%q: got no error", args)
		}
	}
	cfg, err := parseFlags(nil, &strings.Builder{})
	if err != nil || cfg.machines != 10000 || len(cfg.conns) != 2 || cfg.duration != 10*time.Second {
		t.Errorf("defaults: got %+v, %v", cfg, err)
	}
}

func TestBenchFleetCaller(t *testing.T) {
	t.Parallel()
	f := benchFleet(70000, 4242)
	seen := map[string]string{}
	for _, h := range f.Hardware {
		a := h.Interfaces[0].Addr()
		if other, ok := seen[a]; ok {
			t.Fatalf("%s and %s share %s", h.Name, other, a)
		}
		seen[a] = h.Name
	}
	if seen["127.0.0.1"] != "node-04242" {
		t.Errorf("127.0.0.1 is %q, want node-04242", seen["127.0.0.1"])
	}
}

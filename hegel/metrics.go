package hegel

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"
)

// result is how a request ended, for the metrics.
type result int

const (
	resultOK           result = iota // 200 with data
	resultToken                      // 200 with a new token
	resultNotFound                   // a known machine asked for a missing path
	resultUnknown                    // no machine has the caller's address
	resultUnauthorized               // token missing (RequireToken), invalid or expired
	resultForbidden                  // token PUT through a proxy
	resultBadRequest                 // bad TTL, query, method, path length, forwarded header
	resultError                      // hegel's own failure
	numResults
)

var resultNames = [numResults]string{
	resultOK:           "ok",
	resultToken:        "token",
	resultNotFound:     "not_found",
	resultUnknown:      "unknown_caller",
	resultUnauthorized: "unauthorized",
	resultForbidden:    "forbidden",
	resultBadRequest:   "bad_request",
	resultError:        "error",
}

// metrics counts requests by result.
type metrics struct {
	requests [numResults]atomic.Uint64
}

func (m *metrics) count(r result) { m.requests[r].Add(1) }

// WriteMetrics writes hegel's metrics in the Prometheus text format.
func (s *Server) WriteMetrics(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# HELP gitmetal_metadata_requests_total Metadata requests, by result.\n")
	b.WriteString("# TYPE gitmetal_metadata_requests_total counter\n")
	for r := range numResults {
		fmt.Fprintf(&b, "gitmetal_metadata_requests_total{result=%q} %d\n", resultNames[r], s.metrics.requests[r].Load())
	}
	_, err := io.WriteString(w, b.String())
	return err
}

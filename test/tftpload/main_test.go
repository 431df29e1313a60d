package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/gitmetal/gitmetal/test/gittest"
)

// TestMain lets the test binary play the roles the orchestrator starts it
// in (it re-executes itself with -serve or -load).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "-serve" || os.Args[1] == "-load") {
		if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmall runs a small comparison and checks the table: every fetch of
// both servers succeeded at both block sizes.
func TestSmall(t *testing.T) {
	tftpd := gittest.NeedTool(t, "in.tftpd")
	var out, errs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, []string{"-n", "8", "-rounds", "1", "-tftpd", tftpd}, &out, &errs)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, errs.String())
	}
	for _, row := range []string{
		`(?m)^gitmetal +512 +8 +0 \(all rounds 0\) `,
		`(?m)^in\.tftpd \(tftp-hpa\) +512 +8 +0 \(all rounds 0\) `,
		`(?m)^gitmetal +1468 +8 +0 \(all rounds 0\) `,
		`(?m)^in\.tftpd \(tftp-hpa\) +1468 +8 +0 \(all rounds 0\) `,
	} {
		if !regexp.MustCompile(row).MatchString(out.String()) {
			t.Errorf("table lacks a row matching %s:\n%s", row, out.String())
		}
	}
}

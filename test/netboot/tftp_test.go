package netboot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/boot/tftp"
	"github.com/gitmetal/gitmetal/test/netlab"
)

// The TFTP server runs in a process of its own inside the lab's namespace:
// this test binary, started again with `ip netns exec` and
// tftpHelperEnv set, runs boot/tftp's Server.Run there and nothing else.
//
// Why not in this process, like DHCP and HTTP: pin/tftp v3.1.0 (under
// boot/tftp) opens a new UDP socket for every transfer, on whatever OS
// thread its goroutine runs on, which is in the host's namespace; only the
// thread that netlab's Do switched is in the lab's. So tftp.Serve on a
// socket opened inside a namespace receives the request and then fails
// every transfer ("listen udp 10.77.x.1:0: bind: cannot assign requested
// address"). A process started inside the namespace has all its threads
// there, as gitmetal serve has in production.
const tftpHelperEnv = "GITMETAL_NETBOOT_TFTP_IPXE_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(tftpHelperEnv); dir != "" {
		os.Exit(tftpHelper(dir))
	}
	os.Exit(m.Run())
}

// tftpHelper is the helper process: gitmetal's TFTP server on :69 with
// the iPXE binaries of dir, logging JSON lines on stdout, until SIGTERM.
// Its last line holds the server's counters.
func tftpHelper(dir string) int {
	log := zerolog.New(os.Stdout).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	s, err := tftp.New(tftp.Config{IPXEDir: dir, Log: log})
	if err != nil {
		log.Error().Err(err).Msg("tftp helper: config")
		return 1
	}
	defer s.Close()
	err = s.Run(ctx)
	st := s.Stats()
	log.Info().Uint64("transfers", st.Transfers).Uint64("failures", st.Failures).
		Uint64("refused", st.Refused).Uint64("bytes", st.Bytes).Msg("tftp helper stats")
	if err != nil {
		log.Error().Err(err).Msg("tftp helper: run")
		return 1
	}
	return 0
}

// startTFTP starts the helper in ns, waits until it serves, and stops it
// (by its PID) when the test ends. Its log goes to tftp.log in the
// results directory and to the returned sink.
func startTFTP(t *testing.T, ns *netlab.Netns, ipxeDir, results string) *logSink {
	t.Helper()
	logs, err := newLogSink(filepath.Join(results, "tftp.log"))
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// ip netns exec execs the helper: the PID is the helper's own.
	cmd := exec.Command("ip", "netns", "exec", ns.Name, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), tftpHelperEnv+"="+ipxeDir)
	cmd.Stdout = logs
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		logs.Close()
		t.Fatalf("start the TFTP helper: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		var err error
		select {
		case err = <-exited:
		case <-time.After(shutdownTimeout):
			cmd.Process.Kill()
			err = errors.Join(fmt.Errorf("still running %s after SIGTERM, killed", shutdownTimeout), <-exited)
		}
		if err != nil {
			t.Errorf("TFTP helper (pid %d): %v", cmd.Process.Pid, err)
		}
		if err := logs.Close(); err != nil {
			t.Errorf("tftp log: %v", err)
		}
	})
	deadline := time.After(setupTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(logs.entries(map[string]string{"message": "tftp serving"})) == 0 {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("the TFTP helper exited before serving (%v); its log is in %s", err, results)
		case <-deadline:
			t.Fatalf("the TFTP helper is not serving after %s; its log is in %s", setupTimeout, results)
		case <-tick.C:
		}
	}
	return logs
}

// Package actions holds the gitmetal agent's built-in actions: the steps
// of a workflow that run on the machine being provisioned, in the
// installer environment, without a container runtime.
//
// The agent's client loop receives a rendered schema.Step from the runner
// and calls Actions.Run, which dispatches on Step.Uses:
//
//   - image2disk streams a disk image over HTTP(S) onto DEST_DISK
//     (a block device, or a regular file in tests). Compression is
//     detected from the stream's first bytes (raw, gzip, xz, zstd, bzip2);
//     Tinkerbell's COMPRESSED is accepted and ignored. CHECKSUM
//     ("sha256:<hex>", "sha512:<hex>" or bare sha256 hex) is the digest of
//     the bytes as downloaded, that is of the compressed file as served,
//     the digest a SHA256SUMS file next to the image lists. It is computed
//     while streaming; a mismatch fails the action with both digests. A
//     dropped connection resumes with an HTTP Range request (guarded by
//     If-Range) at the exact byte offset of the compressed stream, so the
//     decompressor never notices; 5xx, 408 and 429 answers and stalled
//     connections are retried with bounded exponential backoff. Three
//     goroutines share the work: download and decompression; hashing
//     (asyncHash); writing blocks of Config.WriteBlockSize, whose write-back to the disk is
//     started as they are written (sync_file_range) so that the final
//     fsync has little left to do. On a block device the partition table
//     is then re-read (BLKRRPART). A block device is opened O_EXCL: it
//     is refused while one of its file systems is mounted.
//   - archive2disk unpacks a tar archive (plain, gzip, zstd, xz or bzip2,
//     detected from the first bytes) under DEST_PATH of a file system:
//     DEST_DISK mounted with FS_TYPE, or, when DEST_DISK is empty,
//     Config.Root. Entries that are absolute, contain "..", are relative
//     symbolic links climbing out of the tree, or would be written
//     through a symbolic link leading out of it are refused and fail the
//     whole archive; everything is written through os.Root. Modes, symbolic links, hard links
//     and times are kept, owners (numeric ids) too when the agent runs as
//     root. The checksum is known only once the whole archive has been
//     read: a mismatch fails the action after the files were written.
//   - oci2disk pulls a single-layer OCI image (go-containerregistry) and
//     writes its layer, decompressed like image2disk, onto DEST_DISK.
//   - writefile writes CONTENTS to DEST_PATH with MODE, UID, GID, creating
//     missing directories with DIRMODE, in DEST_DISK mounted with FS_TYPE or
//     under Config.Root when DEST_DISK is empty.
//   - exec runs Step.Args, or Tinkerbell cexec's CMD_LINE (through
//     DEFAULT_INTERPRETER when set), with Step.Env as its environment; with
//     BLOCK_DEVICE it runs chrooted into that file system mounted with
//     FS_TYPE, with /dev, /proc and /sys bound in and, with
//     UPDATE_RESOLV_CONF, the installer's resolv.conf. Every line of stdout
//     and stderr goes to the Reporter; a non-zero exit is an *ExitError.
//   - kexec loads KERNEL_PATH, INITRD_PATH and CMD_LINE from BLOCK_DEVICE
//     (mounted with FS_TYPE) with kexec_file_load and reboots into it;
//     reboot syncs and restarts the machine.
//
// A regular file given as DEST_DISK or BLOCK_DEVICE where a file system
// must be mounted is attached to a loop device first; that is how the
// tests mount real ext4 file systems without a spare disk.
//
// What the package must not do: decide anything about runs. It runs one
// step and returns; retries of a failed step (Step.Retries), the run's
// global timeout, and reporting Background steps (kexec, reboot) as
// started before calling Run are the caller's job. Run applies
// Step.Timeout itself so that every action stops at its deadline.
//
// kexec and reboot end the running system. They make their final system
// calls only when Config.AllowReboot is set (the installer's agent sets it);
// otherwise they do everything up to those calls (mount, open the kernel
// and initrd, build the arguments) and fail with ErrRebootDisabled. The
// unit tests exercise that preparation with a fake for the system calls;
// the real kexec_file_load and reboot are exercised by the installer's QEMU
// test, never on the machine running the tests.
package actions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/schema"
)

// Reporter receives what a running action has to say to the person
// watching the run. The agent forwards both to the runner. Actions calls
// it from one goroutine at a time.
type Reporter interface {
	// Logf reports one line of the action's log (no trailing newline):
	// what the action does, and what a command it runs writes on its
	// standard output.
	Logf(format string, args ...any)
	// Stderr reports one line (no trailing newline) that a command the
	// action runs wrote on its standard error.
	Stderr(line string)
	// Progress reports how far a transfer has got.
	Progress(p Progress)
}

// Progress is the state of a transfer, reported every few seconds and
// once at the end.
type Progress struct {
	// Done is the number of bytes read from the source, as downloaded
	// (compressed).
	Done int64 `json:"done"`
	// Total is the size of the source in bytes, 0 when the server did
	// not say.
	Total int64 `json:"total,omitempty"`
	// Written is the number of bytes written to the destination, after
	// decompression.
	Written int64 `json:"written"`
	// Rate is Done's bytes per second since the previous report.
	Rate float64 `json:"rate"`
}

// Config configures the built-in actions.
type Config struct {
	// Log receives the package's own diagnostics (component=actions);
	// lines meant for the person watching the run go to the Reporter.
	Log zerolog.Logger

	// HTTPClient fetches images and archives. Default: a client without
	// an overall timeout (an image takes minutes) and with 30 s dial, TLS
	// handshake and response header timeouts. Redirects are followed.
	HTTPClient *http.Client

	// TempDir is where mount points are made. Default: os.TempDir().
	TempDir string

	// Root is the directory DEST_PATH is resolved in when DEST_DISK is
	// empty (writefile, archive2disk). Default "/". Tests point it at a
	// temporary directory.
	Root string

	// AllowReboot lets kexec and reboot make their final system calls.
	// Default false: they prepare everything and fail with
	// ErrRebootDisabled. Only the installer's agent sets it.
	AllowReboot bool

	// ProgressInterval is how often transfers report progress; an
	// action's PROGRESS_INTERVAL_SECONDS overrides it. Default 5 s.
	ProgressInterval time.Duration

	// RetryAttempts bounds how many times in a row a download is retried
	// (5xx, 408, 429 answers, dropped or stalled connections) without
	// receiving a byte; RETRY_ENABLED=false turns retries off for an
	// action. Default 8.
	RetryAttempts int
	// RetryMinBackoff is the first wait before a retry; it doubles up to
	// RetryMaxBackoff. Defaults 1 s and 30 s.
	RetryMinBackoff time.Duration
	RetryMaxBackoff time.Duration

	// StallTimeout is how long a download may receive nothing before the
	// connection is given up and resumed. Default 60 s.
	StallTimeout time.Duration

	// WriteBlockSize is the size of each write to the destination.
	// Default 4 MiB.
	WriteBlockSize int
}

// Defaults of Config.
const (
	DefaultProgressInterval = 5 * time.Second
	DefaultRetryAttempts    = 8
	DefaultRetryMinBackoff  = time.Second
	DefaultRetryMaxBackoff  = 30 * time.Second
	DefaultStallTimeout     = 60 * time.Second
	DefaultWriteBlockSize   = 4 << 20
)

// Errors that callers may test with errors.Is.
var (
	// ErrUnknownAction: Step.Uses names no built-in action (it may be an
	// OCI image for a container runtime).
	ErrUnknownAction = errors.New("not a built-in action")
	// ErrRebootDisabled: kexec or reboot prepared everything but
	// Config.AllowReboot is false.
	ErrRebootDisabled = errors.New("reboot disabled (Config.AllowReboot is false)")
)

// Actions runs built-in actions. It is safe for concurrent use; each Run
// is independent.
type Actions struct {
	cfg      Config
	log      zerolog.Logger
	builtins map[string]actionFunc
	sys      system
}

type actionFunc func(ctx context.Context, step schema.Step, out Reporter) error

// New validates cfg, fills in its defaults and returns the actions.
func New(cfg Config) (*Actions, error) {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient()
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	for name, dir := range map[string]string{"TempDir": cfg.TempDir, "Root": cfg.Root} {
		if !filepath.IsAbs(dir) {
			return nil, fmt.Errorf("actions config: %s %q: want an absolute path", name, dir)
		}
		if fi, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("actions config: %s: %w", name, err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("actions config: %s %q: not a directory", name, dir)
		}
	}
	defaults := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ProgressInterval", &cfg.ProgressInterval, DefaultProgressInterval},
		{"RetryMinBackoff", &cfg.RetryMinBackoff, DefaultRetryMinBackoff},
		{"RetryMaxBackoff", &cfg.RetryMaxBackoff, DefaultRetryMaxBackoff},
		{"StallTimeout", &cfg.StallTimeout, DefaultStallTimeout},
	}
	for _, d := range defaults {
		switch {
		case *d.v < 0:
			return nil, fmt.Errorf("actions config: %s %s: want a positive duration", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if cfg.RetryMaxBackoff < cfg.RetryMinBackoff {
		return nil, fmt.Errorf("actions config: RetryMaxBackoff %s is less than RetryMinBackoff %s", cfg.RetryMaxBackoff, cfg.RetryMinBackoff)
	}
	switch {
	case cfg.RetryAttempts < 0:
		return nil, fmt.Errorf("actions config: RetryAttempts %d: want 0 or more", cfg.RetryAttempts)
	case cfg.RetryAttempts == 0:
		cfg.RetryAttempts = DefaultRetryAttempts
	}
	switch {
	case cfg.WriteBlockSize < 0 || cfg.WriteBlockSize > 1<<30:
		return nil, fmt.Errorf("actions config: WriteBlockSize %d: want 1 byte to 1 GiB", cfg.WriteBlockSize)
	case cfg.WriteBlockSize == 0:
		cfg.WriteBlockSize = DefaultWriteBlockSize
	}
	a := &Actions{
		cfg: cfg,
		log: cfg.Log.With().Str("component", "actions").Logger(),
		sys: linuxSystem{},
	}
	a.builtins = map[string]actionFunc{
		"image2disk":   a.image2disk,
		"archive2disk": a.archive2disk,
		"oci2disk":     a.oci2disk,
		"writefile":    a.writefile,
		"exec":         a.exec,
		"kexec":        a.kexec,
		"reboot":       a.reboot,
	}
	return a, nil
}

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 30 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: t}
}

// Has reports whether uses names a built-in action.
func (a *Actions) Has(uses string) bool {
	_, ok := a.builtins[uses]
	return ok
}

// Run runs one step and returns when it is done, failed, or ctx ends. The
// step's Timeout, when set, bounds it; an action stopped by it returns a
// *TimeoutError, which matches context.DeadlineExceeded. Errors name the
// action and, for bad parameters, the environment variable. A Background
// step (kexec, reboot) does not return when it succeeds: the caller
// reports it started first.
func (a *Actions) Run(ctx context.Context, step schema.Step, out Reporter) error {
	run, ok := a.builtins[step.Uses]
	if !ok {
		return fmt.Errorf("action %q uses %q: %w", step.Name, step.Uses, ErrUnknownAction)
	}
	if out == nil {
		out = discard{}
	}
	out = &lockedReporter{r: out}
	parent := ctx
	if step.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(step.Timeout))
		defer cancel()
	}
	err := run(ctx, step, out)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		// An action interrupted by ctx often fails with a consequence
		// (a killed process, a closed pipe): make the cause visible.
		if !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		if parent.Err() == nil && step.Timeout > 0 {
			err = &TimeoutError{Timeout: time.Duration(step.Timeout), Err: err}
		}
	}
	return fmt.Errorf("%s %q: %w", step.Uses, step.Name, err)
}

// TimeoutError is returned when the step's own Timeout stopped it.
type TimeoutError struct {
	Timeout time.Duration
	Err     error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("timed out after %s: %v", e.Timeout, e.Err)
}

// Unwrap returns the interrupted action's error, which wraps
// context.DeadlineExceeded.
func (e *TimeoutError) Unwrap() error { return e.Err }

// ExitError is a command that exec ran and that did not exit 0.
type ExitError struct {
	// Code is the exit status, or -1 when a signal ended the command.
	Code int
	// Signal names the signal that ended the command, if one did.
	Signal string
}

func (e *ExitError) Error() string {
	if e.Signal != "" {
		return "command killed by signal " + e.Signal
	}
	return fmt.Sprintf("command exited with status %d", e.Code)
}

// ChecksumError is a download whose digest is not the expected one.
type ChecksumError struct {
	Algorithm string // "sha256" or "sha512"
	Got, Want string // lower-case hex
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("checksum mismatch: got %s:%s, want %s:%s", e.Algorithm, e.Got, e.Algorithm, e.Want)
}

// lockedReporter serialises calls into the caller's Reporter: progress
// comes from a ticker goroutine, log lines from the action and from
// command output readers.
type lockedReporter struct {
	mu sync.Mutex
	r  Reporter
}

func (l *lockedReporter) Logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.r.Logf(format, args...)
}

func (l *lockedReporter) Stderr(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.r.Stderr(line)
}

func (l *lockedReporter) Progress(p Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.r.Progress(p)
}

type discard struct{}

func (discard) Logf(string, ...any) {}
func (discard) Stderr(string)       {}
func (discard) Progress(Progress)   {}

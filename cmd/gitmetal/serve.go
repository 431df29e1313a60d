package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/gitmetal/gitmetal/reconciler"
	"github.com/gitmetal/gitmetal/reconciler/api"
	"github.com/gitmetal/gitmetal/reconciler/source"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

// serveFlags are the daemon's settings; each flag is also read from
// GITMETAL_<NAME>.
type serveFlags struct {
	repo, ref, path, stateDir, listen string
	interval                          time.Duration
	webhookSecret, verifyCommits      string
	logLevel, logFormat               string
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	var f serveFlags
	fs.StringVar(&f.repo, "repo", "", "the fleet repository: a git URL (https://, ssh://, file://), a local git repository, or a plain directory (development mode, watched for changes)")
	fs.StringVar(&f.ref, "ref", "", "branch, tag or commit to follow (default: the repository's default branch)")
	fs.StringVar(&f.path, "path", "", "subdirectory of the repository that holds the fleet")
	fs.DurationVar(&f.interval, "interval", 30*time.Second, "how often to fetch a remote repository (jittered); webhooks and local changes apply at once")
	fs.StringVar(&f.stateDir, "state-dir", "/var/lib/gitmetal", "where the clone, the validation cache and the journal live")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "address of the HTTP API")
	fs.StringVar(&f.webhookSecret, "webhook-secret", "", "secret that verifies POST /v1/hooks/git (GitHub, GitLab, Gitea); empty disables the webhook")
	fs.StringVar(&f.verifyCommits, "verify-commits", "", "armored OpenPGP keyring: refuse any new commit not signed by one of its keys")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "json or console")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: gitmetal serve --repo URL|PATH [flags]")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.repo == "" || fs.NArg() > 0 {
		fs.Usage()
		return errSilent(2)
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	return serve(ctx, f, log)
}

func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Logger{}, fmt.Errorf("--log-level %q: allowed: debug, info, warn, error", level)
	}
	switch format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	default:
		return zerolog.Logger{}, fmt.Errorf("--log-format %q: allowed: json, console", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// openSource picks the kind of source --repo names.
func openSource(f serveFlags) (source.Source, func() error, error) {
	keyring := ""
	if f.verifyCommits != "" {
		b, err := os.ReadFile(f.verifyCommits)
		if err != nil {
			return nil, nil, fmt.Errorf("--verify-commits: %w", err)
		}
		keyring = string(b)
	}
	if st, err := os.Stat(f.repo); err == nil && st.IsDir() && !source.IsRepository(f.repo) {
		if keyring != "" {
			return nil, nil, errors.New("--verify-commits needs a git repository, not a plain directory")
		}
		d, err := source.NewDir(source.DirConfig{Path: filepath.Join(f.repo, f.path)})
		if err != nil {
			return nil, nil, err
		}
		return d, d.Close, nil
	}
	g, err := source.NewGit(source.GitConfig{
		URL:     f.repo,
		Ref:     f.ref,
		Path:    f.path,
		Dir:     filepath.Join(f.stateDir, "repo"),
		Keyring: keyring,
	})
	if err != nil {
		return nil, nil, err
	}
	return g, g.Close, nil
}

func serve(ctx context.Context, f serveFlags, log zerolog.Logger) error {
	if err := os.MkdirAll(f.stateDir, 0o750); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	src, closeSource, err := openSource(f)
	if err != nil {
		return err
	}
	defer closeSource()

	loader, err := schema.NewLoader(schema.Config{})
	if err != nil {
		return err
	}
	st, err := store.New()
	if err != nil {
		return err
	}
	rec, err := reconciler.New(reconciler.Config{
		Source:   src,
		Store:    st,
		Loader:   loader,
		Interval: f.interval,
		StateDir: f.stateDir,
		Log:      log,
	})
	if err != nil {
		return err
	}
	a, err := api.New(api.Config{Reconciler: rec, Store: st, WebhookSecret: f.webhookSecret, Log: log})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	a.Register(mux)

	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	log.Info().Str("listen", ln.Addr().String()).Str("source", src.String()).Str("stateDir", f.stateDir).Msg("gitmetal serving")

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return rec.Run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// A fresh context: the one that ended cannot bound the shutdown.
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	err = g.Wait()
	log.Info().Msg("gitmetal stopped")
	if err != nil && !strings.Contains(err.Error(), context.Canceled.Error()) {
		return err
	}
	return nil
}

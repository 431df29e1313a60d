package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/gitmetal/gitmetal/boot/dhcp"
	"github.com/gitmetal/gitmetal/boot/ipxe"
	"github.com/gitmetal/gitmetal/boot/tftp"
	"github.com/gitmetal/gitmetal/hegel"
	"github.com/gitmetal/gitmetal/reconciler"
	"github.com/gitmetal/gitmetal/reconciler/api"
	"github.com/gitmetal/gitmetal/reconciler/source"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/runner"
	"github.com/gitmetal/gitmetal/schema"
)

// serveFlags are the daemon's settings; each flag is also read from
// GITMETAL_<NAME>.
type serveFlags struct {
	repo, ref, path, stateDir, listen string
	interval                          time.Duration
	webhookSecret, verifyCommits      string
	logLevel, logFormat               string

	// boot
	advertiseAddr, bootListen, tftpListen string
	ipxeDir, tftpDir, installerDir        string
	trustedProxies                        string
	metadataListen                        string
	imdsRequireToken                      bool
	tokenTTL                              time.Duration
	keepRuns                              int
	site                                  string
	apiTokenFile                          string
	apiToken                              string // read from apiTokenFile by cmdServe
	dhcpIface, dhcpMode                   string
	proxyUnknown                          bool
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
	fs.StringVar(&f.advertiseAddr, "advertise-addr", "", "the address machines reach this daemon at: next-server, DHCP server id, and the host of every URL handed out (default: the host of --boot-listen or --listen)")
	fs.StringVar(&f.bootListen, "boot-listen", "", "a separate HTTP listener for what machines call: iPXE scripts and binaries, the installer, the agent protocol (default: on --listen)")
	fs.StringVar(&f.tftpListen, "tftp-listen", "", "UDP address of the TFTP server, e.g. :69 (default: off)")
	fs.StringVar(&f.ipxeDir, "ipxe-dir", defaultIPXEDir(), "directory of the iPXE binaries (undionly.kpxe, ipxe.efi, snponly.efi); `make ipxe` fills .cache/ipxe/bin")
	fs.StringVar(&f.tftpDir, "tftp-dir", "", "extra files served by TFTP")
	fs.StringVar(&f.installerDir, "installer-dir", "installer", "directory served under /installer/ (the installer's kernel and initramfs)")
	fs.StringVar(&f.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs whose X-Forwarded-For is believed (metadata and iPXE scripts)")
	fs.StringVar(&f.metadataListen, "metadata-listen", "", "address of the EC2/NoCloud metadata service, e.g. :80 (default: off)")
	fs.StringVar(&f.dhcpIface, "dhcp-iface", "", "network interface to serve DHCP on (default: DHCP off); needs --advertise-addr")
	fs.StringVar(&f.dhcpMode, "dhcp-mode", "reservation", "reservation (addresses for known MACs), proxy (boot information beside another DHCP server) or off")
	fs.BoolVar(&f.proxyUnknown, "proxy-unknown", false, "in proxy mode, point PXE clients the fleet does not know at a discovery script")
	fs.DurationVar(&f.tokenTTL, "token-ttl", 24*time.Hour, "how long a per-boot agent token stays valid")
	fs.StringVar(&f.apiTokenFile, "api-token-file", "", "file holding a bearer token the API's /v1/ requires (not the webhook, which has its secret, nor the agent protocol, which has per-boot tokens); default: no token")
	fs.StringVar(&f.site, "site", "", "serve only the machines of this site (their own site:, else settings.site) and their workflows; the whole repository is still validated (default: every machine)")
	fs.IntVar(&f.keepRuns, "keep-runs", runner.DefaultKeepRuns, "ended runs kept in the journal per workflow, with their logs (besides its latest success); 0 keeps every run")
	fs.BoolVar(&f.imdsRequireToken, "imds-require-token", false, "refuse IMDSv1 requests: EC2 metadata needs an IMDSv2 session token")
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
	if err := checkSite(f.site); err != nil {
		return err
	}
	if f.apiTokenFile != "" {
		tok, err := api.ReadToken(f.apiTokenFile)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("--api-token-file: %w", err)}
		}
		f.apiToken = tok
	}
	if f.keepRuns < 0 {
		return &exitError{code: 2, err: fmt.Errorf("--keep-runs %d: want 0 (keep every run) or more", f.keepRuns)}
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

// defaultIPXEDir is where `make ipxe` puts the binaries, else Debian's
// ipxe package.
func defaultIPXEDir() string {
	if _, err := os.Stat(".cache/ipxe/bin/ipxe.efi"); err == nil {
		return ".cache/ipxe/bin"
	}
	return "/usr/lib/ipxe"
}

func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			if a, aerr := netip.ParseAddr(part); aerr == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				return nil, fmt.Errorf("--trusted-proxies: %w", err)
			}
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// httpBase is the URL machines use to reach the boot listener.
func httpBase(advertise string, ln net.Listener) (string, error) {
	host, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		return "", err
	}
	if advertise != "" {
		a, err := netip.ParseAddr(advertise)
		if err != nil {
			return "", fmt.Errorf("--advertise-addr: %w", err)
		}
		host = a.String()
	} else if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return "", errors.New("--advertise-addr is needed when the boot listener has no specific address")
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// existing returns dir when it exists, else "".
func existing(dir string) string {
	if _, err := os.Stat(dir); err != nil {
		return ""
	}
	return dir
}

// service is one part of the daemon that runs until ctx ends.
type service struct {
	name string
	run  func(ctx context.Context) error
}

// httpService serves handler on ln until ctx ends, then shuts down with a
// fresh timeout (the ended context cannot bound the shutdown).
func httpService(name string, ln net.Listener, handler http.Handler, log zerolog.Logger) service {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	return service{name: name, run: func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case err := <-errc:
			return fmt.Errorf("%s: %w", name, err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn().Err(err).Str("server", name).Msg("shutdown")
		}
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}}
}

func serve(ctx context.Context, f serveFlags, log zerolog.Logger) error {
	if err := os.MkdirAll(f.stateDir, 0o750); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	proxies, err := parsePrefixes(f.trustedProxies)
	if err != nil {
		return &exitError{code: 2, err: err}
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
		Site:     f.site,
		Log:      log,
	})
	if err != nil {
		return err
	}

	var (
		services = []service{{"reconciler", rec.Run}}
		metrics  []api.MetricsWriter
	)

	// Listeners first: an address in use fails the start, not later.
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	mux := http.NewServeMux()
	bootLn, bootMux := ln, mux
	if f.bootListen != "" {
		if bootLn, err = net.Listen("tcp", f.bootListen); err != nil {
			return fmt.Errorf("--boot-listen: %w", err)
		}
		bootMux = http.NewServeMux()
		services = append(services, httpService("boot http", bootLn, bootMux, log))
	}
	base, err := httpBase(f.advertiseAddr, bootLn)
	if err != nil {
		return &exitError{code: 2, err: err}
	}

	// The runner: workflow runs, the agent protocol, the journal.
	run, err := runner.New(runner.Config{Store: st, StateDir: f.stateDir, TokenTTL: f.tokenTTL, KeepRuns: keepRuns(f.keepRuns), Log: log})
	if err != nil {
		return err
	}
	defer run.Close()
	// The installer's agent calls the boot listener (gitmetal.server= is
	// its URL); runs and inventories are read on the API's.
	run.RegisterAgent(bootMux)
	run.RegisterAPI(mux)
	services = append(services, service{"runner", run.Run})
	metrics = append(metrics, run)

	// iPXE scripts, binaries and the installer over HTTP. A missing
	// directory is not fatal: its files answer 404 until it is filled.
	for _, d := range []struct{ flag, dir string }{{"--ipxe-dir", f.ipxeDir}, {"--installer-dir", f.installerDir}} {
		if _, err := os.Stat(d.dir); d.dir != "" && err != nil {
			log.Warn().Err(err).Str("flag", d.flag).Msg("directory missing; its files answer 404")
		}
	}
	ih, err := ipxe.New(ipxe.Config{
		Store:          st,
		Installs:       run,
		HTTPBase:       base,
		IPXEDir:        existing(f.ipxeDir),
		InstallerDir:   existing(f.installerDir),
		TrustedProxies: proxies,
		Log:            log,
	})
	if err != nil {
		return err
	}
	defer ih.Close()
	ih.Register(bootMux)
	metrics = append(metrics, ih)

	// DHCP: off unless an interface is named, never on a host interface
	// by default.
	mode, err := dhcp.ParseMode(f.dhcpMode)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("--dhcp-mode: %w", err)}
	}
	if f.proxyUnknown && mode != dhcp.ModeProxy {
		return &exitError{code: 2, err: errors.New("--proxy-unknown needs --dhcp-mode proxy")}
	}
	if f.dhcpIface != "" && mode != dhcp.ModeOff {
		adv, err := netip.ParseAddr(f.advertiseAddr)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("--dhcp-iface needs --advertise-addr, the address machines reach this daemon at: %w", err)}
		}
		ds, err := dhcp.New(dhcp.Config{
			Mode:          mode,
			Interface:     f.dhcpIface,
			AdvertiseAddr: adv,
			HTTPBase:      base,
			ProxyUnknown:  f.proxyUnknown,
			Backend:       st,
			Log:           log,
		})
		if err != nil {
			return err
		}
		defer ds.Close()
		services = append(services, service{"dhcp", ds.Run})
		metrics = append(metrics, ds)
		if f.tftpListen == "" {
			// PXE firmware fetches iPXE over TFTP from next-server.
			f.tftpListen = net.JoinHostPort(adv.String(), "69")
		}
		log.Info().Str("iface", f.dhcpIface).Str("mode", f.dhcpMode).Msg("dhcp on")
	}

	if f.tftpListen != "" {
		ts, err := tftp.New(tftp.Config{IPXEDir: existing(f.ipxeDir), AssetDir: f.tftpDir, ListenAddr: f.tftpListen, Log: log})
		if err != nil {
			return err
		}
		defer ts.Close()
		services = append(services, service{"tftp", ts.Run})
		metrics = append(metrics, ts)
	}

	if f.metadataListen != "" {
		hg, err := hegel.New(hegel.Config{Store: st, TrustedProxies: proxies, RequireToken: f.imdsRequireToken, Log: log})
		if err != nil {
			return err
		}
		defer hg.Close()
		mln, err := net.Listen("tcp", f.metadataListen)
		if err != nil {
			return fmt.Errorf("--metadata-listen: %w", err)
		}
		services = append(services, httpService("metadata", mln, hg.Handler(), log))
		metrics = append(metrics, hg)
		log.Info().Str("listen", mln.Addr().String()).Msg("metadata service")
	}

	a, err := api.New(api.Config{Reconciler: rec, Store: st, WebhookSecret: f.webhookSecret, Metrics: metrics, Log: log})
	if err != nil {
		return err
	}
	a.Register(mux)
	var apiHandler http.Handler = mux
	if f.apiToken != "" {
		apiHandler = api.Protect(f.apiToken, mux)
	}
	services = append(services, httpService("api", ln, apiHandler, log))

	log.Info().Str("listen", ln.Addr().String()).Str("source", src.String()).Str("stateDir", f.stateDir).
		Str("httpBase", base).Msg("gitmetal serving")
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range services {
		g.Go(func() error { return s.run(gctx) })
	}
	err = g.Wait()
	log.Info().Msg("gitmetal stopped")
	return err
}

// keepRuns maps --keep-runs (0 keeps every run; cmdServe refuses a
// negative count) to runner.Config.KeepRuns (negative keeps every run).
func keepRuns(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

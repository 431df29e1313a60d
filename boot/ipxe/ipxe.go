// Package ipxe serves what a machine's iPXE fetches over HTTP: its
// per-machine boot script, the iPXE binaries (for UEFI HTTP boot) and the
// installer's kernel and initrd.
//
// Design notes:
//   - The script is decided from the store on every request, so the next
//     request after a commit gets the new answer: allowPXE false → exit to
//     the local disk; the interface's own ipxe.script or ipxe.url win next;
//     then, when the runner (Installs) says the machine has a pending or
//     running workflow run, a script that loads the installer with a
//     per-boot token; otherwise exit to the local disk. Scripts are a pure
//     function of their input (script.go), pinned by golden files.
//   - Every script names the applied revision in a comment. The lookups
//     are read between two reads of the revision and repeated if it moved,
//     so the comment names the revision the answer came from.
//   - GET /ipxe/boot.ipxe knows the caller by source address; it believes
//     X-Forwarded-For only from TrustedProxies.
//   - Files are served with http.ServeContent (Range, If-Modified-Since)
//     from an os.Root (installer) or a flat directory (binaries); no
//     directory is ever listed and no path leaves its tree.
//
// The package must not start workflow runs or mint tokens (the runner
// does, behind Installs), must not write anything, and must not decide
// DHCP answers.
package ipxe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-memdb"
	"github.com/rs/zerolog"

	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/schema"
)

// Store is the desired state the handlers read. *store.Store and
// *store.Snapshot implement it. A lookup that finds nothing returns nil
// and no error.
type Store interface {
	HardwareByMAC(ws memdb.WatchSet, mac string) (*schema.Hardware, error)
	HardwareByIP(ws memdb.WatchSet, ip string) (*schema.Hardware, error)
	Settings(ws memdb.WatchSet) (*schema.Settings, error)
	Revision(ws memdb.WatchSet) (store.Revision, error)
}

// Installs is the runner's answer to "should this machine boot the
// installer now?". ok is true when the machine has a pending or running
// workflow run; token is then the per-boot token the agent presents (it
// goes on the kernel command line, so it must be URL- and shell-safe:
// letters, digits and "-._~"). An error makes the request fail with 503,
// so that the firmware retries or moves on, rather than boot the local
// disk while a run may be pending.
type Installs interface {
	Install(ctx context.Context, hw *schema.Hardware, mac string) (token string, ok bool, err error)
}

// NoInstalls is the Installs of a daemon without a runner: no machine ever
// has a run, so every machine that may PXE-boot is told to boot its local
// disk.
type NoInstalls struct{}

// Install always answers "no run".
func (NoInstalls) Install(context.Context, *schema.Hardware, string) (string, bool, error) {
	return "", false, nil
}

// Config configures the handlers.
type Config struct {
	// Store is the desired state. Required.
	Store Store
	// Installs says which machines boot the installer. Required: use
	// NoInstalls until a runner exists.
	Installs Installs
	// HTTPBase is the URL machines reach this server at, such as
	// http://10.0.0.1:8080 (the advertised address and the port of the
	// listener these handlers are on). Installer URLs and gitmetal.server=
	// are built from it. Required; a trailing slash is dropped.
	HTTPBase string
	// IPXEDir is the flat directory of iPXE binaries served under
	// /ipxe/bin/. Optional: without it those requests get 404.
	IPXEDir string
	// InstallerDir is the tree of installer files served under
	// /installer/. Optional: without it those requests get 404 (installer
	// kernels and initrds given as absolute URLs still work).
	InstallerDir string
	// TrustedProxies are the addresses whose X-Forwarded-For is believed
	// by GET /ipxe/boot.ipxe. Default none.
	TrustedProxies []netip.Prefix
	// Log receives one line per script served and per error.
	Log zerolog.Logger
}

// Handler serves the iPXE endpoints.
type Handler struct {
	cfg       Config
	base      string
	log       zerolog.Logger
	binaries  *Binaries // nil without IPXEDir
	installer *Tree     // nil without InstallerDir

	scripts  [5]atomic.Uint64 // by kind, in kindIndex order
	notFound atomic.Uint64
}

var kinds = [...]Kind{KindLocalDisk, KindInstaller, KindCustomScript, KindChain, KindMisconfigured}

func kindIndex(k Kind) int {
	for i, x := range kinds {
		if x == k {
			return i
		}
	}
	return 0
}

// New validates cfg and opens the directories. Close releases them.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Installs == nil {
		return nil, errors.New("ipxe: Store and Installs are required (use ipxe.NoInstalls without a runner)")
	}
	base, err := checkBase(cfg.HTTPBase)
	if err != nil {
		return nil, err
	}
	for _, p := range cfg.TrustedProxies {
		if !p.IsValid() {
			return nil, fmt.Errorf("ipxe: invalid trusted proxy prefix %v", p)
		}
	}
	h := &Handler{cfg: cfg, base: base, log: cfg.Log.With().Str("component", "ipxe").Logger()}
	if cfg.IPXEDir != "" {
		if h.binaries, err = OpenBinaries(cfg.IPXEDir); err != nil {
			return nil, fmt.Errorf("ipxe: %w", err)
		}
	}
	if cfg.InstallerDir != "" {
		if h.installer, err = OpenTree(cfg.InstallerDir); err != nil {
			return nil, fmt.Errorf("ipxe: installer: %w", err)
		}
	}
	return h, nil
}

func checkBase(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("ipxe: HTTPBase %q: want an http:// or https:// URL with a host and no query, such as http://10.0.0.1:8080", raw)
	}
	base := strings.TrimRight(raw, "/")
	if bad := unsafeScriptChars(base); bad != "" || strings.ContainsAny(base, " \t") {
		return "", fmt.Errorf("ipxe: HTTPBase %q: spaces, quotes, backslashes and the characters $ & | are not allowed", raw)
	}
	return base, nil
}

// Close releases the installer directory.
func (h *Handler) Close() error {
	if h.installer != nil {
		return h.installer.Close()
	}
	return nil
}

// ScriptURL returns the URL of a machine's script, for the DHCP server to
// hand to a client that is already iPXE.
func (h *Handler) ScriptURL(mac string) string {
	return h.base + "/ipxe/" + mac + "/boot.ipxe"
}

// Register adds the routes to mux:
//
//	GET /ipxe/boot.ipxe          the caller's script, by source address
//	GET /ipxe/{mac}/boot.ipxe    a machine's script, by MAC
//	GET /ipxe/bin/{name}         an iPXE binary
//	GET /installer/{path...}     an installer file
func (h *Handler) Register(mux *http.ServeMux) {
	mux.Handle("GET /ipxe/boot.ipxe", h.recover(h.scriptByIP))
	mux.Handle("GET /ipxe/discover.ipxe", h.recover(h.discover))
	// One pattern for both: ServeMux rejects /ipxe/bin/{name} beside
	// /ipxe/{mac}/boot.ipxe, as /ipxe/bin/boot.ipxe matches both.
	mux.Handle("GET /ipxe/{dir}/{file}", h.recover(h.ipxeDir))
	mux.Handle("GET /installer/{path...}", h.recover(h.installerFile))
}

// recover turns a panic into a 500 and a log line: a bug costs one request.
func (h *Handler) recover(f http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				h.log.Error().Interface("panic", v).Str("path", r.URL.Path).Msg("ipxe request panicked")
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		f(w, r)
	})
}

func (h *Handler) ipxeDir(w http.ResponseWriter, r *http.Request) {
	dir, file := r.PathValue("dir"), r.PathValue("file")
	switch {
	case dir == "bin":
		h.binary(w, r, file)
	case file == "boot.ipxe":
		h.scriptByMAC(w, r, dir)
	default:
		h.notFound.Add(1)
		http.NotFound(w, r)
	}
}

func (h *Handler) scriptByMAC(w http.ResponseWriter, r *http.Request, raw string) {
	hw, err := net.ParseMAC(raw)
	if err != nil || len(hw) != 6 {
		http.Error(w, "not a MAC address: want six colon- or dash-separated hex bytes", http.StatusBadRequest)
		return
	}
	h.serveScript(w, r, func(st Store) (*schema.Hardware, error) {
		return st.HardwareByMAC(nil, hw.String())
	}, func(*schema.Hardware) string { return hw.String() })
}

func (h *Handler) scriptByIP(w http.ResponseWriter, r *http.Request) {
	ip, err := h.clientAddr(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.serveScript(w, r, func(st Store) (*schema.Hardware, error) {
		return st.HardwareByIP(nil, ip.String())
	}, func(m *schema.Hardware) string {
		for i := range m.Interfaces {
			if m.Interfaces[i].Addr() == ip.String() {
				return m.Interfaces[i].MAC
			}
		}
		return ""
	})
}

// clientAddr is the request's source address, or, when that is a trusted
// proxy, the last address in X-Forwarded-For that is not one.
func (h *Handler) clientAddr(r *http.Request) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("source address %q: %w", r.RemoteAddr, err)
	}
	addr := ap.Addr().Unmap()
	if !h.trusted(addr) {
		return addr, nil
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		s := strings.TrimSpace(hops[i])
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("X-Forwarded-For: %q is not an address", s)
		}
		addr = a.Unmap()
		if !h.trusted(addr) {
			break
		}
	}
	return addr, nil
}

func (h *Handler) trusted(a netip.Addr) bool {
	for _, p := range h.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// view is one consistent read of the store for one request.
type view struct {
	rev      store.Revision
	hw       *schema.Hardware
	settings *schema.Settings
}

// read runs lookup between two reads of the revision and tries again when
// an Apply came in between, so the revision names the data.
func (h *Handler) read(lookup func(Store) (*schema.Hardware, error)) (view, error) {
	st := h.cfg.Store
	for range 5 {
		before, err := st.Revision(nil)
		if err != nil {
			return view{}, err
		}
		hw, err := lookup(st)
		if err != nil {
			return view{}, err
		}
		settings, err := st.Settings(nil)
		if err != nil {
			return view{}, err
		}
		after, err := st.Revision(nil)
		if err != nil {
			return view{}, err
		}
		if before.Index == after.Index {
			return view{rev: after, hw: hw, settings: settings}, nil
		}
	}
	return view{}, errors.New("the store changed during five reads in a row")
}

func (h *Handler) serveScript(w http.ResponseWriter, r *http.Request, lookup func(Store) (*schema.Hardware, error), macOf func(*schema.Hardware) string) {
	v, err := h.read(lookup)
	if err != nil {
		h.log.Error().Err(err).Msg("ipxe store read failed")
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	if v.hw == nil {
		h.notFound.Add(1)
		h.log.Info().Str("path", r.URL.Path).Str("remote", r.RemoteAddr).Msg("ipxe script for an unknown machine")
		http.Error(w, "unknown machine", http.StatusNotFound)
		return
	}
	mac := macOf(v.hw)
	iface := findInterface(v.hw, mac)
	if iface == nil {
		// The lookup found the machine by this key; only a store bug
		// gets here.
		http.Error(w, "unknown interface", http.StatusNotFound)
		return
	}
	log := h.log.With().Str("hardware", v.hw.Name).Str("mac", mac).Str("revision", v.rev.ID).Logger()
	kind, script, err := h.script(r.Context(), v, iface)
	if err != nil {
		log.Error().Err(err).Msg("ipxe installer lookup failed")
		w.Header().Set("Retry-After", "10")
		http.Error(w, "cannot tell whether a workflow run is pending", http.StatusServiceUnavailable)
		return
	}
	h.scripts[kindIndex(kind)].Add(1)
	log.Info().Str("kind", string(kind)).Str("remote", r.RemoteAddr).Msg("ipxe script served")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	io.WriteString(w, script)
}

// discoveryScript is what a PXE client the fleet does not know boots when
// proxyDHCP answers unknown clients (--proxy-unknown): it says how to add
// the machine, then leaves the firmware to its next boot device. It names
// no machine and reads no store: a stranger learns nothing.
const discoveryScript = `#!ipxe
echo gitmetal: this machine is not in the fleet.
echo gitmetal: MAC ${net0/mac}, platform ${platform}, architecture ${buildarch}
echo gitmetal: commit hardware/<site>/<name>.cue with this MAC to provision it.
sleep 10
exit 1
`

func (h *Handler) discover(w http.ResponseWriter, r *http.Request) {
	h.log.Info().Str("remote", r.RemoteAddr).Msg("ipxe discovery script served to an unknown machine")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	io.WriteString(w, discoveryScript)
}

func findInterface(hw *schema.Hardware, mac string) *schema.Interface {
	for i := range hw.Interfaces {
		if hw.Interfaces[i].MAC == mac {
			return &hw.Interfaces[i]
		}
	}
	return nil
}

// script decides what the interface boots and writes the script.
func (h *Handler) script(ctx context.Context, v view, iface *schema.Interface) (Kind, string, error) {
	in := scriptInput{Revision: v.rev.ID, Hardware: v.hw.Name, MAC: iface.MAC}
	if in.Revision == "" {
		in.Revision = "(none applied)"
	}
	nb := iface.Netboot
	switch {
	case !nb.AllowPXE:
		in.Reason = "netboot.allowPXE is false"
		return KindLocalDisk, localDiskScript(in), nil
	case nb.IPXE != nil && nb.IPXE.Script != "":
		in.Reason = "netboot.ipxe.script"
		return KindCustomScript, customScript(in, nb.IPXE.Script), nil
	case nb.IPXE != nil && nb.IPXE.URL != "":
		in.Reason = "netboot.ipxe.url"
		if bad := unsafeScriptChars(nb.IPXE.URL); bad != "" || strings.ContainsAny(nb.IPXE.URL, " \t") {
			return KindMisconfigured, misconfiguredScript(in, "netboot.ipxe.url: spaces, quotes, backslashes and the characters $ & | are not allowed"), nil
		}
		return KindChain, chainScript(in, nb.IPXE.URL), nil
	}
	token, ok, err := h.cfg.Installs.Install(ctx, v.hw, iface.MAC)
	if err != nil {
		return "", "", err
	}
	if !ok {
		in.Reason = "no workflow run pending"
		return KindLocalDisk, localDiskScript(in), nil
	}
	if !validToken(token) {
		return "", "", fmt.Errorf("runner token %q: want 1 to 256 letters, digits and -._~", token)
	}
	in.Reason = "workflow run pending: installer"
	inst, problem := resolveInstaller(h.base, iface, v.settings, token)
	if problem != "" {
		in.Reason = "workflow run pending, installer misconfigured"
		return KindMisconfigured, misconfiguredScript(in, problem), nil
	}
	return KindInstaller, installerScript(in, inst), nil
}

func validToken(t string) bool {
	if t == "" || len(t) > 256 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0) {
			return false
		}
	}
	return true
}

func (h *Handler) binary(w http.ResponseWriter, r *http.Request, name string) {
	if h.binaries == nil {
		h.notFound.Add(1)
		http.NotFound(w, r)
		return
	}
	f, st, err := h.binaries.Open(name)
	if err != nil {
		h.notFound.Add(1)
		h.log.Debug().Err(err).Str("name", name).Msg("ipxe binary not served")
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, st.Name(), st.ModTime(), f)
}

func (h *Handler) installerFile(w http.ResponseWriter, r *http.Request) {
	if h.installer == nil {
		h.notFound.Add(1)
		http.NotFound(w, r)
		return
	}
	name := r.PathValue("path")
	f, st, err := h.installer.Open(name)
	if err != nil {
		h.notFound.Add(1)
		h.log.Debug().Err(err).Str("name", name).Msg("installer file not served")
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, st.Name(), st.ModTime(), f)
}

// WriteMetrics writes the counters in Prometheus text format (see the
// reconciler API's MetricsWriter).
func (h *Handler) WriteMetrics(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# HELP gitmetal_ipxe_scripts_total iPXE scripts served, by kind.\n# TYPE gitmetal_ipxe_scripts_total counter\n")
	for i, k := range kinds {
		fmt.Fprintf(&b, "gitmetal_ipxe_scripts_total{kind=%q} %d\n", k, h.scripts[i].Load())
	}
	fmt.Fprintf(&b, "# HELP gitmetal_ipxe_not_found_total iPXE requests for unknown machines or files.\n# TYPE gitmetal_ipxe_not_found_total counter\ngitmetal_ipxe_not_found_total %d\n", h.notFound.Load())
	_, err := io.WriteString(w, b.String())
	return err
}

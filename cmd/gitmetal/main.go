// Command gitmetal provisions bare-metal machines from a git repository.
//
// It is one binary: the daemon and the tools operators use beside it.
// Flags and GITMETAL_* environment variables are read here and nowhere else;
// every service gets an exported Config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gitmetal/gitmetal/agent"
	"github.com/gitmetal/gitmetal/agent/pid1"
	"github.com/gitmetal/gitmetal/boot/dhcp"
	"github.com/gitmetal/gitmetal/boot/ipxe"
	"github.com/gitmetal/gitmetal/hegel"
	"github.com/gitmetal/gitmetal/reconciler/store"
	"github.com/gitmetal/gitmetal/runner"
	"github.com/gitmetal/gitmetal/schema"
)

const usage = `gitmetal provisions bare-metal machines from a git repository.

Usage:
  gitmetal serve --repo URL|PATH [flags]        run the daemon (see gitmetal serve -h)
  gitmetal status [--server URL]                 show what the daemon applied, and the runs
  gitmetal logs [--server URL] [-f] RUN          print (or follow) a run's log
  gitmetal agent --server URL --token T --mac M  run this machine's workflow (the installer runs it as PID 1)
  gitmetal plan [--repo DIR] [BASE [HEAD]]       what a change would do, for PR review
  gitmetal validate [--format text|json] [DIR]   validate a fleet (default: .)
  gitmetal schema export DIR                     write the CUE schema for plain cue vet
  gitmetal import tinkerbell [--out DIR] FILE... convert Tinkerbell manifests into fleet files
  gitmetal version

Exit codes: 0 success, 1 invalid input, 2 usage or operational error.
`

// exitError carries an exit code to main; only main exits.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	if os.Getpid() == 1 {
		// The installer's /init: set the machine up and keep the agent
		// running. Never returns.
		pid1.Main(pid1.Config{Version: version()})
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	code := 2
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if ee == nil || ee.err != nil {
		fmt.Fprintln(os.Stderr, "gitmetal:", err)
	}
	os.Exit(code)
}

// errSilent is an exitError whose message was already printed.
func errSilent(code int) error { return &exitError{code: code} }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errSilent(2)
	}
	switch args[0] {
	case "agent":
		return cmdAgent(ctx, args[1:], stdout, stderr)
	case "serve":
		return cmdServe(ctx, args[1:], stdout, stderr)
	case "status":
		return cmdStatus(ctx, args[1:], stdout, stderr)
	case "logs":
		return cmdLogs(ctx, args[1:], stdout, stderr)
	case "plan":
		return cmdPlan(ctx, args[1:], stdout, stderr)
	case "validate":
		return cmdValidate(ctx, args[1:], stdout, stderr)
	case "schema":
		return cmdSchema(args[1:], stdout, stderr)
	case "import":
		return cmdImport(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "gitmetal", version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "gitmetal: unknown command %q\n\n%s", args[0], usage)
	return errSilent(2)
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// takes defaults from GITMETAL_* environment variables.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args; a flag not given on the command line takes the
// value of GITMETAL_<NAME> (upper case, '-' as '_') when set.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errSilent(0)
		}
		return errSilent(2)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := "GITMETAL_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := f.Value.Set(v); e != nil {
				err = &exitError{code: 2, err: fmt.Errorf("%s: %w", env, e)}
			}
		}
	})
	return err
}

func version() string {
	return "dev"
}

// The store serves every consumer's lookups.
var (
	_ dhcp.Backend   = (*store.Store)(nil)
	_ ipxe.Store     = (*store.Store)(nil)
	_ hegel.Store    = (*store.Store)(nil)
	_ runner.Store   = (*store.Store)(nil)
	_ ipxe.Installs  = (*runner.Runner)(nil)
	_ agent.Executor = (*agent.ActionsExecutor)(nil)
)

// checkSite refuses a --site value that cannot be a site's name (exit 2);
// empty means every site.
func checkSite(site string) error {
	if site != "" && !schema.ValidName(site) {
		return &exitError{code: 2, err: fmt.Errorf("--site %q: want a site name: lower-case letters, digits, '-', '_' and '.', at most 63 characters", site)}
	}
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/gitmetal/gitmetal/agent"
	"github.com/gitmetal/gitmetal/agent/actions"
	"github.com/gitmetal/gitmetal/runner/protocol"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

func cmdAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("agent", stderr)
	server := fs.String("server", "", "the runner's URL (gitmetal.server= on the installer's command line)")
	token := fs.String("token", "", "this boot's token (gitmetal.token=)")
	var macs stringList
	fs.Var(&macs, "mac", "this machine's MAC address (repeatable, or comma-separated)")
	allowReboot := fs.Bool("allow-reboot", false, "let kexec and reboot actions restart this machine")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *server == "" || *token == "" || len(macs) == 0 {
		fs.Usage()
		return errSilent(2)
	}
	log, err := newLogger(stderr, *logLevel, "console")
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	exec, err := agent.NewActionsExecutor(actions.Config{Log: log, AllowReboot: *allowReboot})
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{Server: *server, Token: *token, MACs: macs, Executor: exec, Log: log, Version: version()})
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	res, err := a.Run(ctx)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(res); err != nil {
		return err
	}
	if res.State != protocol.RunSuccess {
		return &exitError{code: 1, err: fmt.Errorf("run %s ended %s: %s", res.Run, res.State, res.Message)}
	}
	return nil
}

package runner

import (
	"context"
	"errors"
	"fmt"

	"github.com/gitmetal/gitmetal/runner/journal"
	"github.com/gitmetal/gitmetal/runner/protocol"
	"github.com/gitmetal/gitmetal/schema"
)

// Install says whether machine hw, booting from the interface with MAC
// mac, must load the installer: ok when it has a pending or running run.
// The token then goes on the installer's kernel command line
// (gitmetal.token=<token>); it is valid for Config.TokenTTL and only for
// this machine. Otherwise the machine boots its local disk — after a
// successful run in particular (Tinkerbell's toggleAllowNetboot), and the
// same in every boot path that asks.
//
// Install does not look at allowPXE: the boot services decide whether a
// machine may network-boot at all, then ask Install what it boots.
func (r *Runner) Install(ctx context.Context, hw *schema.Hardware, mac string) (token string, ok bool, err error) {
	if hw == nil {
		return "", false, errors.New("runner install: no hardware")
	}
	if err := ctx.Err(); err != nil {
		return "", false, err
	}
	var cur *journal.Summary
	err = r.j.View(func(tx *journal.Tx) error {
		active, err := tx.MachineActive(hw.Name)
		if err != nil {
			return err
		}
		cur = current(active)
		return nil
	})
	if err != nil {
		return "", false, fmt.Errorf("runner install %s: %w", hw.Name, err)
	}
	if cur == nil {
		return "", false, nil
	}
	r.log.Debug().Str("hardware", hw.Name).Str("mac", mac).Str("run", cur.ID).Msg("installer token issued")
	return r.issueToken(hw.Name, cur.ID, r.now().Add(r.cfg.TokenTTL)), true, nil
}

// current returns a machine's current run among its active runs (oldest
// first): the running one, else the oldest pending one, else nil.
func current(active []journal.Summary) *journal.Summary {
	var pending *journal.Summary
	for i := range active {
		run := &active[i]
		if run.State == protocol.RunRunning {
			return run
		}
		if pending == nil {
			pending = run
		}
	}
	return pending
}

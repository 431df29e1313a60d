package schema

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestUpdateEqualsLoad drives one loader with Update and another with Load
// through the same random edits of a fleet — valid and invalid ones,
// additions, removals, duplicates, renames — and checks that both give the
// same fleet or the same issues every time.
func TestUpdateEqualsLoad(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	cur := withFiles(nil)
	delete(cur, "gitmetal.cue") // settings changes go through Load anyway
	inc, full := newTestLoader(t), newTestLoader(t)
	if _, err := inc.Load(ctx, files(cur)); err != nil {
		t.Fatal(err)
	}

	machine := func(i, mac int, ip string) string {
		return fmt.Sprintf("hardware: {name: \"m%d\", interfaces: [{mac: \"52:54:00:00:01:%02x\", ip: %q}]}\n", i, mac, ip)
	}
	updates, loads := 0, 0
	for step := range 300 {
		var changed []string
		var removed []string
		for range 1 + rng.IntN(3) {
			i := rng.IntN(8)
			p := fmt.Sprintf("hardware/r%d/m%d.cue", i%2, i)
			switch rng.IntN(24) {
			case 0: // remove
				if _, ok := cur[p]; ok {
					delete(cur, p)
					removed = append(removed, p)
				}
				continue
			case 1: // a MAC or IP another machine may hold
				cur[p] = machine(i, rng.IntN(4), fmt.Sprintf("10.0.1.%d/24", rng.IntN(4)+1))
			case 2: // invalid
				cur[p] = strings.Replace(machine(i, i, "10.0.2.1/24"), "name: ", "name: \"X\", nome: ", 1)
			case 3: // a name another file holds
				cur[p] = machine(rng.IntN(8), 0x40+i, fmt.Sprintf("10.0.3.%d/24", i+1))
			default:
				cur[p] = machine(i, 0x20+i, fmt.Sprintf("10.0.4.%d/24", i+1))
			}
			changed = append(changed, p)
		}
		var ch []File
		for _, p := range slices.Compact(slices.Sorted(slices.Values(changed))) {
			if c, ok := cur[p]; ok {
				ch = append(ch, File{Path: p, Data: []byte(c)})
			}
		}
		got, gotErr := inc.Update(ctx, ch, removed)
		if errors.Is(gotErr, ErrNeedLoad) {
			loads++
			got, gotErr = inc.Load(ctx, files(cur))
		} else {
			updates++
		}
		want, wantErr := full.Load(ctx, files(cur))
		if diff := cmp.Diff(issueStrings(t, wantErr), issueStrings(t, gotErr)); diff != "" {
			t.Fatalf("step %d: issues differ (-load +update):\n%s", step, diff)
		}
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(Source{}, lineCol{})); diff != "" {
			t.Fatalf("step %d: fleets differ (-load +update):\n%s", step, diff)
		}
	}
	if updates < 50 {
		t.Errorf("only %d of 300 steps went through Update (%d loads): the test does not test it", updates, loads)
	}
}

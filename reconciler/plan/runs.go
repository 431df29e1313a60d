package plan

import (
	"strconv"

	"github.com/gitmetal/gitmetal/schema"
)

// trigger is a reason a run of a workflow may start.
type trigger struct {
	reason Reason
	detail string
}

// counts reports whether policy p starts a run for trigger reason r.
func counts(p schema.Policy, r Reason) bool {
	switch r {
	case ReasonGenerationBumped:
		return true
	case ReasonNewWorkflow, ReasonHardwareAdded, ReasonHardwareChanged:
		// A workflow on a machine it never ran on is new there.
		return p != schema.PolicyManual
	}
	// Rendered workflow changed, template added.
	return p == schema.PolicyOnChange
}

// policyOf returns the workflow's policy, onChange when unset (the
// schema's default; fleets built in Go may leave it empty).
func policyOf(w *schema.Workflow) schema.Policy {
	if w.Policy == "" {
		return schema.PolicyOnChange
	}
	return w.Policy
}

// policyNote says why policy p holds back a trigger.
func policyNote(p schema.Policy) string {
	if p == schema.PolicyManual {
		return "policy manual: runs only when generation is bumped"
	}
	return "policy once: does not re-run after a success"
}

// computeRuns decides, for every workflow of base and head, the runs that
// start, stop or are held back, keyed by machine name, each machine's runs
// sorted by workflow.
func computeRuns(base, head *schema.Fleet) map[string][]Run {
	out := map[string][]Run{}
	add := func(machine string, r Run) { out[machine] = append(out[machine], r) }
	for _, name := range unionKeys(base.Workflows, head.Workflows) {
		b, w := base.Workflows[name], head.Workflows[name]
		if w == nil {
			if !b.Suspend {
				add(b.Hardware, Run{Workflow: name, Template: b.Template, Policy: policyOf(b),
					Action: RunStop, Reason: ReasonWorkflowRemoved})
			}
			continue
		}
		run := Run{Workflow: name, Template: w.Template, Policy: policyOf(w)}
		if b != nil && !b.Suspend {
			switch {
			case b.Hardware != w.Hardware:
				r := run
				r.Template, r.Policy = b.Template, policyOf(b)
				r.Action, r.Reason, r.Detail = RunStop, ReasonHardwareChanged, b.Hardware+" → "+w.Hardware
				add(b.Hardware, r)
			case w.Suspend:
				r := run
				r.Action, r.Reason = RunStop, ReasonSuspended
				add(w.Hardware, r)
			}
		}

		var triggers []trigger
		switch {
		case b == nil:
			triggers = append(triggers, trigger{reason: ReasonNewWorkflow})
		case b.Hardware != w.Hardware:
			r := ReasonHardwareChanged
			if base.Hardware[w.Hardware] == nil {
				r = ReasonHardwareAdded
			}
			triggers = append(triggers, trigger{r, b.Hardware + " → " + w.Hardware})
		}
		if b != nil && b.Generation != w.Generation {
			triggers = append(triggers, trigger{ReasonGenerationBumped,
				strconv.Itoa(b.Generation) + " → " + strconv.Itoa(w.Generation)})
		}
		if b != nil && b.Hardware == w.Hardware {
			changed, diff, note := renderedDiff(base, head, b, w)
			if changed {
				t := trigger{reason: ReasonRenderedChanged}
				if b.Template != w.Template && base.Templates[w.Template] == nil {
					t = trigger{ReasonTemplateAdded, w.Template}
				}
				triggers = append(triggers, t)
				run.Changes = diff
				if note != "" {
					run.Note = note
				}
			}
		}

		if len(triggers) == 0 {
			if b != nil && b.Suspend && !w.Suspend && run.Policy != schema.PolicyManual {
				r := run
				r.Action, r.Reason = RunResume, ReasonResumed
				r.Note = "runs if the rendered workflow differs from its last successful run"
				if run.Policy == schema.PolicyOnce {
					r.Note = "runs if it has not succeeded yet"
				}
				add(w.Hardware, r)
			}
			continue
		}
		run.Action = RunSkip
		run.Reason, run.Detail = triggers[0].reason, triggers[0].detail
		for _, t := range triggers {
			if counts(run.Policy, t.reason) {
				run.Action = RunStart
				run.Reason, run.Detail = t.reason, t.detail
				break
			}
		}
		switch {
		case run.Note != "":
			// The head does not render: nothing can start.
			run.Action = RunSkip
		case run.Action == RunSkip:
			run.Note = policyNote(run.Policy)
		case w.Suspend:
			run.Action, run.Note = RunSkip, "suspended"
		}
		add(w.Hardware, run)
	}
	return out
}

// renderedDiff reports whether the rendered workflow of w on head differs
// from that of b on base, what differs, and a note when head does not
// render (a validated fleet always renders; a plan still must not panic).
func renderedDiff(base, head *schema.Fleet, b, w *schema.Workflow) (changed bool, diff []FieldChange, note string) {
	bt, ht := base.Templates[b.Template], head.Templates[w.Template]
	bh, hh := base.Hardware[b.Hardware], head.Hardware[w.Hardware]
	// The loader shares unchanged objects between fleets: when nothing the
	// render reads changed, neither did the digest, and a 10k-machine plan
	// renders only what the change touches.
	if b == w && bt == ht && bh == hh {
		return false, nil, ""
	}
	if ht == nil || hh == nil {
		return true, nil, "does not render: template or hardware missing"
	}
	hr, err := schema.Render(ht, w, hh)
	if err != nil {
		return true, nil, "does not render: " + err.Error()
	}
	var br *schema.Rendered
	if bt != nil && bh != nil {
		br, err = schema.Render(bt, b, bh)
	}
	if br == nil || err != nil {
		// The base never rendered, so no run of it can have succeeded.
		return true, nil, ""
	}
	if br.Digest == hr.Digest {
		return false, nil, ""
	}
	var c changes
	c.add("template", b.Template, w.Template)
	c.add("timeout", duration(br.Timeout), duration(hr.Timeout))
	diffActions(&c, br.Actions, hr.Actions)
	return true, c, ""
}

package plan

import (
	"strconv"

	"github.com/gitmetal/gitmetal/schema"
)

// diffSettings returns the changed repository settings, in schema order.
// Machines is left for Compute to count.
func diffSettings(old, cur *schema.Settings) []SettingChange {
	var c changes
	c.add(settingSite, old.Site, cur.Site)
	c.add(settingLeaseTime, old.LeaseTime, cur.LeaseTime)
	c.add(settingNameservers, old.Nameservers, cur.Nameservers)
	c.add(settingTimeservers, old.Timeservers, cur.Timeservers)
	c.add(settingDomain, old.Domain, cur.Domain)
	oi, ni := deref(old.Installer), deref(cur.Installer)
	c.add("installer.kernel", oi.Kernel, ni.Kernel)
	c.add("installer.initrd", oi.Initrd, ni.Initrd)
	c.add("installer.args", oi.Args, ni.Args)
	c.add("rollout.maxInFlight", old.Rollout.MaxInFlight, cur.Rollout.MaxInFlight)
	out := make([]SettingChange, len(c))
	for n, f := range c {
		out[n] = SettingChange{Field: f.Field, Old: f.Old, New: f.New}
	}
	return out
}

func diffTemplates(old, cur map[string]*schema.Template) []ObjectChange {
	out := []ObjectChange{}
	for _, name := range unionKeys(old, cur) {
		o, n := old[name], cur[name]
		switch {
		case o == nil:
			out = append(out, ObjectChange{Name: name, Status: StatusAdded})
		case n == nil:
			out = append(out, ObjectChange{Name: name, Status: StatusRemoved})
		case o != n:
			var c changes
			c.add("timeout", duration(o.Timeout), duration(n.Timeout))
			addMap(&c, "env", o.Env, n.Env)
			diffActions(&c, o.Actions, n.Actions)
			if len(c) > 0 {
				out = append(out, ObjectChange{Name: name, Status: StatusChanged, Changes: c})
			}
		}
	}
	return out
}

func diffWorkflows(old, cur map[string]*schema.Workflow) []ObjectChange {
	out := []ObjectChange{}
	for _, name := range unionKeys(old, cur) {
		o, n := old[name], cur[name]
		switch {
		case o == nil:
			out = append(out, ObjectChange{Name: name, Status: StatusAdded})
		case n == nil:
			out = append(out, ObjectChange{Name: name, Status: StatusRemoved})
		case o != n:
			var c changes
			c.add("hardware", o.Hardware, n.Hardware)
			c.add("template", o.Template, n.Template)
			addMap(&c, "values", o.Values, n.Values)
			c.add("policy", string(o.Policy), string(n.Policy))
			c.add("generation", o.Generation, n.Generation)
			c.add("suspend", o.Suspend, n.Suspend)
			if len(c) > 0 {
				out = append(out, ObjectChange{Name: name, Status: StatusChanged, Changes: c})
			}
		}
	}
	return out
}

// diffActions records what differs between two action lists: actions are
// matched by name, or by position when a list repeats a name.
func diffActions(c *changes, old, cur []schema.Action) {
	key := func(as []schema.Action, n int) string { return "actions[" + as[n].Name + "]" }
	if !uniqueNames(old) || !uniqueNames(cur) {
		key = func(_ []schema.Action, n int) string { return "actions[" + strconv.Itoa(n) + "]" }
	}
	olds := map[string]*schema.Action{}
	var oldOrder, curOrder []string
	for n := range old {
		k := key(old, n)
		olds[k] = &old[n]
		oldOrder = append(oldOrder, k)
	}
	curs := map[string]*schema.Action{}
	for n := range cur {
		k := key(cur, n)
		curs[k] = &cur[n]
		curOrder = append(curOrder, k)
	}
	// Order matters: the agent runs actions in sequence.
	if common(oldOrder, curs) != common(curOrder, olds) {
		c.add("actions", names(old), names(cur))
	}
	for _, k := range curOrder {
		o, n := olds[k], curs[k]
		if o == nil {
			c.add(k, nil, n)
			continue
		}
		diffStep(c, k+".", &o.Step, &n.Step)
		c.add(k+".onFailure", o.OnFailure, n.OnFailure)
	}
	for _, k := range oldOrder {
		if curs[k] == nil {
			c.add(k, olds[k], nil)
		}
	}
}

func diffStep(c *changes, p string, o, n *schema.Step) {
	c.add(p+"uses", o.Uses, n.Uses)
	addMap(c, p+"env", o.Env, n.Env)
	c.add(p+"args", o.Args, n.Args)
	c.add(p+"timeout", duration(o.Timeout), duration(n.Timeout))
	c.add(p+"retries", o.Retries, n.Retries)
	c.add(p+"background", o.Background, n.Background)
}

func uniqueNames(as []schema.Action) bool {
	seen := make(map[string]bool, len(as))
	for _, a := range as {
		if seen[a.Name] {
			return false
		}
		seen[a.Name] = true
	}
	return true
}

// common returns the keys of order that are in m, in order, as one string.
func common(order []string, m map[string]*schema.Action) string {
	out := ""
	for _, k := range order {
		if _, ok := m[k]; ok {
			out += k + "\x00"
		}
	}
	return out
}

func names(as []schema.Action) []string {
	out := make([]string, len(as))
	for n, a := range as {
		out[n] = a.Name
	}
	return out
}

// duration renders a duration for display; 0 is unset.
func duration(d schema.Duration) any {
	if d == 0 {
		return nil
	}
	return d.D().String()
}

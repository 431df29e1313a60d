package tinkerbell

import (
	"errors"
	"fmt"
	"strings"
	"text/template/parse"
)

// A Tinkerbell template is rendered with text/template over
//
//	.<key>     each key of the Workflow's hardwareMap
//	.Hardware  {Disks []string, Interfaces, UserData, VendorData, Metadata}
//	           with Go field names (.Hardware.Metadata.Instance.Hostname)
//	.hardware  the whole Hardware object as JSON (.hardware.spec.disks)
//	.references
//
// and gitmetal's with
//
//	.values    the workflow's values (the hardwareMap, imported)
//	.disks     [{device}]
//	.hardware  the machine with the field names of its gitmetal file
//
// so each action ({{...}}) is parsed and its field chains rewritten where
// one maps onto the other. What has no clear equivalent is kept as written,
// with a note saying why: gitmetal then reports it when the workflow does
// not render, rather than the import guessing.

// span is the byte range of one action in template text.
type span struct{ start, end int }

// findActions returns the actions ({{...}}) of text, skipping over Go
// string and character literals and comments inside them.
func findActions(text string) ([]span, error) {
	var spans []span
	for i := 0; ; {
		j := strings.Index(text[i:], "{{")
		if j < 0 {
			return spans, nil
		}
		start := i + j
		end, err := actionEnd(text, start+2)
		if err != nil {
			return spans, &offsetError{off: start, err: err}
		}
		spans = append(spans, span{start, end})
		i = end
	}
}

// offsetError is an error at a byte offset of template text.
type offsetError struct {
	off int
	err error
}

func (e *offsetError) Error() string { return e.err.Error() }
func (e *offsetError) Unwrap() error { return e.err }

// actionEnd returns the offset just past the "}}" that closes the action
// whose body starts at i.
func actionEnd(text string, i int) (int, error) {
	k := i
	if strings.HasPrefix(text[k:], "- ") || strings.HasPrefix(text[k:], "-\t") || strings.HasPrefix(text[k:], "-\n") {
		k += 2
	}
	k += len(text[k:]) - len(strings.TrimLeft(text[k:], " \t\r\n"))
	if strings.HasPrefix(text[k:], "/*") {
		e := strings.Index(text[k+2:], "*/")
		if e < 0 {
			return 0, errors.New("unclosed comment in template action")
		}
		i = k + 2 + e + 2
	}
	for ; i < len(text); i++ {
		switch text[i] {
		case '"', '\'', '`':
			q := text[i]
			for i++; i < len(text) && text[i] != q; i++ {
				if text[i] == '\\' && q != '`' {
					i++
				}
			}
		case '}':
			if strings.HasPrefix(text[i:], "}}") {
				return i + 2, nil
			}
		}
	}
	return 0, errors.New("unclosed template action: {{ without }}")
}

// rewriteAction rewrites one action for gitmetal's render data. It returns
// the action as it stays, and notes on what was kept as written.
func rewriteAction(src string) (string, []string, error) {
	inner := src[2 : len(src)-2]
	ltrim, rtrim := false, false
	if len(inner) >= 2 && inner[0] == '-' && isSpace(inner[1]) {
		ltrim, inner = true, inner[1:]
	}
	if len(inner) >= 2 && inner[len(inner)-1] == '-' && isSpace(inner[len(inner)-2]) {
		rtrim, inner = true, inner[:len(inner)-1]
	}
	body := strings.TrimSpace(inner)
	if body == "" {
		return "", nil, fmt.Errorf("%s: empty template action", src)
	}
	if strings.HasPrefix(body, "/*") {
		return src, nil, nil
	}
	word, _, _ := strings.Cut(body, " ")
	switch word {
	case "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue":
		return "", nil, fmt.Errorf("%s: template control structures ({{%s}}) cannot be converted; rewrite this part of the template by hand", src, word)
	}

	t := parse.New("action")
	t.Mode = parse.SkipFuncCheck
	if _, err := t.Parse(src, "", "", map[string]*parse.Tree{}); err != nil {
		return "", nil, fmt.Errorf("%s: invalid template action: %w", src, err)
	}
	if len(t.Root.Nodes) != 1 {
		return "", nil, fmt.Errorf("%s: want one template action", src)
	}
	act, ok := t.Root.Nodes[0].(*parse.ActionNode)
	if !ok {
		return "", nil, fmt.Errorf("%s: template control structures cannot be converted; rewrite this part of the template by hand", src)
	}
	r := &rewriter{src: src, made: map[*parse.ChainNode]bool{}}
	r.pipe(act.Pipe)
	if !r.changed {
		return src, r.notes, nil
	}
	var b strings.Builder
	b.WriteString("{{")
	switch {
	case ltrim:
		b.WriteString("- ")
	case isSpace(inner[0]):
		b.WriteString(" ")
	}
	b.WriteString(act.Pipe.String())
	switch {
	case rtrim:
		b.WriteString(" -")
	case isSpace(inner[len(inner)-1]):
		b.WriteString(" ")
	}
	b.WriteString("}}")
	out := b.String()
	// The printer and parser are the standard library's; a failure here
	// is a bug in the rewrite, not in the input.
	check := parse.New("check")
	check.Mode = parse.SkipFuncCheck
	if _, err := check.Parse(out, "", "", map[string]*parse.Tree{}); err != nil {
		return "", nil, fmt.Errorf("%s: rewritten as %s, which does not parse: %w", src, out, err)
	}
	return out, r.notes, nil
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\r' || b == '\n' }

type rewriter struct {
	src     string
	changed bool
	notes   []string
	// made holds the chains the rewrite built, which may lose the
	// parentheses around them.
	made map[*parse.ChainNode]bool
}

func (r *rewriter) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf("%s kept as written: ", r.src)+fmt.Sprintf(format, args...))
}

func (r *rewriter) pipe(p *parse.PipeNode) {
	for _, cmd := range p.Cmds {
		r.command(cmd)
	}
}

func (r *rewriter) command(cmd *parse.CommandNode) {
	if fn, ok := cmd.Args[0].(*parse.IdentifierNode); ok {
		switch {
		case fn.Ident == "index" && len(cmd.Args) == 3 && isLegacyDisks(cmd.Args[1]):
			// .Hardware.Disks holds device paths, .disks {device} objects:
			// index .Hardware.Disks 0 → (index .disks 0).device
			setDisks(cmd.Args[1])
			cmd.Args[2] = r.arg(cmd.Args[2])
			inner := &parse.CommandNode{NodeType: parse.NodeCommand, Args: cmd.Args}
			chain := &parse.ChainNode{
				NodeType: parse.NodeChain,
				Node:     &parse.PipeNode{NodeType: parse.NodePipe, Cmds: []*parse.CommandNode{inner}},
				Field:    []string{"device"},
			}
			r.made[chain] = true
			cmd.Args = []parse.Node{chain}
			r.changed = true
			return
		case fn.Ident == "len" && len(cmd.Args) == 2 && isLegacyDisks(cmd.Args[1]):
			setDisks(cmd.Args[1])
			r.changed = true
			return
		case !isGitmetalFunc(fn.Ident):
			r.note("function %s does not exist in gitmetal templates (Go's built-in functions and formatPartition do)", fn.Ident)
		}
	}
	for i, a := range cmd.Args {
		cmd.Args[i] = r.arg(a)
	}
}

func (r *rewriter) arg(n parse.Node) parse.Node {
	switch x := n.(type) {
	case *parse.FieldNode:
		x.Ident = r.field(x.Ident)
	case *parse.VariableNode:
		if x.Ident[0] == "$" {
			if len(x.Ident) == 1 {
				r.note("$ is all of Tinkerbell's render data, which gitmetal's does not match")
				break
			}
			x.Ident = append([]string{"$"}, r.field(x.Ident[1:])...)
		}
	case *parse.ChainNode:
		x.Node = r.arg(x.Node)
	case *parse.PipeNode:
		r.pipe(x)
		// (index .Hardware.Disks 0) as an argument: drop the parentheses
		// that would now be doubled.
		if len(x.Decl) == 0 && len(x.Cmds) == 1 && len(x.Cmds[0].Args) == 1 {
			if ch, ok := x.Cmds[0].Args[0].(*parse.ChainNode); ok && r.made[ch] {
				return ch
			}
		}
	case *parse.DotNode:
		r.note(". is all of Tinkerbell's render data, which gitmetal's does not match")
	}
	return n
}

// field maps a field chain of Tinkerbell's render data onto gitmetal's.
func (r *rewriter) field(id []string) []string {
	out, ok := mapField(id)
	if !ok {
		r.note("gitmetal's render data (.hardware, .disks, .values) has no clear equivalent of .%s", strings.Join(id, "."))
		return id
	}
	r.changed = true
	return out
}

func mapField(id []string) ([]string, bool) {
	switch id[0] {
	case "Hardware":
		if len(id) < 2 {
			return nil, false
		}
		switch id[1] {
		case "Disks":
			if len(id) == 2 {
				// Elements are {device} objects now; index and len are
				// rewritten before they get here.
				return []string{"disks"}, true
			}
		case "UserData":
			if len(id) == 2 {
				return []string{"hardware", "userData"}, true
			}
		case "VendorData":
			if len(id) == 2 {
				return []string{"hardware", "vendorData"}, true
			}
		case "Metadata":
			// gitmetal's metadata is Tinkerbell's spec.metadata as written,
			// that is with the JSON names of its Go fields.
			out := []string{"hardware", "metadata"}
			for _, f := range id[2:] {
				j := metadataJSONName(f)
				if j == "" {
					return nil, false
				}
				out = append(out, j)
			}
			return out, true
		}
		return nil, false
	case "hardware":
		switch {
		case len(id) >= 3 && id[1] == "spec" && (id[2] == "userData" || id[2] == "vendorData" || id[2] == "metadata"):
			return append([]string{"hardware"}, id[2:]...), true
		case len(id) >= 3 && id[1] == "spec" && id[2] == "disks":
			return append([]string{"disks"}, id[3:]...), true
		case len(id) == 3 && id[1] == "metadata" && id[2] == "name":
			return []string{"hardware", "name"}, true
		case len(id) >= 3 && id[1] == "metadata" && id[2] == "labels":
			return append([]string{"hardware", "labels"}, id[3:]...), true
		}
		return nil, false
	case "references":
		return nil, false
	}
	// Anything else is a key of the Workflow's hardwareMap, imported as
	// the workflow's values.
	return append([]string{"values"}, id...), true
}

func isLegacyDisks(n parse.Node) bool {
	switch x := n.(type) {
	case *parse.FieldNode:
		return len(x.Ident) == 2 && x.Ident[0] == "Hardware" && x.Ident[1] == "Disks"
	case *parse.VariableNode:
		return len(x.Ident) == 3 && x.Ident[0] == "$" && x.Ident[1] == "Hardware" && x.Ident[2] == "Disks"
	}
	return false
}

func setDisks(n parse.Node) {
	switch x := n.(type) {
	case *parse.FieldNode:
		x.Ident = []string{"disks"}
	case *parse.VariableNode:
		x.Ident = []string{"$", "disks"}
	}
}

// isGitmetalFunc reports whether gitmetal's renderer (schema.Render) knows
// the function: text/template's built-ins and formatPartition.
func isGitmetalFunc(name string) bool {
	switch name {
	case "and", "call", "html", "index", "slice", "js", "len", "not", "or",
		"print", "printf", "println", "urlquery",
		"eq", "ge", "gt", "le", "lt", "ne",
		"formatPartition":
		return true
	}
	return false
}

// metadataJSONName returns the JSON name of a Go field of Tinkerbell's
// HardwareMetadata and the types under it, or "".
func metadataJSONName(goName string) string {
	switch goName {
	case "State":
		return "state"
	case "BondingMode":
		return "bonding_mode"
	case "Manufacturer":
		return "manufacturer"
	case "Instance":
		return "instance"
	case "Custom":
		return "custom"
	case "Facility":
		return "facility"
	case "ID":
		return "id"
	case "Slug":
		return "slug"
	case "Hostname":
		return "hostname"
	case "AllowPxe":
		return "allow_pxe"
	case "Rescue":
		return "rescue"
	case "OperatingSystem":
		return "operating_system"
	case "AlwaysPxe":
		return "always_pxe"
	case "IpxeScriptURL":
		return "ipxe_script_url"
	case "Ips":
		return "ips"
	case "Userdata":
		return "userdata"
	case "CryptedRootPassword":
		return "crypted_root_password"
	case "Tags":
		return "tags"
	case "Storage":
		return "storage"
	case "SSHKeys":
		return "ssh_keys"
	case "NetworkReady":
		return "network_ready"
	case "Distro":
		return "distro"
	case "Version":
		return "version"
	case "ImageTag":
		return "image_tag"
	case "OsSlug":
		return "os_slug"
	case "Address":
		return "address"
	case "Netmask":
		return "netmask"
	case "Gateway":
		return "gateway"
	case "Family":
		return "family"
	case "Public":
		return "public"
	case "Management":
		return "management"
	case "Disks":
		return "disks"
	case "Raid":
		return "raid"
	case "Filesystems":
		return "filesystems"
	case "Device":
		return "device"
	case "WipeTable":
		return "wipe_table"
	case "Partitions":
		return "partitions"
	case "Label":
		return "label"
	case "Number":
		return "number"
	case "Size":
		return "size"
	case "Start":
		return "start"
	case "TypeGUID":
		return "type_guid"
	case "Name":
		return "name"
	case "Level":
		return "level"
	case "Devices":
		return "devices"
	case "Spare":
		return "spare"
	case "Mount":
		return "mount"
	case "Format":
		return "format"
	case "Files":
		return "files"
	case "Create":
		return "create"
	case "Point":
		return "point"
	case "Path":
		return "path"
	case "Contents":
		return "contents"
	case "Mode":
		return "mode"
	case "UID":
		return "uid"
	case "GID":
		return "gid"
	case "Force":
		return "force"
	case "Options":
		return "options"
	case "PreinstalledOperatingSystemVersion":
		return "preinstalled_operating_system_version"
	case "PrivateSubnets":
		return "private_subnets"
	case "PlanSlug":
		return "plan_slug"
	case "PlanVersionSlug":
		return "plan_version_slug"
	case "FacilityCode":
		return "facility_code"
	}
	return ""
}

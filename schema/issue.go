package schema

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"cuelang.org/go/cue"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/token"
)

// Issue is one problem found in a repository: where, which field, and what
// is wrong (with what would have been allowed).
type Issue struct {
	Position
	// Field is the CUE path of the offending field, e.g.
	// "hardware.interfaces.0.mac"; empty for whole-file problems.
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func (i Issue) String() string {
	if i.Field == "" {
		return i.Position.String() + ": " + i.Message
	}
	return i.Position.String() + ": " + i.Field + ": " + i.Message
}

// Errors is the error the loader returns for an invalid repository: every
// issue of every file, sorted by file, line and column.
type Errors []Issue

func (e Errors) Error() string {
	var b strings.Builder
	for n, i := range e {
		if n > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(i.String())
	}
	return b.String()
}

func sortIssues(issues []Issue) {
	slices.SortStableFunc(issues, func(a, b Issue) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Column, b.Column),
			cmp.Compare(a.Message, b.Message),
		)
	})
}

// patternHelp says in words what the schema's regular expressions allow, so
// an error names what was allowed instead of quoting a regular expression.
// Keys are definition names in defs.cue.
var patternHelp = [...]struct{ def, help string }{
	{"#Name", "a name of lower-case letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most 63 characters"},
	{"#MAC", "a MAC address of 6 hex octets such as 52:54:00:12:34:56"},
	{"#IPv4Prefix", "an IPv4 address with a prefix length such as 10.0.0.5/24"},
	{"#Netmask", "a contiguous IPv4 netmask such as 255.255.255.0"},
	{"#Hostname", "a lower-case DNS name such as node-1.example.com"},
	{"#Duration", "whole seconds or a duration such as \"90s\", \"10m\", \"1h30m\""},
	{"#URL", "an http://, https:// or tftp:// URL"},
	{"#SSHKey", "an OpenSSH public key such as \"ssh-ed25519 AAAA... user@host\""},
	{"#EnvName", "an environment variable name of letters, digits and '_'"},
}

// helpTable maps the quoted text of a schema regular expression, as CUE
// prints it in messages, to words.
type helpTable map[string]string

// newHelpTable reads the regular expressions of the definitions in
// patternHelp out of the schema source.
func newHelpTable(defsSrc string) helpTable {
	t := make(helpTable, len(patternHelp))
	for _, p := range patternHelp {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(p.def) + `:.*?=~("(?:[^"\\]|\\.)*")`)
		if m := re.FindStringSubmatch(defsSrc); m != nil {
			t[m[1]] = p.help
		}
	}
	return t
}

var (
	outOfBoundRE   = regexp.MustCompile(`\(out of bound =~("(?:[^"\\]|\\.)*")\)`)
	disjunctionRE  = regexp.MustCompile(`^\d+ errors in empty disjunction`)
	mismatchedRE   = regexp.MustCompile(` \(mismatched types [^)]*\)$`)
	invalidValueRE = regexp.MustCompile(`^invalid value (.+?) \((.*)\)$`)
)

// cueIssues turns a CUE evaluation error into issues positioned in the
// user's file, one per field. CUE reports a disjunction failure as a header
// followed by one conflict per alternative; those are folded into one issue
// that lists the allowed alternatives.
func cueIssues(err error, file string, user cue.Value, help helpTable) []Issue {
	type group struct {
		issue   Issue
		msgs    []string
		allowed []string // non-nil for a failed disjunction
		header  string   // CUE's own line for a failed disjunction
	}
	var groups []*group
	byField := map[string]*group{}
	for _, e := range cueerrors.Errors(err) {
		field := strings.Join(e.Path(), ".")
		format, args := e.Msg()
		msg := fmt.Sprintf(format, args...)
		g, ok := byField[field]
		if !ok {
			g = &group{issue: Issue{Position: issuePos(e, file, user), Field: field}}
			byField[field] = g
			groups = append(groups, g)
		}
		if disjunctionRE.MatchString(msg) {
			g.allowed = []string{}
			g.header = msg
			continue
		}
		if g.allowed != nil {
			// An alternative of a failed disjunction: keep what it allowed.
			if a, ok := alternative(msg, userLiteral(user, field), help); ok {
				g.allowed = append(g.allowed, a)
				continue
			}
		}
		if m := describe(msg, help); !slices.Contains(g.msgs, m) {
			g.msgs = append(g.msgs, m)
		}
	}
	issues := make([]Issue, 0, len(groups))
	for _, g := range groups {
		msgs := g.msgs
		if len(g.allowed) > 0 {
			if slices.Contains(g.allowed, "bool") {
				// A boolean with a default shows up as bool and its default.
				g.allowed = slices.DeleteFunc(g.allowed, func(a string) bool { return a == "true" || a == "false" })
			}
			slices.Sort(g.allowed)
			g.allowed = slices.Compact(g.allowed)
			msgs = append([]string{fmt.Sprintf("invalid value %s (allowed: %s)",
				userLiteral(user, g.issue.Field), strings.Join(g.allowed, " | "))}, msgs...)
		}
		if len(msgs) == 0 && g.header != "" {
			// A disjunction whose alternatives CUE did not list.
			msgs = []string{g.header}
		}
		g.issue.Message = strings.Join(msgs, "; ")
		if g.issue.Message == "" {
			g.issue.Message = "invalid value"
		}
		issues = append(issues, g.issue)
	}
	return issues
}

// userLiteral returns the user's value at a dotted path as CUE prints it.
func userLiteral(user cue.Value, field string) string {
	if field == "" {
		return ""
	}
	v := user.LookupPath(cuePath(field))
	if !v.Exists() {
		return ""
	}
	return fmt.Sprint(v)
}

// alternative extracts what one alternative of a disjunction allowed from
// CUE's message about it: "conflicting values A and B" names the user's
// value and the alternative in either order.
func alternative(msg, got string, help helpTable) (string, bool) {
	if m := invalidValueRE.FindStringSubmatch(msg); m != nil {
		return describeBound(m[2], help), true
	}
	body, ok := strings.CutPrefix(msg, "conflicting values ")
	if !ok {
		return "", false
	}
	body = mismatchedRE.ReplaceAllString(body, "")
	for i := 0; ; {
		j := strings.Index(body[i:], " and ")
		if j < 0 {
			return "", false
		}
		left, right := body[:i+j], body[i+j+len(" and "):]
		switch got {
		case left:
			return right, true
		case right:
			return left, true
		}
		i += j + 1
	}
}

// describe rewrites a CUE message so that a regular-expression bound is
// named in words.
func describe(msg string, help helpTable) string {
	return outOfBoundRE.ReplaceAllStringFunc(msg, func(s string) string {
		m := outOfBoundRE.FindStringSubmatch(s)
		if h, ok := help[m[1]]; ok {
			return "(want " + h + ")"
		}
		return s
	})
}

func describeBound(bound string, help helpTable) string {
	if b, ok := strings.CutPrefix(bound, "out of bound "); ok {
		if re, ok := strings.CutPrefix(b, "=~"); ok {
			if h, ok := help[re]; ok {
				return h
			}
		}
		return b
	}
	return bound
}

// issuePos finds the position of an error in the user's file. CUE lists the
// schema's positions too; when the user's file is not among them (a missing
// required field, a rule of the schema), the closest existing field of the
// user's value at the error's path stands in.
func issuePos(e cueerrors.Error, file string, user cue.Value) Position {
	for _, p := range append([]token.Pos{e.Position()}, e.InputPositions()...) {
		if p.IsValid() && p.Filename() == file {
			return Position{File: file, Line: p.Line(), Column: p.Column()}
		}
	}
	path := e.Path()
	for n := len(path); n > 0; n-- {
		if v := user.LookupPath(cuePath(strings.Join(path[:n], "."))); v.Exists() {
			if p := valuePos(v); p.IsValid() && p.Filename() == file {
				return Position{File: file, Line: p.Line(), Column: p.Column()}
			}
		}
	}
	return Position{File: file, Line: 1, Column: 1}
}

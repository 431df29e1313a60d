package tinkerbell

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/format"
	"cuelang.org/go/cue/literal"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"
	cuejson "cuelang.org/go/encoding/json"
)

// commentWidth is where header comments wrap.
const commentWidth = 78

// encode returns the CUE file `<kind>: <value>` with notes as its header
// comment, formatted as `cue fmt` would. Map keys come out sorted, struct
// fields in declaration order.
func encode(kind string, value any, notes []string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep <, > and & readable in CUE strings
	if err := enc.Encode(value); err != nil {
		return nil, err
	}
	expr, err := cuejson.Extract(kind+".json", buf.Bytes())
	if err != nil {
		return nil, err
	}
	layout(expr)
	field := &ast.Field{Label: ast.NewIdent(kind), Value: expr}
	doc := &ast.CommentGroup{Doc: true}
	for i, note := range notes {
		if i > 0 {
			doc.List = append(doc.List, &ast.Comment{Text: "//"})
		}
		for _, line := range wrap(note, commentWidth-3) {
			doc.List = append(doc.List, &ast.Comment{Text: "// " + line})
		}
	}
	ast.AddComment(field, doc)
	out, err := format.Node(&ast.File{Decls: []ast.Decl{field}})
	if err != nil {
		return nil, err
	}
	return indentMultiline(out)
}

// layout puts every field of a struct on a line of its own and keeps lists
// on one line, but for the structs in them. (The JSON extractor inlines
// small structs.)
func layout(n ast.Node) {
	ast.Walk(n, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.StructLit:
			for _, e := range x.Elts {
				ast.SetRelPos(e, token.Newline)
			}
			x.Lbrace = x.Lbrace.WithRel(token.Blank)
			x.Rbrace = x.Rbrace.WithRel(token.Newline)
		case *ast.ListLit:
			for _, e := range x.Elts {
				ast.SetRelPos(e, token.NoRelPos)
			}
			x.Rbrack = x.Rbrack.WithRel(token.NoRelPos)
		}
		return true
	}, nil)
}

// indentMultiline re-indents every multi-line string one tab deeper than
// the line it starts on, as people write them. (The JSON extractor indents
// by nesting depth, which a list of structs, printed "[{", overstates.)
func indentMultiline(src []byte) ([]byte, error) {
	f, err := parser.ParseFile("out.cue", src, parser.ParseComments)
	if err != nil {
		return nil, fmt.Errorf("reparse: %w", err)
	}
	lines := bytes.Split(src, []byte("\n"))
	changed := false
	var werr error
	ast.Walk(f, func(n ast.Node) bool {
		lit, ok := n.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING || !strings.HasPrefix(lit.Value, `"""`) {
			return true
		}
		s, err := literal.Unquote(lit.Value)
		if err != nil {
			werr = err
			return false
		}
		line := lines[lit.Pos().Line()-1]
		tabs := len(line) - len(bytes.TrimLeft(line, "\t"))
		if q := literal.String.WithTabIndent(tabs + 1).Quote(s); q != lit.Value {
			lit.Value, changed = q, true
		}
		return true
	}, nil)
	if werr != nil {
		return nil, werr
	}
	if !changed {
		return src, nil
	}
	return format.Node(f)
}

// wrap splits text into lines of at most width bytes at spaces; a word
// longer than width gets a line of its own.
func wrap(text string, width int) []string {
	var lines []string
	var cur strings.Builder
	for _, w := range strings.Fields(text) {
		if cur.Len() > 0 && cur.Len()+1+len(w) > width {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(w)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}

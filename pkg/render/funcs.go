package render

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// baseFuncs are the functions of the first-stage script; it has no
// snippets, so no include.
func baseFuncs() template.FuncMap {
	return template.FuncMap{
		"b64":     b64,
		"cidr":    cidr,
		"dataurl": dataURL,
		"default": defaultValue,
		"fail":    fail,
		"indent":  indent,
		"join":    join,
		// Quoting for the context a value lands in (quote.go). quote is
		// the older name of yamlq and stays for operators' templates.
		"quote":      quote,
		"yamlq":      quote,
		"yaml":       yamlValue,
		"json":       yamlValue,
		"shq":        shq,
		"systemd":    systemdValue,
		"systemdq":   systemdq,
		"systemdenv": systemdEnv,
	}
}

// finalFuncs adds include, which renders a named template of root into a
// string so its output can be piped (into dataurl for Ignition file
// contents, into indent for YAML blocks).
func finalFuncs(root *template.Template) template.FuncMap {
	m := baseFuncs()
	m["include"] = func(name string, data interface{}) (string, error) {
		t := root.Lookup(name)
		if t == nil {
			return "", fmt.Errorf("include: no template %q", name)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", err
		}
		// Strip here, not only at the end of the render: include's output
		// is usually encoded (dataurl) before it reaches the final buffer.
		return string(stripNoValue(buf.Bytes())), nil
	}
	return m
}

// b64 is standard base64 of a string.
func b64(v interface{}) string { return base64.StdEncoding.EncodeToString([]byte(str(v))) }

// str formats a template value as text. nil, which is what a missing
// templates_env key evaluates to, is the empty string, as it is when
// printed directly.
func str(v interface{}) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	default:
		return fmt.Sprint(v)
	}
}

// dataURL encodes s as an RFC 2397 data URL with percent-encoding, the form
// Ignition takes for file contents. Plain text stays mostly readable in
// the JSON, which base64 would not.
func dataURL(v interface{}) string {
	s := str(v)
	var b strings.Builder
	b.WriteString("data:,")
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isDataURLSafe(c) {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// isDataURLSafe is RFC 2396's unreserved and reserved characters minus '%',
// which data URL decoders take literally.
func isDataURLSafe(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_.!~*'()/:=,;@+&$?", c) >= 0
}

// defaultValue returns v unless it is empty (missing, nil, "", 0, false,
// an empty list or map), then def. Argument order follows the usual
// {{.TemplatesEnv.x | default "y"}} pipeline.
func defaultValue(def, v interface{}) interface{} {
	if isEmpty(v) {
		return def
	}
	return v
}

func isEmpty(v interface{}) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String, reflect.Slice, reflect.Map, reflect.Array:
		return rv.Len() == 0
	case reflect.Pointer, reflect.Interface:
		return rv.IsNil()
	}
	return rv.IsZero()
}

// fail stops the render with the template author's message, for
// configurations a template cannot handle.
func fail(msg string) (string, error) { return "", errors.New(msg) }

// indent prefixes every non-empty line of s, the first included, with n
// spaces, for placing a multi-line value inside a YAML block.
func indent(n int, v interface{}) string {
	s := str(v)
	pad := strings.Repeat(" ", n)
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			b.WriteString(pad)
		}
		b.WriteString(l)
	}
	return b.String()
}

// join joins a list with sep. templates_env lists arrive as []interface{}
// from YAML, so any slice is accepted and each element formatted.
func join(sep string, list interface{}) (string, error) {
	if list == nil {
		return "", nil
	}
	rv := reflect.ValueOf(list)
	if rv.Kind() == reflect.String {
		return rv.String(), nil
	}
	if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
		return "", fmt.Errorf("join: want a list, got %T", list)
	}
	parts := make([]string, rv.Len())
	for i := range parts {
		parts[i] = fmt.Sprint(rv.Index(i).Interface())
	}
	return strings.Join(parts, sep), nil
}

// cidr joins an address and a network size to "addr/prefix". size may be a
// prefix length ("24", "/24") or a dotted mask ("255.255.255.0"); empty
// means 24, the size of nearly every provisioning LAN.
func cidr(addr interface{}, size interface{}) (string, error) {
	a := strings.TrimSpace(str(addr))
	ip := net.ParseIP(a)
	if ip == nil {
		return "", fmt.Errorf("cidr: %q is not an IP address", a)
	}
	sz := strings.TrimPrefix(strings.TrimSpace(str(size)), "/")
	if sz == "" {
		sz = "24"
	}
	bits := 32
	if ip.To4() == nil {
		bits = 128
	}
	if n, err := strconv.Atoi(sz); err == nil {
		if n < 0 || n > bits {
			return "", fmt.Errorf("cidr: prefix length %d out of range", n)
		}
		return fmt.Sprintf("%s/%d", ip, n), nil
	}
	m := net.ParseIP(sz)
	if m == nil || m.To4() == nil {
		return "", fmt.Errorf("cidr: %q is neither a prefix length nor a netmask", sz)
	}
	ones, total := net.IPMask(m.To4()).Size()
	if total == 0 {
		return "", fmt.Errorf("cidr: %q is not a contiguous netmask", sz)
	}
	return fmt.Sprintf("%s/%d", ip, ones), nil
}

// checkReferences walks every parse tree of the set and reports names used
// with {{template}} or include that nothing defines, an include whose name
// is not a constant, and include cycles. text/template bounds recursion
// through {{template}}, but include starts a fresh execution each time, so a
// cycle through it would recurse until the stack overflows: a crash, not an
// error. Rejecting it at parse time keeps renders finite.
func checkReferences(root *template.Template) error {
	edges := map[string][]ref{}
	var errs []error
	for _, t := range root.Templates() {
		if t.Tree == nil || t.Tree.Root == nil {
			continue
		}
		name := t.Name()
		walk(t.Tree.Root, func(r ref) { edges[name] = append(edges[name], r) }, func(err error) {
			errs = append(errs, fmt.Errorf("template %q: %w", name, err))
		})
	}
	for from, refs := range edges {
		for _, r := range refs {
			if root.Lookup(r.name) == nil {
				errs = append(errs, fmt.Errorf("template %q uses %q, which no template or snippet defines", from, r.name))
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for from, refs := range edges {
		for _, r := range refs {
			if r.include && reaches(edges, r.name, from, map[string]bool{}) {
				return fmt.Errorf("template %q includes %q, which leads back to it: include cannot recurse", from, r.name)
			}
		}
	}
	return nil
}

type ref struct {
	name    string
	include bool
}

func reaches(edges map[string][]ref, from, to string, seen map[string]bool) bool {
	if from == to {
		return true
	}
	if seen[from] {
		return false
	}
	seen[from] = true
	for _, r := range edges[from] {
		if reaches(edges, r.name, to, seen) {
			return true
		}
	}
	return false
}

func walk(n parse.Node, found func(ref), bad func(error)) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			walk(c, found, bad)
		}
	case *parse.ActionNode:
		walk(n.Pipe, found, bad)
	case *parse.IfNode:
		walkBranch(&n.BranchNode, found, bad)
	case *parse.RangeNode:
		walkBranch(&n.BranchNode, found, bad)
	case *parse.WithNode:
		walkBranch(&n.BranchNode, found, bad)
	case *parse.TemplateNode:
		found(ref{name: n.Name})
		walk(n.Pipe, found, bad)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			walk(c, found, bad)
		}
	case *parse.CommandNode:
		if id, ok := n.Args[0].(*parse.IdentifierNode); ok && id.Ident == "include" {
			if len(n.Args) < 2 {
				bad(errors.New("include needs a template name"))
			} else if s, ok := n.Args[1].(*parse.StringNode); ok {
				found(ref{name: s.Text, include: true})
			} else {
				bad(fmt.Errorf("include %s: the template name must be a quoted constant", n.Args[1]))
			}
		}
		for _, a := range n.Args {
			walk(a, found, bad)
		}
	case *parse.ChainNode:
		walk(n.Node, found, bad)
	}
}

func walkBranch(b *parse.BranchNode, found func(ref), bad func(error)) {
	walk(b.Pipe, found, bad)
	walk(b.List, found, bad)
	if b.ElseList != nil {
		walk(b.ElseList, found, bad)
	}
}

// Package compliance runs declarative compliance profiles against container
// root filesystems without executing anything in them: InSpec-style
// resources that read files (file, directory, parse_config, json, yaml,
// passwd, group, os_release), the package inventory and the scan's findings
// (packages, no_shell, no_package_manager, no_findings) and the container's
// OCI runtime facts (container). Results become CONTROL_RESULT findings and
// HDF (InSpec exec-json) reports that Heimdall and the SAF CLI read.
//
// Profiles are YAML (see profile.schema.json and docs/compliance.md); a bad
// profile is reported with file and line. Evaluation never panics on hostile
// container content: a resource that cannot be read yields status "error".
package compliance

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Profile is a parsed compliance profile.
type Profile struct {
	Name       string
	Version    string
	Title      string
	Maintainer string
	License    string
	Summary    string
	Copyright  string
	Controls   []*Control
	// Source is the file the profile came from ("embedded:NAME" for shipped ones).
	Source string
	// SHA256 of the profile's bytes.
	SHA256 string
}

// Ref is a reference to an external document.
type Ref struct {
	Ref string `yaml:"ref" json:"ref,omitempty"`
	URL string `yaml:"url" json:"url,omitempty"`
}

// Control is one control of a profile.
type Control struct {
	ID     string
	Title  string
	Desc   string
	Impact float64
	// Tags as written (nist, cci, severity, nist_800_190, …): strings or
	// lists of strings.
	Tags map[string]any
	Refs []Ref
	// OnlyIf: when this test does not pass the control is skipped.
	OnlyIf *Test
	// OnlyIfMessage is the skip message (default: derived from OnlyIf).
	OnlyIfMessage string
	Tests         []*Test
	// Line of the control in its file.
	Line int
}

// NIST returns the control's NIST SP 800-53 tags.
func (c *Control) NIST() []string { return tagStrings(c.Tags["nist"]) }

func tagStrings(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return nil
}

// Test is one resource check of a control.
type Test struct {
	// Resource is the resource type (file, directory, parse_config, …).
	Resource string
	Line     int
	File     *FileArgs
	Config   *ConfigArgs
	Doc      *DocArgs
	Package  *PackageArgs
	OS       *OSReleaseArgs
	Passwd   *PasswdArgs
	Group    *GroupArgs
	Cont     *ContainerArgs
	Findings *FindingsArgs

	re, notRe *regexp.Regexp
}

// FileArgs are the arguments of the file and directory resources.
type FileArgs struct {
	Path    string `yaml:"path"`
	Exists  *bool  `yaml:"exists"`
	Type    string `yaml:"type"`
	Mode    string `yaml:"mode"`
	ModeMax string `yaml:"mode_max"`
	Owner   string `yaml:"owner"`
	Group   string `yaml:"group"`
	SizeMin *int64 `yaml:"size_min"`
	SizeMax *int64 `yaml:"size_max"`
	SHA256  string `yaml:"sha256"`
	// Content regexes (Go RE2 syntax, multi-line mode).
	ContentMatches    string `yaml:"content_matches"`
	ContentNotMatches string `yaml:"content_not_matches"`
	// Directory only: the directory has no entries (an absent directory is empty).
	Empty *bool `yaml:"empty"`
	// Directory only: no regular file below it (depth ≤ 8, bounded) has content matching this regex.
	NoFileMatches string `yaml:"no_file_matches"`

	mode, modeMax uint32
}

// ConfigArgs are the arguments of parse_config.
type ConfigArgs struct {
	Path         string  `yaml:"path"`
	Separator    string  `yaml:"separator"`
	CommentChars string  `yaml:"comment_chars"`
	Section      string  `yaml:"section"`
	Key          string  `yaml:"key"`
	Equals       *string `yaml:"equals"`
	Matches      string  `yaml:"matches"`
	Absent       bool    `yaml:"absent"`
}

// DocArgs are the arguments of json and yaml: a dotted path query
// (a.b.0.c; list elements by index).
type DocArgs struct {
	Path    string  `yaml:"path"`
	Query   string  `yaml:"query"`
	Exists  *bool   `yaml:"exists"`
	Equals  *string `yaml:"equals"`
	Matches string  `yaml:"matches"`
}

// PackageArgs are the arguments of packages.
type PackageArgs struct {
	Name      string `yaml:"name"`
	Ecosystem string `yaml:"ecosystem"`
	// Version constraint: "OP VERSION" with OP one of = != < <= > >= (e.g. ">= 3.0.7").
	Version   string `yaml:"version"`
	Installed *bool  `yaml:"installed"`

	op, ver string
}

// OSReleaseArgs are the arguments of os_release.
type OSReleaseArgs struct {
	Field   string  `yaml:"field"`
	Exists  *bool   `yaml:"exists"`
	Equals  *string `yaml:"equals"`
	Matches string  `yaml:"matches"`
}

// PasswdArgs are the arguments of passwd (/etc/passwd parsed from the file).
type PasswdArgs struct {
	User            string `yaml:"user"`
	Exists          *bool  `yaml:"exists"`
	UID             *int64 `yaml:"uid"`
	GID             *int64 `yaml:"gid"`
	Home            string `yaml:"home"`
	ShellMatches    string `yaml:"shell_matches"`
	ShellNotMatches string `yaml:"shell_not_matches"`
	// OnlyRootUID0: no user but root has uid 0 (user not needed).
	OnlyRootUID0 bool `yaml:"only_root_uid0"`
}

// GroupArgs are the arguments of group (/etc/group parsed from the file).
type GroupArgs struct {
	Name   string `yaml:"name"`
	Exists *bool  `yaml:"exists"`
	GID    *int64 `yaml:"gid"`
}

// ContainerArgs check the container's runtime facts (OCI spec).
type ContainerArgs struct {
	UserNotRoot     *bool    `yaml:"user_not_root"`
	ReadOnlyRootfs  *bool    `yaml:"read_only_rootfs"`
	Privileged      *bool    `yaml:"privileged"`
	NoNewPrivileges *bool    `yaml:"no_new_privileges"`
	CapsNotAllowed  []string `yaml:"capabilities_not_allowed"`
}

// FindingsArgs: no_findings, no_shell and no_package_manager.
type FindingsArgs struct {
	// Kind of scan finding that must be absent (no_findings only), e.g. SUID.
	Kind string `yaml:"kind"`
	// Allow lists paths that do not count.
	Allow []string `yaml:"allow"`
}

// ParseError is a profile error at a line of a file.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Errors are all the problems found in a profile.
type Errors []*ParseError

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// MaxProfileBytes bounds a profile file.
const MaxProfileBytes = 4 << 20

// Resources lists the resource types a test may use.
var Resources = []string{"file", "directory", "parse_config", "json", "yaml", "packages", "os_release",
	"passwd", "group", "container", "no_shell", "no_package_manager", "no_findings"}

type parser struct {
	file string
	errs Errors
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	if len(p.errs) < 100 {
		p.errs = append(p.errs, &ParseError{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
}

// Parse parses a profile; file names it in errors. All errors found are
// returned together (type Errors), each with its line.
func Parse(file string, data []byte) (*Profile, error) {
	p := &parser{file: file}
	if len(data) > MaxProfileBytes {
		return nil, Errors{{File: file, Line: 1, Msg: fmt.Sprintf("profile is larger than %d bytes", MaxProfileBytes)}}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, Errors{{File: file, Line: yamlErrLine(err), Msg: strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, Errors{{File: file, Line: max(doc.Line, 1), Msg: "a profile is a YAML mapping (name, version, controls, …)"}}
	}
	sum := sha256.Sum256(data)
	prof := &Profile{Source: file, SHA256: hex.EncodeToString(sum[:])}
	root := doc.Content[0]
	var controls *yaml.Node
	p.fields(root, map[string]func(*yaml.Node){
		"name":       p.str(&prof.Name),
		"version":    p.str(&prof.Version),
		"title":      p.str(&prof.Title),
		"maintainer": p.str(&prof.Maintainer),
		"license":    p.str(&prof.License),
		"summary":    p.str(&prof.Summary),
		"copyright":  p.str(&prof.Copyright),
		"controls":   func(n *yaml.Node) { controls = n },
	})
	if prof.Name == "" {
		p.errf(root, "profile: name is required")
	} else if !regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`).MatchString(prof.Name) {
		p.errf(root, "profile: name %q: use letters, digits, '.', '_' and '-'", prof.Name)
	}
	if controls == nil || controls.Kind != yaml.SequenceNode || len(controls.Content) == 0 {
		p.errf(orNode(controls, root), "profile: controls must be a non-empty list")
	} else {
		ids := map[string]int{}
		for _, cn := range controls.Content {
			c, ok := p.control(cn)
			if c == nil || c.ID == "" {
				continue
			}
			if l, dup := ids[c.ID]; dup {
				p.errf(cn, "control %q: duplicate id (first at line %d)", c.ID, l)
				continue
			}
			ids[c.ID] = cn.Line
			if ok {
				prof.Controls = append(prof.Controls, c)
			}
		}
	}
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return prof, nil
}

var yamlLineRe = regexp.MustCompile(`line (\d+)`)

func yamlErrLine(err error) int {
	if m := yamlLineRe.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 1
}

func orNode(n, def *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return def
}

// fields walks a mapping, calling the handler of each known key and
// reporting unknown keys.
func (p *parser) fields(m *yaml.Node, handlers map[string]func(*yaml.Node)) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		h, ok := handlers[k.Value]
		if !ok {
			p.errf(k, "unknown field %q (want one of %s)", k.Value, strings.Join(sortedKeys(handlers), ", "))
			continue
		}
		if seen[k.Value] {
			p.errf(k, "field %q given twice", k.Value)
		}
		seen[k.Value] = true
		h(v)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && ks[j] < ks[j-1]; j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
	return ks
}

func (p *parser) str(dst *string) func(*yaml.Node) {
	return func(n *yaml.Node) {
		if n.Kind != yaml.ScalarNode {
			p.errf(n, "want a string")
			return
		}
		*dst = n.Value
	}
}

// control parses one control; ok is false when it had errors.
func (p *parser) control(n *yaml.Node) (c *Control, ok bool) {
	if n.Kind != yaml.MappingNode {
		p.errf(n, "a control is a mapping (id, title, impact, tests, …)")
		return nil, false
	}
	c = &Control{Line: n.Line, Impact: -1}
	var impact *yaml.Node
	var tests *yaml.Node
	nerr := len(p.errs)
	p.fields(n, map[string]func(*yaml.Node){
		"id":    p.str(&c.ID),
		"title": p.str(&c.Title),
		"desc":  p.str(&c.Desc),
		"impact": func(v *yaml.Node) {
			impact = v
			f, err := strconv.ParseFloat(v.Value, 64)
			if v.Kind != yaml.ScalarNode || err != nil || f < 0 || f > 1 {
				p.errf(v, "impact must be a number from 0.0 to 1.0")
				return
			}
			c.Impact = f
		},
		"tags": func(v *yaml.Node) {
			if v.Kind != yaml.MappingNode {
				p.errf(v, "tags must be a mapping (nist: [CM-7], severity: high, …)")
				return
			}
			c.Tags = map[string]any{}
			for i := 0; i+1 < len(v.Content); i += 2 {
				k, tv := v.Content[i], v.Content[i+1]
				switch tv.Kind {
				case yaml.ScalarNode:
					c.Tags[k.Value] = tv.Value
				case yaml.SequenceNode:
					var xs []any
					for _, e := range tv.Content {
						if e.Kind != yaml.ScalarNode {
							p.errf(e, "tag %q: want strings", k.Value)
							continue
						}
						xs = append(xs, e.Value)
					}
					c.Tags[k.Value] = xs
				default:
					p.errf(tv, "tag %q: want a string or a list of strings", k.Value)
				}
			}
		},
		"refs": func(v *yaml.Node) {
			if err := v.Decode(&c.Refs); err != nil || v.Kind != yaml.SequenceNode {
				p.errf(v, "refs must be a list of {ref: TEXT, url: URL}")
			}
		},
		"only_if":         func(v *yaml.Node) { c.OnlyIf = p.test(v) },
		"only_if_message": p.str(&c.OnlyIfMessage),
		"tests":           func(v *yaml.Node) { tests = v },
	})
	if c.ID == "" {
		p.errf(n, "control: id is required")
	}
	if impact == nil {
		p.errf(n, "control %q: impact is required (0.0 to 1.0)", c.ID)
	}
	if tests == nil || tests.Kind != yaml.SequenceNode || len(tests.Content) == 0 {
		p.errf(orNode(tests, n), "control %q: tests must be a non-empty list", c.ID)
	} else {
		for _, tn := range tests.Content {
			if t := p.test(tn); t != nil {
				c.Tests = append(c.Tests, t)
			}
		}
	}
	if s, ok := c.Tags["severity"].(string); ok && !validSeverity(s) {
		p.errf(n, "control %q: tag severity %q: want none, low, medium, high or critical", c.ID, s)
	}
	return c, len(p.errs) == nerr
}

func validSeverity(s string) bool {
	switch s {
	case "none", "low", "medium", "high", "critical":
		return true
	}
	return false
}

// test parses {RESOURCE: {args}}.
func (p *parser) test(n *yaml.Node) *Test {
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		p.errf(n, "a test is a mapping with one resource: {file: {path: /etc/passwd, …}} (resources: %s)", strings.Join(Resources, ", "))
		return nil
	}
	k, args := n.Content[0], n.Content[1]
	t := &Test{Resource: k.Value, Line: k.Line}
	if args.Kind == yaml.ScalarNode && (args.Tag == "!!null" || args.Value == "") {
		args = &yaml.Node{Kind: yaml.MappingNode, Line: args.Line}
	}
	if args.Kind != yaml.MappingNode {
		p.errf(args, "%s: arguments must be a mapping", k.Value)
		return nil
	}
	nerr := len(p.errs)
	var dst any
	switch t.Resource {
	case "file", "directory":
		t.File = &FileArgs{}
		dst = t.File
	case "parse_config":
		t.Config = &ConfigArgs{}
		dst = t.Config
	case "json", "yaml":
		t.Doc = &DocArgs{}
		dst = t.Doc
	case "packages":
		t.Package = &PackageArgs{}
		dst = t.Package
	case "os_release":
		t.OS = &OSReleaseArgs{}
		dst = t.OS
	case "passwd":
		t.Passwd = &PasswdArgs{}
		dst = t.Passwd
	case "group":
		t.Group = &GroupArgs{}
		dst = t.Group
	case "container":
		t.Cont = &ContainerArgs{}
		dst = t.Cont
	case "no_shell", "no_package_manager", "no_findings":
		t.Findings = &FindingsArgs{}
		dst = t.Findings
	default:
		p.errf(k, "unknown resource %q (want one of %s)", k.Value, strings.Join(Resources, ", "))
		return nil
	}
	p.checkKeys(args, dst, t.Resource)
	if len(p.errs) > nerr {
		return nil
	}
	if err := args.Decode(dst); err != nil {
		p.errf(args, "%s: %s", t.Resource, strings.TrimPrefix(err.Error(), "yaml: "))
		return nil
	}
	if msg := t.validate(); msg != "" {
		p.errf(k, "%s: %s", t.Resource, msg)
		return nil
	}
	return t
}

// checkKeys reports keys that are not fields of dst (by yaml tag).
func (p *parser) checkKeys(m *yaml.Node, dst any, res string) {
	allowed := map[string]bool{}
	rt := reflect.TypeOf(dst).Elem()
	for i := 0; i < rt.NumField(); i++ {
		if tag := rt.Field(i).Tag.Get("yaml"); tag != "" {
			allowed[tag] = true
		}
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := m.Content[i]; !allowed[k.Value] {
			p.errf(k, "%s: unknown argument %q (want one of %s)", res, k.Value, strings.Join(sortedKeys(allowed), ", "))
		}
	}
}

func parseMode(s string) (uint32, bool) {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0o"), 8, 32)
	return uint32(v), err == nil && v <= 0o7777
}

func absPath(s string) bool { return strings.HasPrefix(s, "/") && path.Clean(s) == s || s == "/" }

// validate checks arguments and compiles regexes; it returns a message or "".
func (t *Test) validate() string {
	compile := func(pat string, dst **regexp.Regexp, name string) string {
		if pat == "" {
			return ""
		}
		re, err := regexp.Compile("(?m)" + pat)
		if err != nil {
			return fmt.Sprintf("%s: %v", name, err)
		}
		*dst = re
		return ""
	}
	switch {
	case t.File != nil:
		a := t.File
		if !absPath(a.Path) {
			return fmt.Sprintf("path %q must be absolute and clean", a.Path)
		}
		switch a.Type {
		case "", "file", "directory", "symlink", "other":
		default:
			return fmt.Sprintf("type %q: want file, directory, symlink or other", a.Type)
		}
		var ok bool
		if a.Mode != "" {
			if a.mode, ok = parseMode(a.Mode); !ok {
				return fmt.Sprintf("mode %q: want octal like \"0644\"", a.Mode)
			}
		}
		if a.ModeMax != "" {
			if a.modeMax, ok = parseMode(a.ModeMax); !ok {
				return fmt.Sprintf("mode_max %q: want octal like \"0644\"", a.ModeMax)
			}
		}
		if a.SHA256 != "" {
			if b, err := hex.DecodeString(a.SHA256); err != nil || len(b) != 32 {
				return "sha256: want 64 hex digits"
			}
		}
		if t.Resource == "file" && (a.Empty != nil || a.NoFileMatches != "") {
			return "empty and no_file_matches are directory arguments"
		}
		if m := compile(a.ContentMatches, &t.re, "content_matches"); m != "" {
			return m
		}
		if m := compile(a.ContentNotMatches, &t.notRe, "content_not_matches"); m != "" {
			return m
		}
		if a.NoFileMatches != "" {
			return compile(a.NoFileMatches, &t.notRe, "no_file_matches")
		}
	case t.Config != nil:
		a := t.Config
		if !absPath(a.Path) || a.Key == "" {
			return "path (absolute) and key are required"
		}
		if a.Separator == "" {
			a.Separator = "="
		}
		if a.CommentChars == "" {
			a.CommentChars = "#"
		}
		if a.Equals == nil && a.Matches == "" && !a.Absent {
			a.Matches = ".*" // present with any value
		}
		return compile(a.Matches, &t.re, "matches")
	case t.Doc != nil:
		a := t.Doc
		if !absPath(a.Path) || a.Query == "" {
			return "path (absolute) and query are required"
		}
		return compile(a.Matches, &t.re, "matches")
	case t.Package != nil:
		a := t.Package
		if a.Name == "" {
			return "name is required"
		}
		if a.Version != "" {
			f := strings.Fields(a.Version)
			if len(f) == 1 {
				f = []string{"=", f[0]}
			}
			if len(f) != 2 || !slicesContains([]string{"=", "!=", "<", "<=", ">", ">="}, f[0]) {
				return fmt.Sprintf("version %q: want \"OP VERSION\" with OP = != < <= > >=", a.Version)
			}
			a.op, a.ver = f[0], f[1]
		}
	case t.OS != nil:
		if t.OS.Field == "" {
			return "field is required (ID, VERSION_ID, …)"
		}
		return compile(t.OS.Matches, &t.re, "matches")
	case t.Passwd != nil:
		if t.Passwd.User == "" && !t.Passwd.OnlyRootUID0 {
			return "user is required (or only_root_uid0: true)"
		}
		if m := compile(t.Passwd.ShellMatches, &t.re, "shell_matches"); m != "" {
			return m
		}
		return compile(t.Passwd.ShellNotMatches, &t.notRe, "shell_not_matches")
	case t.Group != nil:
		if t.Group.Name == "" {
			return "name is required"
		}
	case t.Cont != nil:
		a := t.Cont
		if a.UserNotRoot == nil && a.ReadOnlyRootfs == nil && a.Privileged == nil && a.NoNewPrivileges == nil && len(a.CapsNotAllowed) == 0 {
			return "no check given (user_not_root, read_only_rootfs, privileged, no_new_privileges, capabilities_not_allowed)"
		}
	case t.Findings != nil:
		if t.Resource == "no_findings" {
			if t.Findings.Kind == "" {
				return "kind is required (e.g. SUID, WORLD_WRITABLE, DRIFT_FILE)"
			}
			if _, err := parseKind(t.Findings.Kind); err != nil {
				return err.Error()
			}
		} else if t.Findings.Kind != "" {
			return "kind is only for no_findings"
		}
	}
	return ""
}

func slicesContains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// ErrNotFound is returned by Lookup for a profile name that is neither
// shipped nor loaded.
var ErrNotFound = errors.New("profile not found")

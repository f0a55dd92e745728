// Package rules decides what the agent reports: which finding kinds are on,
// severity overrides, and allow-lists (e.g. the known entrypoint shell of an
// image). Rules come from a YAML file (--rules) or the embedded default.
//
// Rules are evaluated in file order; the first rule whose kinds and match
// fit a finding decides: `allow` suppresses it (counted, never silent),
// `severity` overrides its severity. A finding no rule matches keeps the
// severity its detector gave it.
package rules

import (
	_ "embed"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/glob"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML is the shipped default rule file.
func DefaultYAML() []byte { return defaultYAML }

// maxFileBytes bounds a rules file.
const maxFileBytes = 1 << 20

// File is the YAML document.
type File struct {
	// Version of the format; 1.
	Version int `json:"version"`
	// DisabledKinds are never reported (e.g. [PACKAGE] on nodes where the inventory is not wanted).
	DisabledKinds []string `json:"disabled_kinds,omitempty"`
	// Rules, first match wins.
	Rules []Rule `json:"rules"`
	// Enforce turns on enforcement, which is off by default.
	Enforce Enforce `json:"enforce,omitempty"`
	// Capture allows forensic captures (loupe capture), off by default.
	Capture Capture `json:"capture,omitempty"`
}

// Capture says whether this agent takes evidence captures, and of which
// containers. Captures are refused unless Enabled is set and the container's
// Kubernetes namespace matches one of Namespaces (glob patterns; "*" for all).
type Capture struct {
	Enabled    bool     `json:"enabled,omitempty"`
	Namespaces []string `json:"namespaces,omitempty"`
}

// MayCapture reports whether a capture of a container in namespace ns is
// allowed, and if not, why.
func (s *Set) MayCapture(ns string) error {
	if !s.capture.Enabled {
		return fmt.Errorf("captures are disabled on this node (rules: capture.enabled is false)")
	}
	for _, p := range s.capture.Namespaces {
		if glob.Match(p, ns) {
			return nil
		}
	}
	return fmt.Errorf("namespace %q is not in this node's capture allow-list (rules: capture.namespaces %q)", ns, s.capture.Namespaces)
}

// Enforce is the enforcement part of the rules file.
type Enforce struct {
	// KillShells selects containers in which every shell is killed with
	// SIGKILL as it starts, before it runs any of its own code. A container
	// matching any selector is enforced.
	KillShells []Selector `json:"kill_shells,omitempty"`
}

// Selector picks containers; empty fields match anything, Pod and Image are glob patterns.
type Selector struct {
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	Image     string `json:"image,omitempty"`
}

// Rule is one entry of the rules list.
type Rule struct {
	// Name identifies the rule in findings (`rule`) and metrics.
	Name string `json:"name"`
	// Kinds this rule applies to; empty means every kind.
	Kinds []string `json:"kinds,omitempty"`
	// Match narrows the findings it applies to; every set field must match.
	Match Match `json:"match,omitempty"`
	// Action: "allow" suppresses matching findings; "report" (default) reports them.
	Action string `json:"action,omitempty"`
	// Severity overrides the detector's severity: info, low, medium, high, critical.
	Severity string `json:"severity,omitempty"`
}

// Match holds patterns in the syntax of package internal/glob ('*' matches any
// run of characters, including '/').
type Match struct {
	Namespace string `json:"namespace,omitempty"` // Kubernetes namespace
	Pod       string `json:"pod,omitempty"`       // pod name
	Container string `json:"container,omitempty"` // Kubernetes container name
	Image     string `json:"image,omitempty"`     // image reference
	Filename  string `json:"filename,omitempty"`  // executed file (process.filename)
	Argv      string `json:"argv,omitempty"`      // argv joined with spaces
	Parent    string `json:"parent,omitempty"`    // the direct parent's filename or comm
	Ancestor  string `json:"ancestor,omitempty"`  // any ancestor's filename or comm
	Path      string `json:"path,omitempty"`      // file path (file.path)
}

// Decision is what Apply did with a finding.
type Decision int

const (
	// Report means the finding goes out (possibly with a new severity).
	Report Decision = iota
	// Suppressed means an allow rule matched.
	Suppressed
	// Disabled means the finding's kind is turned off.
	Disabled
)

// Set is a compiled rule file, safe for concurrent use (read-only).
type Set struct {
	disabled   map[loupev1.Kind]bool
	rules      []compiled
	killShells []Selector
	capture    Capture
}

type compiled struct {
	name     string
	kinds    map[loupev1.Kind]bool
	match    Match
	allow    bool
	severity loupev1.Severity
}

// Load reads and compiles a rules file; "" loads the embedded default.
func Load(path string) (*Set, error) {
	if path == "" {
		return Parse(defaultYAML, "default rules")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() > maxFileBytes {
		return nil, fmt.Errorf("load rules %s: not a regular file under %d bytes", path, maxFileBytes)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("load rules %s: %w", path, err)
	}
	return Parse(b, path)
}

// Parse compiles a rules document; name is used in error messages.
func Parse(b []byte, name string) (*Set, error) {
	var f File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("%s: version %d is not supported (want version: 1)", name, f.Version)
	}
	s := &Set{disabled: map[loupev1.Kind]bool{}}
	for i, sel := range f.Enforce.KillShells {
		if sel == (Selector{}) {
			return nil, fmt.Errorf("%s: enforce.kill_shells[%d]: an empty selector would kill shells in every container; name a namespace, pod or image", name, i)
		}
		s.killShells = append(s.killShells, sel)
	}
	if f.Capture.Enabled && len(f.Capture.Namespaces) == 0 {
		return nil, fmt.Errorf("%s: capture.enabled needs capture.namespaces (use [\"*\"] to allow every namespace)", name)
	}
	s.capture = f.Capture
	for _, k := range f.DisabledKinds {
		kind, err := loupev1.ParseKind(k)
		if err != nil {
			return nil, fmt.Errorf("%s: disabled_kinds: %w", name, err)
		}
		s.disabled[kind] = true
	}
	seen := map[string]bool{}
	for i, r := range f.Rules {
		where := fmt.Sprintf("%s: rules[%d]", name, i)
		if r.Name == "" {
			return nil, fmt.Errorf("%s: a rule needs a name", where)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("%s: duplicate rule name %q", where, r.Name)
		}
		seen[r.Name] = true
		c := compiled{name: r.Name, match: r.Match, kinds: map[loupev1.Kind]bool{}}
		for _, k := range r.Kinds {
			kind, err := loupev1.ParseKind(k)
			if err != nil {
				return nil, fmt.Errorf("%s (%s): kinds: %w", where, r.Name, err)
			}
			c.kinds[kind] = true
		}
		switch r.Action {
		case "", "report":
		case "allow":
			c.allow = true
		default:
			return nil, fmt.Errorf("%s (%s): action %q: want allow or report", where, r.Name, r.Action)
		}
		if r.Severity != "" {
			if c.allow {
				return nil, fmt.Errorf("%s (%s): an allow rule cannot set a severity", where, r.Name)
			}
			sev, err := loupev1.ParseSeverity(r.Severity)
			if err != nil {
				return nil, fmt.Errorf("%s (%s): %w", where, r.Name, err)
			}
			c.severity = sev
		}
		if !c.allow && c.severity == 0 {
			return nil, fmt.Errorf("%s (%s): a report rule needs a severity (or use action: allow)", where, r.Name)
		}
		s.rules = append(s.rules, c)
	}
	return s, nil
}

// KillShells returns the enforcement selectors (none: enforcement off).
func (s *Set) KillShells() []Selector { return s.killShells }

// Apply evaluates f in place: it may change f.Severity and f.Rule. It returns
// the decision and the name of the rule that made it ("" for none).
func (s *Set) Apply(f *loupev1.Finding) (Decision, string) {
	if s.disabled[f.GetKind()] {
		return Disabled, ""
	}
	for _, r := range s.rules {
		if len(r.kinds) > 0 && !r.kinds[f.GetKind()] {
			continue
		}
		if !r.match.matches(f) {
			continue
		}
		if r.allow {
			return Suppressed, r.name
		}
		f.Severity = r.severity
		f.Rule = r.name
		return Report, r.name
	}
	return Report, ""
}

func (m *Match) matches(f *loupev1.Finding) bool {
	c, p := f.GetContainer(), f.GetProcess()
	if !glob.Match(m.Namespace, c.GetNamespace()) || !glob.Match(m.Pod, c.GetPod()) ||
		!glob.Match(m.Container, c.GetName()) || !glob.Match(m.Image, c.GetImage()) ||
		!glob.Match(m.Filename, p.GetFilename()) || !glob.Match(m.Argv, strings.Join(p.GetArgv(), " ")) ||
		!glob.Match(m.Path, f.GetFile().GetPath()) {
		return false
	}
	anc := p.GetAncestors()
	if m.Parent != "" && (len(anc) == 0 || !(glob.Match(m.Parent, anc[0].GetFilename()) || glob.Match(m.Parent, anc[0].GetComm()))) {
		return false
	}
	if m.Ancestor != "" {
		for _, a := range anc {
			if glob.Match(m.Ancestor, a.GetFilename()) || glob.Match(m.Ancestor, a.GetComm()) {
				return true
			}
		}
		return false
	}
	return true
}

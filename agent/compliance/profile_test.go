package compliance

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	sigsyaml "sigs.k8s.io/yaml"
)

// TestParseErrors: every problem is reported with file and line.
func TestParseErrors(t *testing.T) {
	text := `name: bad profile
version: 1
controls:
  - id: a
    impact: 1.5
    tests:
      - file: {path: etc/passwd}
  - id: a
    impact: 0.5
    colour: blue
    tests:
      - command: {cmd: id}
      - file: {path: /etc/x, mode: "0999"}
      - parse_config: {path: /etc/x, key: k, matches: "("}
  - title: no id
    impact: 0.1
    tests: []
`
	_, err := Parse("bad.yaml", []byte(text))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("want Errors, got %v", err)
	}
	want := []string{
		`bad.yaml:1: profile: name "bad profile"`,
		"bad.yaml:5: impact must be a number from 0.0 to 1.0",
		`bad.yaml:7: file: path "etc/passwd" must be absolute`,
		`bad.yaml:10: unknown field "colour"`,
		`bad.yaml:12: unknown resource "command"`,
		`bad.yaml:13: file: mode "0999"`,
		"bad.yaml:14: parse_config: matches: error parsing regexp",
		`bad.yaml:8: control "a": duplicate id (first at line 4)`,
		"bad.yaml:15: control: id is required",
		"bad.yaml:17: control \"\": tests must be a non-empty list",
	}
	got := err.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
	if _, err := Parse("syntax.yaml", []byte("name: x\ncontrols:\n  - id: [\n")); err == nil || !strings.HasPrefix(err.Error(), "syntax.yaml:") {
		t.Errorf("YAML syntax error: %v", err)
	}
	if _, err := Parse("list.yaml", []byte("- a\n- b\n")); err == nil || !strings.Contains(err.Error(), "list.yaml:1:") {
		t.Errorf("non-mapping: %v", err)
	}
}

// TestShippedProfile: distroless-baseline parses, every control has NIST
// SP 800-53 and 800-190 tags, and it loads by name.
func TestShippedProfile(t *testing.T) {
	p, err := Load("distroless-baseline")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "distroless-baseline" || p.Version == "" || len(p.Controls) < 9 {
		t.Fatalf("profile %s@%s with %d controls", p.Name, p.Version, len(p.Controls))
	}
	for _, c := range p.Controls {
		if len(c.NIST()) == 0 || len(tagStrings(c.Tags["nist_800_190"])) == 0 || c.Title == "" || c.Desc == "" {
			t.Errorf("control %s lacks nist / nist_800_190 tags, title or desc", c.ID)
		}
	}
	if _, err := Load("no-such-profile"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown name: %v", err)
	}
	if _, err := Load("./no/such/file.yaml"); err == nil {
		t.Error("missing file loaded")
	}
}

// FuzzParse: the parser never panics, and whatever it accepts evaluates
// without panicking (no filesystem: file checks yield error results).
func FuzzParse(f *testing.F) {
	data, _ := shippedFS.ReadFile("profiles/distroless-baseline.yaml")
	f.Add(data)
	f.Add([]byte(oneTest(`parse_config: {path: /a, key: k, separator: " ", comment_chars: ";"}`)))
	f.Add([]byte(oneTest(`json: {path: /a.json, query: a.0.b, matches: "x+"}`)))
	f.Add([]byte("name: x\ncontrols:\n  - id: a\n    impact: 0\n    only_if: {no_shell: {}}\n    tests: [{packages: {name: a, version: '>= 1'}}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse("fuzz.yaml", b)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		run := Evaluate(context.Background(), p, &Target{Name: "fuzz"})
		for _, c := range run.Controls {
			switch c.Status() {
			case Passed, Failed, Skipped, Error:
			default:
				t.Fatalf("status %q", c.Status())
			}
		}
	})
}

// TestSchemaAcceptsShipped: the JSON schema of the format (for editors and
// CI linting) accepts the shipped profile and rejects what Parse rejects.
func TestSchemaAcceptsShipped(t *testing.T) {
	sch, err := jsonschema.NewCompiler().Compile("profile.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, y []byte) error {
		j, err := sigsyaml.YAMLToJSON(y)
		if err != nil {
			t.Fatal(err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
		if err != nil {
			t.Fatal(err)
		}
		return sch.Validate(inst)
	}
	data, _ := shippedFS.ReadFile("profiles/distroless-baseline.yaml")
	if err := check("shipped", data); err != nil {
		t.Errorf("shipped profile: %v", err)
	}
	for _, bad := range []string{
		oneTest(`command: {cmd: id}`),
		oneTest(`file: {path: /etc/passwd, colour: blue}`),
		strings.Replace(oneTest(`no_shell: {}`), "impact: 0.5", "impact: 2", 1),
	} {
		if err := check("bad", []byte(bad)); err == nil {
			t.Errorf("schema accepts:\n%s", bad)
		}
		if _, err := Parse("bad.yaml", []byte(bad)); err == nil {
			t.Errorf("Parse accepts:\n%s", bad)
		}
	}
}

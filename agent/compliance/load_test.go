package compliance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSetReload: a profiles directory is reloaded when a file changes; a
// broken profile is left out while the good ones stay active.
func TestSetReload(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	names := func(s *Set) string {
		var out []string
		for _, p := range s.Profiles() {
			out = append(out, p.Name+"@"+p.Version)
		}
		return strings.Join(out, ",")
	}
	write("a.yaml", strings.Replace(oneTest("no_shell: {}"), "name: t", "name: a", 1))
	write("README.md", "not a profile")
	s, err := NewSet(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(s); got != "a@1.0.0" {
		t.Fatalf("profiles %q", got)
	}
	if s.reload() {
		t.Error("reload without a change")
	}
	write("b.yml", strings.Replace(oneTest("no_shell: {}"), "name: t", "name: b", 1))
	write("broken.yaml", "name: broken\ncontrols: []\n")
	if !s.reload() || names(s) != "a@1.0.0,b@1.0.0" {
		t.Errorf("after adding b and a broken profile: %q", names(s))
	}
	// A rewrite with the same size in the same second must still be seen.
	time.Sleep(10 * time.Millisecond)
	write("a.yaml", strings.Replace(oneTest("no_shell: {}"), "version: 1.0.0", "version: 2.0.0", 1))
	if !s.reload() || !strings.Contains(names(s), "t@2.0.0") {
		t.Errorf("after rewriting a.yaml: %q", names(s))
	}
	if _, err := NewSet(filepath.Join(dir, "a.yaml"), nil); err == nil {
		t.Error("a file accepted as --profiles dir")
	}
	shipped, err := NewSet("", nil)
	if err != nil || names(shipped) != "distroless-baseline@1.0.0" {
		t.Errorf("shipped set: %q %v", names(shipped), err)
	}
}

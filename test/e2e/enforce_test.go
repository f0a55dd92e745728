package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/testenv"
)

// TestEnforcementKillsShells: with a kill_shells rule for a namespace, a
// shell started there is killed before it prints anything and the finding
// says so; the same shell in another namespace runs.
func TestEnforcementKillsShells(t *testing.T) {
	env := testenv.StartContainerd(t)
	debian := env.Image(t, testenv.DebianLike)
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rules, []byte("version: 1\nrules: []\nenforce:\n  kill_shells:\n    - {namespace: locked}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &stack{env: env, node: "e2e-node", dbDir: t.TempDir(), agentState: t.TempDir()}
	s.init(t)
	s.startCollector(t)
	s.startAgent(t, "--rules", rules)

	locked := env.RunPod(t, testenv.PodConfig{Name: "locked-1", Namespace: "locked"}).Start(t, testenv.ContainerConfig{Name: "app", Image: debian})
	open := env.RunPod(t, testenv.PodConfig{Name: "open-1", Namespace: "open"}).Start(t, testenv.ContainerConfig{Name: "app", Image: debian})
	waitMetric(t, s, "loupe_agent_containers", func(v float64) bool { return v >= 2 })
	time.Sleep(time.Second)

	res, err := locked.Exec(t, []string{"/bin/sh", "-c", "echo should-not-print"}, 10*time.Second)
	if err == nil && (res.ExitCode == 0 || strings.Contains(string(res.Stdout), "should-not-print")) {
		t.Fatalf("shell ran in the enforced namespace: exit %d, output %q", res.ExitCode, res.Stdout)
	}
	f := s.waitFinding(t, "SHELL_EXEC with action=killed", 30*time.Second, kinds(loupev1.Kind_KIND_SHELL_EXEC), func(f *loupev1.Finding) bool {
		return f.GetContainer().GetId() == locked.ID()
	})
	if f.GetAction() != "killed" {
		t.Errorf("finding action %q, want killed", f.GetAction())
	}
	res, err = open.Exec(t, []string{"/bin/sh", "-c", "echo runs"}, 10*time.Second)
	if err != nil || res.ExitCode != 0 || !strings.Contains(string(res.Stdout), "runs") {
		t.Fatalf("shell outside the policy: %v %+v", err, res)
	}
}

// Package prometheus holds Loupe's alerting rules; this test checks them and
// runs their unit tests with Prometheus' own promtool.
package prometheus

import (
	"os/exec"
	"testing"

	"github.com/loupe-dev/loupe/internal/testenv"
)

func TestRulesWithPromtool(t *testing.T) {
	promtool := testenv.RequireCommand(t, "promtool")
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "rules_test.yaml"}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
		t.Logf("promtool %v:\n%s", args, out)
	}
}

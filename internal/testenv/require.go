// Package testenv is Loupe's test harness: it decides whether tests that need
// the real thing (root, containerd, eBPF, PostgreSQL, promtool) run, skip or
// fail, and provides the private containerd and locally built images they use.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// RequireE2E reports whether LOUPE_REQUIRE_E2E=1 is set (as in CI): tests
// whose prerequisites are missing then fail instead of skipping.
func RequireE2E() bool { return os.Getenv("LOUPE_REQUIRE_E2E") == "1" }

// Unavailable skips the test with reason, or fails it when LOUPE_REQUIRE_E2E=1.
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if RequireE2E() {
		t.Fatalf("required by LOUPE_REQUIRE_E2E=1 but unavailable: %s", reason)
	}
	t.Skipf("skipping: %s (set up with scripts/deps.sh and run as root)", reason)
}

// RequireRoot skips or fails the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root")
	}
}

// RequireCommand skips or fails the test unless name is on PATH, and returns its path.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, name+" is not installed")
	}
	return p
}

// Package e2e holds Loupe's end-to-end tests: a private containerd driven
// through CRI (internal/testenv), loupe-agent with its real eBPF tracer and
// loupe-collector as separate processes over loopback with mTLS, SQLite on disk.
package e2e

import (
	"os"
	"testing"

	"github.com/loupe-dev/loupe/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

package main

import (
	"os"
	"os/exec"
	"testing"

	"github.com/loupe-dev/loupe/internal/testenv"
)

const testVersion = "v0.0.0-ocitest"

// buildBinaries builds the three binaries statically with the version
// injected the way the Makefile does.
func buildBinaries(t *testing.T) string {
	t.Helper()
	testenv.RequireCommand(t, "go")
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags",
		"-s -w -X github.com/loupe-dev/loupe/internal/version.Version="+testVersion+" -X github.com/loupe-dev/loupe/internal/version.Commit=0c1test",
		"-o", dir+"/", "./cmd/loupe-agent", "./cmd/loupe-collector", "./cmd/loupe")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

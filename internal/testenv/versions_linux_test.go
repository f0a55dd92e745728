package testenv_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/loupe-dev/loupe/internal/testenv"
)

// TestSelectedContainerdRuns checks that the daemon the matrix selected (by
// LOUPE_CONTAINERD) is the one serving CRI, and that its pods run under the
// shim built with it rather than another version's found on PATH.
func TestSelectedContainerdRuns(t *testing.T) {
	env := testenv.StartContainerd(t)
	want := env.Containerd()
	t.Logf("matrix: %s=%q runs %s, config version %d", testenv.EnvContainerd, os.Getenv(testenv.EnvContainerd), want, want.ConfigVersion())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := env.Runtime().Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if v.RuntimeName != "containerd" || strings.TrimPrefix(v.RuntimeVersion, "v") != want.Version {
		t.Fatalf("CRI Version: %s %s, want containerd %s", v.RuntimeName, v.RuntimeVersion, want.Version)
	}
	cv, err := env.Client().Version(ctx)
	if err != nil || strings.TrimPrefix(cv.Version, "v") != want.Version {
		t.Fatalf("containerd Version: %+v %v, want %s", cv, err, want.Version)
	}

	pod := env.RunPod(t, testenv.PodConfig{Name: "shim-check", Namespace: "matrix"})
	pod.Start(t, testenv.ContainerConfig{Name: "app", Image: env.Image(t, testenv.Distroless)})
	shimDir := filepath.Dir(want.Binary)
	if _, err := os.Stat(filepath.Join(shimDir, "containerd-shim-runc-v2")); err != nil {
		t.Fatalf("no shim beside %s: %v", want.Binary, err)
	}
	found := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmd), "containerd-shim-runc-v2") || !strings.Contains(string(cmd), env.Address()) {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(exe) != shimDir {
			t.Errorf("shim %s runs %s, want the one in %s", e.Name(), exe, shimDir)
		}
		found++
	}
	if found == 0 {
		t.Fatalf("no containerd-shim-runc-v2 process for %s", env.Address())
	}
}

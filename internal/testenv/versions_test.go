package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseContainerdVersion(t *testing.T) {
	for _, tc := range []struct {
		out          string
		version      string
		major, minor int
		config       int
	}{
		// Debian 12's package, and the builds of scripts/containerd-versions.sh.
		{"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n", "1.6.20~ds1", 1, 6, 2},
		{"containerd github.com/containerd/containerd v1.7.35 go-module\n", "1.7.35", 1, 7, 2},
		{"containerd github.com/containerd/containerd/v2 v2.4.2 go-module\n", "2.4.2", 2, 4, 3},
		{"containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da\n", "1.7.27", 1, 7, 2},
	} {
		c, err := parseContainerdVersion(tc.out)
		if err != nil {
			t.Errorf("%q: %v", tc.out, err)
			continue
		}
		if c.Version != tc.version || c.Major != tc.major || c.Minor != tc.minor || c.ConfigVersion() != tc.config {
			t.Errorf("%q: got %+v config %d", tc.out, c, c.ConfigVersion())
		}
	}
	for _, bad := range []string{"", "runc version 1.1.5", "containerd x", "containerd x y", "containerd x v2"} {
		if c, err := parseContainerdVersion(bad); err == nil {
			t.Errorf("%q: accepted as %+v", bad, c)
		}
	}
}

func TestContainerdMatrixList(t *testing.T) {
	m := ContainerdMatrix()
	ids := map[string]bool{}
	for _, e := range m {
		ids[e.ID] = true
	}
	for _, id := range []string{"1.6", "1.7", "2.0", "2.x"} {
		if !ids[id] {
			t.Errorf("matrix %+v lacks %s", m, id)
		}
	}
	if _, err := parseMatrix("1.7 v1.7.35 extra\n"); err == nil {
		t.Error("a line with three fields was accepted")
	}
	if _, err := parseMatrix("1.7 1.7.35\n"); err == nil {
		t.Error("a source without v was accepted")
	}
	if _, err := parseMatrix("# only comments\n"); err == nil {
		t.Error("an empty list was accepted")
	}
}

func TestContainerdBinarySelection(t *testing.T) {
	cache := t.TempDir()
	t.Setenv(EnvContainerdCache, cache)
	bin := filepath.Join(cache, "v2.4.2", "bin", "containerd")
	if _, err := containerdBinary("2.x"); err == nil || !strings.Contains(err.Error(), "containerd-versions.sh") {
		t.Errorf("missing 2.x build: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	for sel, want := range map[string]string{"2.x": bin, "v2.4.2": bin, filepath.Dir(bin): bin, bin: bin} {
		if got, err := containerdBinary(sel); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", sel, got, err, want)
		}
	}
	if _, err := containerdBinary("latest"); err == nil {
		t.Error("an unknown selector was accepted")
	}
}

package testenv

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// containerdVersionsTxt is the one list of the containerd versions of the
// runtime test matrix; scripts/containerd-versions.sh builds from it.
//
//go:embed containerd-versions.txt
var containerdVersionsTxt string

// EnvContainerd selects the containerd a test environment starts: empty for
// the containerd on PATH (Debian's 1.6.20 here), an id of
// containerd-versions.txt ("1.7", "2.x"), a module version ("v2.4.2"), or
// the absolute path of a containerd binary or of the directory holding it
// and its containerd-shim-runc-v2.
const EnvContainerd = "LOUPE_CONTAINERD"

// EnvContainerdCache is where scripts/containerd-versions.sh puts the built
// versions (default DefaultContainerdCache), as <version>/bin.
const EnvContainerdCache = "LOUPE_CONTAINERD_CACHE"

// DefaultContainerdCache is the default of EnvContainerdCache.
const DefaultContainerdCache = "/var/cache/loupe/containerd"

// MatrixEntry is one line of containerd-versions.txt.
type MatrixEntry struct {
	// ID names the entry in LOUPE_CONTAINERD and in test output ("1.6", "2.x").
	ID string
	// Source is "debian" (the containerd on PATH) or a Go module version ("v1.7.35").
	Source string
}

// ContainerdMatrix returns the entries of containerd-versions.txt, in order.
func ContainerdMatrix() []MatrixEntry {
	out, err := parseMatrix(containerdVersionsTxt)
	if err != nil {
		panic("testenv: containerd-versions.txt: " + err.Error())
	}
	return out
}

func parseMatrix(txt string) ([]MatrixEntry, error) {
	var out []MatrixEntry
	for i, l := range strings.Split(txt, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want an id and a source", i+1)
		}
		if f[1] != "debian" && !strings.HasPrefix(f[1], "v") {
			return nil, fmt.Errorf("line %d: source %q is neither debian nor a module version", i+1, f[1])
		}
		out = append(out, MatrixEntry{ID: f[0], Source: f[1]})
	}
	if len(out) == 0 {
		return nil, errors.New("no entries")
	}
	return out, nil
}

// Containerd is a containerd build the harness can start.
type Containerd struct {
	// Binary is the containerd executable; the shim is looked up beside it first.
	Binary string
	// Version is what `containerd --version` reports, without a leading "v"
	// ("1.6.20~ds1", "2.4.2").
	Version string
	// Major and Minor are parsed from Version.
	Major, Minor int
}

// ConfigVersion is the config.toml version this containerd takes: 3 for 2.x
// (CRI split into io.containerd.cri.v1.runtime / .images), else 2.
func (c Containerd) ConfigVersion() int {
	if c.Major >= 2 {
		return 3
	}
	return 2
}

// String is e.g. "containerd 2.4.2 (/var/cache/loupe/containerd/v2.4.2/bin/containerd)".
func (c Containerd) String() string { return "containerd " + c.Version + " (" + c.Binary + ")" }

// errNoContainerd marks a selected containerd that is not installed (a skip,
// or a failure under LOUPE_REQUIRE_E2E=1), as opposed to one that fails to run.
var errNoContainerd = errors.New("containerd not installed")

// SelectedContainerd resolves LOUPE_CONTAINERD (see EnvContainerd) to a
// binary and asks it for its version.
func SelectedContainerd() (Containerd, error) {
	bin, err := containerdBinary(os.Getenv(EnvContainerd))
	if err != nil {
		return Containerd{}, err
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return Containerd{}, fmt.Errorf("%s --version: %w", bin, err)
	}
	c, err := parseContainerdVersion(string(out))
	if err != nil {
		return Containerd{}, fmt.Errorf("%s --version: %w", bin, err)
	}
	c.Binary = bin
	return c, nil
}

func containerdBinary(sel string) (string, error) {
	cache := os.Getenv(EnvContainerdCache)
	if cache == "" {
		cache = DefaultContainerdCache
	}
	src := sel
	for _, e := range ContainerdMatrix() {
		if sel == e.ID {
			src = e.Source
		}
	}
	var bin string
	switch {
	case src == "" || src == "debian":
		p, err := exec.LookPath("containerd")
		if err != nil {
			return "", fmt.Errorf("%w: no containerd on PATH", errNoContainerd)
		}
		return p, nil
	case filepath.IsAbs(src):
		bin = src
		if fi, err := os.Stat(src); err == nil && fi.IsDir() {
			bin = filepath.Join(src, "containerd")
		}
	case strings.HasPrefix(src, "v"):
		bin = filepath.Join(cache, src, "bin", "containerd")
	default:
		return "", fmt.Errorf("%s=%q: not an id of containerd-versions.txt, a version or an absolute path", EnvContainerd, sel)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%w: %s=%s: %v (build it with scripts/containerd-versions.sh)", errNoContainerd, EnvContainerd, sel, err)
	}
	return bin, nil
}

// parseContainerdVersion reads `containerd --version` output such as
// "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"
// or "containerd github.com/containerd/containerd/v2 v2.4.2 go-module".
func parseContainerdVersion(out string) (Containerd, error) {
	f := strings.Fields(out)
	if len(f) < 3 || f[0] != "containerd" {
		return Containerd{}, fmt.Errorf("unexpected version output %q", strings.TrimSpace(out))
	}
	v := strings.TrimPrefix(f[2], "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return Containerd{}, fmt.Errorf("unexpected version %q", f[2])
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return Containerd{}, fmt.Errorf("unexpected version %q", f[2])
	}
	return Containerd{Version: v, Major: major, Minor: minor}, nil
}

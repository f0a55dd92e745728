package inspect

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	loupev1 "github.com/loupe-dev/loupe/api/v1"

	"github.com/loupe-dev/loupe/internal/testenv"
)

// write creates a file (and parents) inside root.
func write(t testing.TB, root, p string, content []byte, mode os.FileMode) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, content, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(full, mode); err != nil { // umask and set-id bits
		t.Fatal(err)
	}
}

// copyHost copies a real host file (binary fixtures) into root.
func copyHost(t testing.TB, root, p, host string) {
	t.Helper()
	b, err := os.ReadFile(host)
	if err != nil {
		testenv.Unavailable(t, fmt.Sprintf("fixture %s unavailable: %v", host, err))
	}
	write(t, root, p, b, 0o755)
}

func symlink(t testing.TB, root, p, target string) {
	t.Helper()
	full := filepath.Join(root, p)
	os.MkdirAll(filepath.Dir(full), 0o755)
	if err := os.Symlink(target, full); err != nil {
		t.Fatal(err)
	}
}

var (
	tinyOnce sync.Once
	tinyBin  []byte
	tinyErr  string
)

// tinyGo compiles (once per test binary) a tiny stdlib-only Go program: a
// real static ELF with embedded build info.
func tinyGo(t testing.TB) []byte {
	t.Helper()
	tinyOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			tinyErr = "go toolchain not on PATH"
			return
		}
		dir, _ := os.MkdirTemp("", "loupe-tiny-")
		defer os.RemoveAll(dir)
		os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/tiny\n\ngo 1.22\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"tiny\") }\n"), 0o644)
		out := filepath.Join(dir, "tiny")
		cmd := exec.Command(goBin, "build", "-o", out, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false", "GOPROXY=off", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			tinyErr = string(b)
			return
		}
		var err2 error
		if tinyBin, err2 = os.ReadFile(out); err2 != nil {
			tinyErr = err2.Error()
		}
	})
	if tinyErr != "" {
		testenv.Unavailable(t, "cannot build tiny Go fixture: "+tinyErr)
	}
	return tinyBin
}

// hostDpkg returns n stanzas of this host's real dpkg status file.
func hostDpkg(t testing.TB, n int) []byte {
	b, err := os.ReadFile("/var/lib/dpkg/status")
	if err != nil {
		testenv.Unavailable(t, fmt.Sprintf("no dpkg status on this host: %v", err))
	}
	st := strings.Split(string(b), "\n\n")
	return []byte(strings.Join(st[:min(n, len(st))], "\n\n") + "\n")
}

func scan(t testing.TB, tg Target, opts Options) *Report {
	t.Helper()
	rep, err := New(opts, nil, nil).Scan(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func ofKind(rep *Report, k loupev1.Kind) []*loupev1.Finding {
	var out []*loupev1.Finding
	for _, f := range rep.Findings {
		if f.GetKind() == k {
			out = append(out, f)
		}
	}
	return out
}

func paths(fs []*loupev1.Finding) map[string]*loupev1.Finding {
	m := map[string]*loupev1.Finding{}
	for _, f := range fs {
		m[f.GetFile().GetPath()] = f
	}
	return m
}

// dump renders everything a scan can output (findings as protojson, the
// SBOM, the report) into one string, for "never appears in output" checks.
func dump(t testing.TB, rep *Report) string {
	t.Helper()
	var b strings.Builder
	for _, f := range rep.Findings {
		j, err := protojson.Marshal(f)
		if err != nil {
			t.Fatalf("finding is not valid protojson: %v", err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	if err := rep.WriteSBOM(&b); err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(rep.Packages)
	b.Write(j)
	j, _ = json.Marshal(rep.Profile)
	b.Write(j)
	b.WriteString(strings.Join(rep.Warnings, "\n"))
	return b.String()
}

var _ = io.EOF

package compliance

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loupe-dev/loupe/agent/inspect"
)

// tree writes files into dir: "path" → content; content "->X" makes a
// symlink to X; a path ending in "/" a directory.
func tree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const (
	passwdOK = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	groupOK  = "root:x:0:\nnonroot:x:65532:\n"
	osRel    = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n"
	certPEM  = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
)

// distrolessTree is a minimal distroless-like root.
func distrolessTree(t testing.TB) string {
	dir := t.TempDir()
	tree(t, dir, map[string]string{
		"etc/passwd": passwdOK, "etc/group": groupOK, "etc/os-release": osRel,
		"etc/ssl/certs/ca-certificates.crt": certPEM, "home/nonroot/": "", "root/": "",
		"app": "\x7fELF not really",
	})
	return dir
}

// scan runs the real scanner on a root directory.
func scan(t testing.TB, root string) (inspect.Target, *inspect.Report) {
	t.Helper()
	tgt := inspect.Target{Root: root, Name: "test:" + filepath.Base(root)}
	rep, err := inspect.New(inspect.Options{}, nil, nil).Scan(context.Background(), tgt)
	if err != nil {
		t.Fatal(err)
	}
	return tgt, rep
}

// evalProfile evaluates a profile text against a root directory.
func evalProfile(t testing.TB, root, text string, facts ContainerFacts) *Run {
	t.Helper()
	p, err := Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, text)
	}
	tgt, rep := scan(t, root)
	fsys, err := NewFS(tgt)
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	return Evaluate(context.Background(), p, &Target{Name: tgt.Name, Report: rep, FS: fsys, Facts: facts})
}

func oneTest(test string) string {
	return "name: t\nversion: 1.0.0\ncontrols:\n  - id: c1\n    impact: 0.5\n    tests:\n      - " + test + "\n"
}

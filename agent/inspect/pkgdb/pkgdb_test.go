package pkgdb

import (
	"archive/zip"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loupe-dev/loupe/internal/testenv"
)

// hostDpkgExcerpt returns the first n stanzas of this host's real dpkg status.
func hostDpkgExcerpt(t testing.TB, n int) []byte {
	b, err := os.ReadFile("/var/lib/dpkg/status")
	if err != nil {
		testenv.Unavailable(t, fmt.Sprintf("no dpkg status on this host: %v", err))
	}
	st := strings.Split(string(b), "\n\n")
	if len(st) > n {
		st = st[:n]
	}
	return []byte(strings.Join(st, "\n\n") + "\n")
}

func TestParseDpkgStatusRealHostExcerpt(t *testing.T) {
	data := hostDpkgExcerpt(t, 40)
	want := strings.Count(string(data), "\nStatus: install ok installed") + strings.Count(string(data[:min(len(data), 200)]), "Status: install ok installed")
	pk := ParseDpkgStatus(data, "debian-12")
	if len(pk) == 0 || len(pk) > 40 {
		t.Fatalf("got %d packages from 40 stanzas", len(pk))
	}
	if want > 0 && len(pk) < want-1 {
		t.Fatalf("got %d packages, status file has about %d installed", len(pk), want)
	}
	for _, p := range pk {
		if p.Name == "" || p.Version == "" || !strings.HasPrefix(p.PURL, "pkg:deb/debian/"+p.Name+"@") || !strings.Contains(p.PURL, "distro=debian-12") {
			t.Fatalf("bad package %+v", p)
		}
	}
}

func TestParseDpkgStatusSkipsNotInstalledAndStatusD(t *testing.T) {
	data := []byte("Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: libc6\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\nDescription: x\n more\n")
	pk := ParseDpkgStatus(data, "")
	if len(pk) != 1 || pk[0].Name != "libc6" || pk[0].PURL != "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64" {
		t.Fatalf("got %+v", pk)
	}
}

func TestParseApkInstalled(t *testing.T) {
	data := []byte("C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\nT:the musl c library\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\n\n")
	pk := ParseApkInstalled(data, "alpine-3.19")
	if len(pk) != 2 || pk[0].Name != "musl" || pk[1].Version != "1.36.1-r5" || pk[0].License != "MIT" {
		t.Fatalf("got %+v", pk)
	}
	if pk[0].PURL != "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19" {
		t.Fatalf("purl %s", pk[0].PURL)
	}
}

func TestParseOSRelease(t *testing.T) {
	for _, f := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		m := ParseOSRelease(b)
		if m["ID"] == "" || m["PRETTY_NAME"] == "" || strings.Contains(m["PRETTY_NAME"], `"`) {
			t.Fatalf("%s: parsed %v", f, m)
		}
		return
	}
	testenv.Unavailable(t, "no os-release on this host")
}

func TestParsePythonMetadata(t *testing.T) {
	p, ok := ParsePythonMetadata([]byte("Metadata-Version: 2.1\nName: Flask_Login\nVersion: 0.6.3\nLicense: MIT\n\nName: not-this\n"))
	if !ok || p.Name != "Flask_Login" || p.Version != "0.6.3" || p.PURL != "pkg:pypi/flask-login@0.6.3" {
		t.Fatalf("got %+v", p)
	}
	if _, ok := ParsePythonMetadata([]byte("garbage")); ok {
		t.Fatal("garbage parsed")
	}
}

func TestParsePackageJSON(t *testing.T) {
	p, ok := ParsePackageJSON([]byte(`{"name":"@babel/core","version":"7.24.0","license":{"type":"MIT"}}`))
	if !ok || p.PURL != "pkg:npm/%40babel/core@7.24.0" || p.License != "MIT" {
		t.Fatalf("got %+v", p)
	}
	if _, ok := ParsePackageJSON([]byte(`{"version":"1"}`)); ok {
		t.Fatal("nameless package accepted")
	}
}

func jar(t testing.TB, files map[string][]byte) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, b := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	zw.Close()
	return buf.Bytes()
}

func TestScanJarPomManifestAndNested(t *testing.T) {
	inner := jar(t, map[string][]byte{"META-INF/MANIFEST.MF": []byte("Manifest-Version: 1.0\nImplementation-Title: guava\nImplementation-Version: 33.0.0-jre\nImplementation-Vendor-Id: com.google.guava\n")})
	war := jar(t, map[string][]byte{
		"META-INF/maven/org.example/app/pom.properties": []byte("#x\ngroupId=org.example\nartifactId=app\nversion=1.2.3\n"),
		"WEB-INF/lib/guava.jar":                         inner,
	})
	pk, err := ScanJar(bytes.NewReader(war), int64(len(war)), "/app/app.war")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range pk {
		got[p.PURL] = p.Path
	}
	if got["pkg:maven/org.example/app@1.2.3"] != "/app/app.war" || got["pkg:maven/com.google.guava/guava@33.0.0-jre"] != "/app/app.war!/WEB-INF/lib/guava.jar" {
		t.Fatalf("got %v", got)
	}
	if _, err := ScanJar(bytes.NewReader([]byte("PK\x03\x04junk")), 10, "/x.jar"); err == nil {
		t.Fatal("junk jar accepted")
	}
}

// buildTinyGo compiles a tiny stdlib-only Go program (a real ELF with build info).
func buildTinyGo(t testing.TB) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		testenv.Unavailable(t, "go toolchain not on PATH")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/tiny\n\ngo 1.22\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"tiny\") }\n"), 0o644)
	out := filepath.Join(dir, "tiny")
	cmd := exec.Command(goBin, "build", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false", "GOPROXY=off", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build tiny go program: %v\n%s", err, b)
	}
	return out
}

func TestGoBinary(t *testing.T) {
	f, err := os.Open(buildTinyGo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pk, gv, err := GoBinary(f, "/app/tiny")
	if err != nil || !strings.HasPrefix(gv, "go1.") || len(pk) != 2 {
		t.Fatalf("buildinfo: %v %q %v", err, gv, pk)
	}
	if pk[0].Name != "example.com/tiny" || pk[0].PURL != "pkg:golang/example.com/tiny@%28devel%29" || pk[1].Name != "stdlib" || pk[1].Version != gv {
		t.Fatalf("got %+v", pk)
	}
	if _, _, err := GoBinary(bytes.NewReader([]byte("\x7fELF\x02\x01\x01junk")), "/x"); err == nil {
		t.Fatal("junk ELF accepted")
	}
}

package inspect

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

const distrolessOSRelease = `PRETTY_NAME="Distroless"
NAME="Debian GNU/Linux"
ID="debian"
VERSION_ID="12"
VERSION="Debian GNU/Linux 12 (bookworm)"
HOME_URL="https://github.com/GoogleContainerTools/distroless"
`

func TestDistrolessStaticWithGoBinary(t *testing.T) {
	root := t.TempDir()
	write(t, root, "app/server", tinyGo(t), 0o755)
	write(t, root, "etc/os-release", []byte(distrolessOSRelease), 0o644)
	write(t, root, "var/lib/dpkg/status.d/base-files", hostDpkg(t, 1), 0o644)
	write(t, root, "var/lib/dpkg/status.d/base-files.md5sums", []byte("Package: bogus\nVersion: 1\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "tmp"), os.ModeSticky|0o777)
	os.Chmod(filepath.Join(root, "tmp"), os.ModeSticky|0o777)
	rep := scan(t, Target{Root: root, ImageUser: "65532", UserKnown: true}, Options{})
	if rep.Profile.Name != "distroless-static" || rep.Profile.Vendor != "google-distroless" {
		t.Fatalf("profile %+v", rep.Profile)
	}
	for _, k := range []loupev1.Kind{loupev1.Kind_KIND_SHELL_PRESENT, loupev1.Kind_KIND_PKG_MANAGER_PRESENT, loupev1.Kind_KIND_RUNS_AS_ROOT, loupev1.Kind_KIND_WORLD_WRITABLE} {
		if fs := ofKind(rep, k); len(fs) != 0 {
			t.Fatalf("unexpected %v: %v", k, fs)
		}
	}
	purls := map[string]bool{}
	for _, p := range rep.Packages {
		purls[p.PURL] = true
		if p.Name == "bogus" {
			t.Fatal(".md5sums file was parsed as a status file")
		}
	}
	if !purls["pkg:golang/example.com/tiny@%28devel%29"] {
		t.Fatalf("go main module missing: %v", purls)
	}
	debs := 0
	for p := range purls {
		if strings.HasPrefix(p, "pkg:deb/debian/") && strings.Contains(p, "distro=debian-12") {
			debs++
		}
	}
	if debs != 1 {
		t.Fatalf("want 1 deb package with distro qualifier, got %v", purls)
	}
	if got := ofKind(rep, loupev1.Kind_KIND_IMAGE_PROFILE); len(got) != 1 || got[0].Details["profile"] != "distroless-static" {
		t.Fatalf("IMAGE_PROFILE %v", got)
	}
}

func TestDistrolessFlavours(t *testing.T) {
	tiny := tinyGo(t)
	cases := []struct {
		name  string
		files map[string]string // path -> host file or "" for the Go binary
		want  string
	}{
		{"base", map[string]string{"lib/x86_64-linux-gnu/libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6"}, "distroless-base"},
		{"cc", map[string]string{"lib/x86_64-linux-gnu/libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6", "usr/lib/x86_64-linux-gnu/libstdc++.so.6": ""}, "distroless-cc"},
		{"java", map[string]string{"usr/lib/jvm/java-17/bin/java": "", "lib/x86_64-linux-gnu/libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6"}, "distroless-java"},
		{"python", map[string]string{"usr/bin/python3.11": ""}, "distroless-python"},
		{"nodejs", map[string]string{"nodejs/bin/node": ""}, "distroless-nodejs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for p, host := range c.files {
				if host == "" {
					write(t, root, p, tiny, 0o755)
				} else {
					copyHost(t, root, p, host)
				}
			}
			if rep := scan(t, Target{Root: root}, Options{}); rep.Profile.Name != c.want {
				t.Fatalf("profile %+v, want %s", rep.Profile, c.want)
			}
		})
	}
}

func TestWolfiWithApk(t *testing.T) {
	root := t.TempDir()
	write(t, root, "etc/os-release", []byte("ID=wolfi\nNAME=\"Wolfi\"\nPRETTY_NAME=\"Wolfi\"\nVERSION_ID=\"20230201\"\nHOME_URL=\"https://wolfi.dev\"\n"), 0o644)
	write(t, root, "lib/apk/db/installed", []byte("P:glibc\nV:2.39-r5\nA:x86_64\nL:LGPL-2.1-or-later\n\nP:apk-tools\nV:2.14.4-r0\nA:x86_64\n\n"), 0o644)
	copyHost(t, root, "usr/bin/apk", "/bin/true")
	copyHost(t, root, "bin/busybox", "/bin/busybox")
	symlink(t, root, "bin/sh", "/bin/busybox")
	rep := scan(t, Target{Root: root}, Options{})
	if rep.Profile.Vendor != "wolfi" || rep.Profile.Name != "distro" {
		t.Fatalf("profile %+v", rep.Profile)
	}
	found := false
	for _, p := range rep.Packages {
		if p.PURL == "pkg:apk/wolfi/glibc@2.39-r5?arch=x86_64&distro=wolfi-20230201" {
			found = true
		}
	}
	if !found {
		t.Fatalf("apk purl missing: %+v", rep.Packages)
	}
	if len(ofKind(rep, loupev1.Kind_KIND_PKG_MANAGER_PRESENT)) != 1 {
		t.Fatal("apk not reported")
	}
}

// TestBusyboxByContent uses Debian's real busybox-static binary: the shell
// is recognised by content, under an innocent name, and through every link.
func TestBusyboxByContent(t *testing.T) {
	root := t.TempDir()
	copyHost(t, root, "bin/busybox", "/bin/busybox")
	copyHost(t, root, "usr/local/bin/innocent", "/bin/busybox")
	symlink(t, root, "bin/sh", "busybox")
	symlink(t, root, "bin/ash", "/bin/busybox")
	symlink(t, root, "usr/bin/wget", "../../bin/busybox")
	if err := os.Link(filepath.Join(root, "bin/busybox"), filepath.Join(root, "bin/nc")); err != nil {
		t.Fatal(err)
	}
	symlink(t, root, "bin/bash", "/nonexistent/bash") // dangling: no shell
	rep := scan(t, Target{Root: root, UserKnown: true}, Options{})
	sh := paths(ofKind(rep, loupev1.Kind_KIND_SHELL_PRESENT))
	for _, p := range []string{"/bin/busybox", "/usr/local/bin/innocent", "/bin/sh", "/bin/ash"} {
		f := sh[p]
		if f == nil {
			t.Fatalf("no SHELL_PRESENT for %s; got %v", p, sh)
		}
		if f.Details["provider"] != "busybox" || len(f.GetFile().GetSha256()) != 64 {
			t.Fatalf("%s: %v", p, f)
		}
	}
	if sh["/bin/bash"] != nil {
		t.Fatal("dangling link reported as a shell")
	}
	if sh["/bin/sh"].GetFile().GetLinkTarget() != "busybox" || sh["/bin/sh"].Details["resolves_to"] != "/bin/busybox" {
		t.Fatalf("link details: %v", sh["/bin/sh"])
	}
	tools := paths(ofKind(rep, loupev1.Kind_KIND_TOOL_PRESENT))
	if tools["/usr/bin/wget"] == nil || tools["/bin/nc"] == nil {
		t.Fatalf("busybox applet tools missing: %v", tools)
	}
	if rep.Profile.Name != "minimal" {
		t.Fatalf("profile %+v", rep.Profile)
	}
	if len(ofKind(rep, loupev1.Kind_KIND_RUNS_AS_ROOT)) != 1 {
		t.Fatal("unset user not reported as root")
	}
}

func TestFullDistroAndHardening(t *testing.T) {
	root := t.TempDir()
	copyHost(t, root, "usr/bin/dash", "/usr/bin/dash")
	symlink(t, root, "bin", "usr/bin")
	symlink(t, root, "usr/bin/sh", "dash")
	copyHost(t, root, "usr/bin/apt-get", "/bin/true")
	copyHost(t, root, "usr/bin/dpkg", "/bin/true")
	copyHost(t, root, "usr/bin/curl", "/bin/true")
	write(t, root, "usr/lib/os-release", []byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n"), 0o644)
	symlink(t, root, "etc/os-release", "../usr/lib/os-release")
	write(t, root, "var/lib/dpkg/status", hostDpkg(t, 30), 0o644)
	write(t, root, "usr/bin/passwd", []byte("\x7fELF fake"), os.ModeSetuid|0o755)
	write(t, root, "usr/bin/wall", []byte("#!/bin/sh\n"), os.ModeSetgid|0o755)
	write(t, root, "etc/shadow-ish", []byte("x"), 0o666)
	os.MkdirAll(filepath.Join(root, "var/dropbox"), 0o777)
	os.Chmod(filepath.Join(root, "var/dropbox"), 0o777)
	rep := scan(t, Target{Root: root, ImageUser: "0:0", UserKnown: true}, Options{})
	if rep.Profile.Name != "distro" || rep.Profile.OSID != "debian" || rep.Profile.OSVersion != "12" {
		t.Fatalf("profile %+v", rep.Profile)
	}
	if paths(ofKind(rep, loupev1.Kind_KIND_SHELL_PRESENT))["/usr/bin/sh"] == nil {
		t.Fatal("sh -> dash not found")
	}
	if pm := paths(ofKind(rep, loupev1.Kind_KIND_PKG_MANAGER_PRESENT)); pm["/usr/bin/apt-get"] == nil || pm["/usr/bin/dpkg"] == nil {
		t.Fatalf("package managers: %v", pm)
	}
	suid := paths(ofKind(rep, loupev1.Kind_KIND_SUID))
	if len(suid) != 2 || suid["/usr/bin/passwd"].GetSeverity() != loupev1.Severity_SEVERITY_HIGH || suid["/usr/bin/wall"] == nil {
		t.Fatalf("suid: %v", suid)
	}
	ww := paths(ofKind(rep, loupev1.Kind_KIND_WORLD_WRITABLE))
	if len(ww) != 2 || ww["/etc/shadow-ish"] == nil || ww["/var/dropbox"] == nil {
		t.Fatalf("world-writable: %v", ww)
	}
	if len(ofKind(rep, loupev1.Kind_KIND_RUNS_AS_ROOT)) != 1 {
		t.Fatal("root user not reported")
	}
	if n := len(ofKind(rep, loupev1.Kind_KIND_PACKAGE)); n < 20 {
		t.Fatalf("only %d PACKAGE findings from 30 real dpkg stanzas", n)
	}
	for _, f := range rep.Findings {
		if f.GetId() == "" || f.GetTime() == nil || f.GetRule() == "" {
			t.Fatalf("incomplete finding %v", f)
		}
	}
	if strings.Count(dump(t, rep), "\"bomFormat\": \"CycloneDX\"") != 1 {
		t.Fatal("SBOM not rendered")
	}
}

// A Go program that carries the shells' marker strings (Loupe itself, or
// this test binary) is not a shell; real busybox still is (TestBusyboxByContent).
func TestScannerBinaryIsNotAShell(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), string(markBusybox)) || !strings.Contains(string(b), string(markBash)) {
		t.Fatal("the test binary lacks the marker strings this test relies on")
	}
	root := t.TempDir()
	write(t, root, "usr/local/bin/scanner", b, 0o755)
	rep := scan(t, Target{Root: root, ImageUser: "65532", UserKnown: true}, Options{})
	if fs := ofKind(rep, loupev1.Kind_KIND_SHELL_PRESENT); len(fs) != 0 {
		t.Fatalf("a Go binary with marker strings reported as a shell: %v", fs[0].GetSummary())
	}
}

func TestVersionMarker(t *testing.T) {
	for in, want := range map[string]bool{
		"xxBusyBox v1.35.0 (Debian)": true, "BusyBox v 1.2": true, "BusyBox v": false,
		"BusyBox vX BusyBox v9": true, "\x00toybox\x00": false, "BusyBox vsomething": false,
	} {
		if got := versionMarker([]byte(in), markBusybox); got != want {
			t.Errorf("versionMarker(%q) = %v", in, got)
		}
	}
}

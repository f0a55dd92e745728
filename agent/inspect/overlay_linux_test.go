package inspect

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/testenv"
)

func whiteout(t *testing.T, root, p string) {
	t.Helper()
	full := filepath.Join(root, p)
	os.MkdirAll(filepath.Dir(full), 0o755)
	if err := unix.Mknod(full, unix.S_IFCHR|0o000, 0); err != nil {
		t.Fatalf("mknod whiteout: %v", err)
	}
}

func opaque(t *testing.T, root, p string) {
	t.Helper()
	full := filepath.Join(root, p)
	os.MkdirAll(full, 0o755)
	if err := unix.Setxattr(full, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		testenv.Unavailable(t, "trusted.* xattrs on the test filesystem: "+err.Error())
	}
}

// overlayImage builds a three-layer image plus an upper dir the way
// containerd's overlayfs snapshotter lays them out on disk.
func overlayImage(t *testing.T) (Target, string) {
	testenv.RequireRoot(t)
	base := t.TempDir()
	l0, l1, l2, up := filepath.Join(base, "l0"), filepath.Join(base, "l1"), filepath.Join(base, "l2"), filepath.Join(base, "upper")
	for _, d := range []string{l0, l1, l2, up} {
		os.MkdirAll(d, 0o755)
	}
	tiny := tinyGo(t)
	// l0: a debian-ish base with dash and a shell link.
	copyHost(t, l0, "bin/dash", "/usr/bin/dash")
	symlink(t, l0, "bin/sh", "dash")
	copyHost(t, l0, "usr/bin/apt-get", "/bin/true")
	write(t, l0, "opt/tools/curl", tiny, 0o755)
	// l1: the image build removes the shell and apt (whiteouts) and the
	// whole /opt/tools directory contents (opaque dir with a new file).
	whiteout(t, l1, "bin/sh")
	whiteout(t, l1, "bin/dash")
	whiteout(t, l1, "usr/bin/apt-get")
	opaque(t, l1, "opt/tools")
	write(t, l1, "opt/tools/README", []byte("nothing here"), 0o644)
	// l2: the application.
	write(t, l2, "app/server", tiny, 0o755)
	write(t, l2, "app/config.yaml", []byte("a: 1"), 0o644)
	// upper: runtime drift.
	write(t, up, "tmp/payload", tiny, 0o755)                     // added executable
	write(t, up, "app/server", append(tiny, 0), 0o755)           // modified executable
	write(t, up, "app/config.yaml", []byte("a: 2"), 0o644)       // modified data (no finding)
	whiteout(t, up, "app/config.yaml.bak")                       // whiteout over nothing
	copyHost(t, up, "usr/local/bin/busybox", "/bin/busybox")     // shell added at runtime
	write(t, up, "tmp/run.sh", []byte("#!/bin/sh\nid\n"), 0o644) // script without exec bit
	return Target{Layers: []Layer{{Dir: l0, ID: "sha256:l0"}, {Dir: l1, ID: "sha256:l1"}, {Dir: l2, ID: "sha256:l2"}}, Upper: up}, base
}

func TestOverlayMergeWhiteoutsOpaqueAndDrift(t *testing.T) {
	tg, _ := overlayImage(t)
	rep := scan(t, tg, Options{})
	sh := paths(ofKind(rep, loupev1.Kind_KIND_SHELL_PRESENT))
	if len(sh) != 1 || sh["/usr/local/bin/busybox"] == nil || sh["/usr/local/bin/busybox"].GetFile().GetLayer() != UpperLayer {
		t.Fatalf("only the runtime busybox should be a shell (whiteouts hide dash and sh): %v", sh)
	}
	if pm := ofKind(rep, loupev1.Kind_KIND_PKG_MANAGER_PRESENT); len(pm) != 0 {
		t.Fatalf("apt-get was whited out: %v", pm)
	}
	if tools := ofKind(rep, loupev1.Kind_KIND_TOOL_PRESENT); len(tools) != 0 {
		t.Fatalf("/opt/tools/curl is under an opaque dir: %v", tools)
	}
	drift := paths(ofKind(rep, loupev1.Kind_KIND_DRIFT_FILE))
	if f := drift["/tmp/payload"]; f == nil || f.GetFile().GetChange() != "added" || len(f.GetFile().GetSha256()) != 64 || f.GetSeverity() != loupev1.Severity_SEVERITY_HIGH {
		t.Fatalf("added payload: %v", f)
	}
	if f := drift["/app/server"]; f == nil || f.GetFile().GetChange() != "modified" || f.Details["lower_layer"] != "sha256:l2" {
		t.Fatalf("modified server: %v", f)
	}
	if f := drift["/tmp/run.sh"]; f == nil || f.GetFile().GetChange() != "added" {
		t.Fatalf("script by content: %v", f)
	}
	if drift["/app/config.yaml"] != nil || drift["/app/config.yaml.bak"] != nil {
		t.Fatalf("non-executables must not be DRIFT_FILE: %v", drift)
	}
	if rep.Drift.Modified != 2 || rep.Drift.Deleted != 0 {
		t.Fatalf("drift summary %+v", rep.Drift)
	}
	if rep.Profile.Name != "minimal" {
		t.Fatalf("profile %+v", rep.Profile)
	}
}

func TestDriftDeletedExecutable(t *testing.T) {
	tg, _ := overlayImage(t)
	whiteout(t, tg.Upper, "app/server2")
	write(t, tg.Layers[2].Dir, "app/server2", tinyGo(t), 0o755)
	rep := scan(t, tg, Options{})
	f := paths(ofKind(rep, loupev1.Kind_KIND_DRIFT_FILE))["/app/server2"]
	if f == nil || f.GetFile().GetChange() != "deleted" || f.Details["lower_layer"] != "sha256:l2" || rep.Drift.Deleted != 1 {
		t.Fatalf("deleted: %v %+v", f, rep.Drift)
	}
}

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

// TestMergedViewMatchesKernelOverlay checks the merged view computed from
// the layers against the kernel's: the same layers mounted as a real
// overlayfs and scanned as a plain root give the same programs.
func TestMergedViewMatchesKernelOverlay(t *testing.T) {
	tg, base := overlayImage(t)
	l0, l1, l2 := tg.Layers[0].Dir, tg.Layers[1].Dir, tg.Layers[2].Dir
	tiny := tinyGo(t)
	write(t, l0, "usr/bin/wget", tiny, 0o755)                  // survives
	write(t, l0, "usr/bin/su", tiny, os.ModeSetuid|0o755)      // survives
	write(t, l0, "usr/bin/nc", tiny, 0o755)                    // replaced by data in l2
	write(t, l2, "usr/bin/nc", []byte("not a program"), 0o644) //
	symlink(t, l1, "bin/ash", "/usr/local/bin/busybox")        // resolves into the upper dir
	write(t, l1, "opt/tools/gdb", tiny, 0o755)                 // new file inside the opaque dir
	merged, work := filepath.Join(base, "merged"), filepath.Join(base, "work")
	os.MkdirAll(merged, 0o755)
	os.MkdirAll(work, 0o755)
	lower := tg.Layers[2].Dir + ":" + tg.Layers[1].Dir + ":" + tg.Layers[0].Dir
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+tg.Upper+",workdir="+work); err != nil {
		testenv.Unavailable(t, "overlayfs mount: "+err.Error())
	}
	defer unix.Unmount(merged, unix.MNT_DETACH)

	fromLayers := scan(t, tg, Options{})
	fromKernel := scan(t, Target{Root: merged}, Options{})
	key := func(r *Report) map[string]string {
		m := map[string]string{}
		for _, f := range r.Findings {
			switch f.GetKind() {
			case loupev1.Kind_KIND_SHELL_PRESENT, loupev1.Kind_KIND_PKG_MANAGER_PRESENT, loupev1.Kind_KIND_TOOL_PRESENT, loupev1.Kind_KIND_SUID, loupev1.Kind_KIND_WORLD_WRITABLE:
				m[f.GetKind().ShortName()+" "+f.GetFile().GetPath()] = f.GetFile().GetSha256()
			}
		}
		return m
	}
	a, b := key(fromLayers), key(fromKernel)
	if len(a) < 5 || len(a) != len(b) {
		t.Fatalf("layers: %v\nkernel overlay: %v", a, b)
	}
	for k, v := range a {
		if b[k] != v {
			t.Fatalf("%s: layers %q, kernel overlay %q", k, v, b[k])
		}
	}
	t.Logf("layers and kernel overlay agree on %v", a)
	if fromLayers.Profile.Name != fromKernel.Profile.Name {
		t.Fatalf("profile: layers %s, kernel %s", fromLayers.Profile.Name, fromKernel.Profile.Name)
	}
}

//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package classify

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/bpf"
	"github.com/loupe-dev/loupe/internal/testenv"
)

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
}

// TestClassifyRealKernel runs programs in a cgroup, chrooted into an
// overlay mount shaped like a container's root (image = lowerdir with a
// static busybox, runtime changes = upperdir), and classifies what the real
// tracer reports.
func TestClassifyRealKernel(t *testing.T) {
	testenv.RequireRoot(t)
	busybox := testenv.RequireCommand(t, "busybox")

	// cgroup v2
	cgRoot := "/sys/fs/cgroup/unified"
	var sfs unix.Statfs_t
	if unix.Statfs(cgRoot, &sfs) != nil || sfs.Type != unix.CGROUP2_SUPER_MAGIC {
		cgRoot = "/sys/fs/cgroup"
	}
	cgDir, err := os.MkdirTemp(cgRoot, "loupe-test-")
	if err != nil {
		testenv.Unavailable(t, "cannot create a cgroup v2: "+err.Error())
	}
	t.Cleanup(func() {
		for i := 0; i < 50 && os.Remove(cgDir) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
	var st unix.Stat_t
	if err := unix.Stat(cgDir, &st); err != nil {
		t.Fatal(err)
	}
	cgID := st.Ino
	cgFD, err := unix.Open(cgDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cgFD)

	// overlay root
	base := t.TempDir()
	lower, upper, work, merged := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{lower, upper, work, merged} {
		os.MkdirAll(d, 0o755)
	}
	copyFile(t, busybox, filepath.Join(lower, "bin", "busybox"))
	os.Symlink("busybox", filepath.Join(lower, "bin", "sh"))
	copyFile(t, busybox, filepath.Join(upper, "tmp", "evil"))
	if err := os.WriteFile(filepath.Join(upper, "tmp", "run.sh"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		testenv.Unavailable(t, "cannot mount overlay: "+err.Error())
	}
	t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })

	tr, err := bpf.NewTracer(bpf.Config{ExecFailures: true})
	if errors.Is(err, unix.EPERM) {
		testenv.Unavailable(t, "eBPF not permitted: "+err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.TrackCgroup(cgID); err != nil {
		t.Fatal(err)
	}
	ctr := Container{Ref: &loupev1.ContainerRef{Id: "c0ffee", Name: "app", Pod: "web-0", Namespace: "shop"}, UpperDir: upper}
	procs := NewProcTable("/proc", 0)
	if _, err := procs.Seed(); err != nil {
		t.Fatal(err)
	}
	cl := New(Options{Node: "n1", Containers: fakeContainers{byCgroup: map[uint64]Container{cgID: ctr}}, Drift: UpperDir{}, Procs: procs,
		PathSearchWindow: time.Minute})

	log, stop := collect(tr, cl)
	defer stop()

	run := func(name string, args ...string) error {
		cmd := exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgFD, Chroot: merged}
		return cmd.Run()
	}
	if err := run("/bin/sh", "-c", "exit 0"); err != nil {
		t.Fatalf("sh: %v", err)
	}
	run("/tmp/evil") // busybox under another name: "applet not found", but it was executed
	if err := run("/tmp/run.sh"); err != nil {
		t.Fatalf("script added at runtime: %v", err)
	}
	if err := run("/bin/bash", "-c", "id"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("bash in a root without it: %v", err)
	}
	// env (glibc execvp) searches PATH with execve: two misses, then /usr/bin/id (on the host root)
	dash := exec.Command("/usr/bin/env", "id")
	dash.Env = []string{"PATH=/nonexistent-a:/nonexistent-b:/usr/bin"}
	dash.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgFD}
	if out, err := dash.CombinedOutput(); err != nil {
		t.Fatalf("env id: %v: %s", err, out)
	}

	find := func(what string, pred func(*loupev1.Finding) bool) *loupev1.Finding {
		t.Helper()
		return log.find(t, 5*time.Second, what, pred)
	}
	sh := find("SHELL_EXEC", func(f *loupev1.Finding) bool { return f.Kind == loupev1.Kind_KIND_SHELL_EXEC })
	if sh.Container.GetPod() != "web-0" || sh.Process.Filename != "/bin/busybox" || sh.Details["filename_passed"] != "/bin/sh" ||
		len(sh.Process.Ancestors) == 0 || sh.Process.Ancestors[0].Pid != int32(os.Getpid()) || sh.Process.CgroupId != cgID {
		t.Errorf("shell finding: %v", sh)
	}
	drift := find("DRIFT_EXEC", func(f *loupev1.Finding) bool { return f.Kind == loupev1.Kind_KIND_DRIFT_EXEC })
	if drift.File.GetPath() != "/tmp/evil" || drift.Severity != loupev1.Severity_SEVERITY_HIGH {
		t.Errorf("drift finding: %v", drift)
	}
	id := find("exec of id after a PATH search", func(f *loupev1.Finding) bool {
		return f.Kind == loupev1.Kind_KIND_EXEC && f.Process.GetComm() == "id"
	})
	if id.Details["path_search_misses"] != "2" {
		t.Errorf("path_search_misses = %q", id.Details["path_search_misses"])
	}
	// the held failure of /bin/bash (nothing followed it) comes out of Flush
	log.add(cl.Flush(time.Time{})...)
	script := find("DRIFT_EXEC of a script", func(f *loupev1.Finding) bool {
		return f.Kind == loupev1.Kind_KIND_DRIFT_EXEC && f.File.GetPath() == "/tmp/run.sh"
	})
	if script.Process.Interpreter != "/bin/sh" {
		t.Errorf("script drift finding: %v", script)
	}
	failed := find("EXEC_FAILED", func(f *loupev1.Finding) bool { return f.Kind == loupev1.Kind_KIND_EXEC_FAILED })
	if failed.Process.Filename != "/bin/bash" || failed.Process.Errno != int32(syscall.ENOENT) || failed.Severity != loupev1.Severity_SEVERITY_HIGH {
		t.Errorf("failed finding: %v", failed)
	}
	for _, f := range log.all() {
		if f.Kind == loupev1.Kind_KIND_DRIFT_EXEC && f.File.GetPath() != "/tmp/evil" && f.File.GetPath() != "/tmp/run.sh" {
			t.Errorf("image file reported as drift: %v", f)
		}
		if strings.Contains(f.Process.GetFilename(), "nonexistent-") {
			t.Errorf("PATH-search miss reported: %v", f)
		}
	}
}

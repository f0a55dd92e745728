//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package bpf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/loupe-dev/loupe/internal/testenv"
)

// TestMain doubles as a helper process for tests that need a program doing
// something specific (an exec from a non-leader thread).
func TestMain(m *testing.M) {
	switch os.Getenv("LOUPE_BPF_TEST_HELPER") {
	case "thread-exec":
		threadExec()
	case "new-tracer":
		_, err := NewTracer(Config{})
		fmt.Printf("error: %v\n", err)
		os.Exit(0)
	}
	forceLegacy = os.Getenv("LOUPE_BPF_TEST_LEGACY") == "1"
	os.Exit(m.Run())
}

// forceLegacy makes every test load the variants for older kernels
// (TestLegacyPaths sets it in a child run).
var forceLegacy bool

// loadErrs remembers load failures by mode, so that a kernel refusing the
// programs fails each later test at once instead of verifying them again.
var loadErrs sync.Map

func haveBPFLoop(t *testing.T) bool {
	err := features.HaveProgramHelper(ebpf.TracePoint, asm.FnLoop)
	if err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		t.Fatal(err)
	}
	return err == nil
}

// threadExec execs from a thread that is not the thread-group leader: first
// a missing file (fails), then /bin/echo.
func threadExec() {
	runtime.LockOSThread() // keep the leader thread to this goroutine
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		tid := unix.Gettid()
		if tid == unix.Getpid() {
			fmt.Println("error: on the leader thread")
			os.Exit(3)
		}
		fmt.Printf("tid=%d\n", tid)
		err := syscall.Exec("/nonexistent/loupe-thread-exec", []string{"missing", "thread"}, nil)
		fmt.Printf("first exec: %v\n", err)
		err = syscall.Exec("/bin/echo", []string{"echo", "from-thread"}, nil)
		fmt.Printf("error: %v\n", err)
		os.Exit(4)
	}()
	<-done
}

// cgroup is a cgroup v2 directory created for one test.
type cgroup struct {
	path string
	id   uint64
	fd   int
}

func cgroupRoot(t *testing.T) string {
	for _, p := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p
		}
	}
	testenv.Unavailable(t, "no cgroup v2 hierarchy mounted")
	return ""
}

func newCgroup(t *testing.T) *cgroup {
	t.Helper()
	dir, err := os.MkdirTemp(cgroupRoot(t), "loupe-test-")
	if err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	cg := &cgroup{path: dir, id: st.Ino, fd: fd}
	t.Cleanup(func() {
		unix.Close(fd)
		// processes may take a moment to leave the cgroup after being reaped
		for i := 0; i < 50; i++ {
			if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("could not remove %s", dir)
	})
	return cg
}

// command returns a command that starts inside the cgroup.
func (cg *cgroup) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.fd}
	return cmd
}

// collector gathers the events a tracer reads.
type collector struct {
	mu     sync.Mutex
	events []*Event
}

func (c *collector) add(ev *Event) {
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.mu.Unlock()
}

func (c *collector) snapshot() []*Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// wait returns the first event matching pred, failing the test after timeout.
func (c *collector) wait(t *testing.T, what string, pred func(*Event) bool) *Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range c.snapshot() {
			if pred(ev) {
				return ev
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, ev := range c.snapshot() {
		t.Logf("seen: %s pid=%d comm=%q file=%q argv=%q errno=%d", ev.Type, ev.PID, ev.Comm, ev.Filename, ev.Argv, ev.Errno)
	}
	t.Fatalf("no event: %s", what)
	return nil
}

// newTracer loads a tracer; a kernel that refuses eBPF to us makes the test
// unavailable, any other error is a failure.
func newTracer(t *testing.T, cfg Config) *Tracer {
	t.Helper()
	testenv.RequireRoot(t)
	if forceLegacy {
		cfg.NoBPFLoop, cfg.NoGroupDead = true, true
	}
	key := fmt.Sprintf("%v/%v/%v", cfg.NoBPFLoop, cfg.NoGroupDead, cfg.ExecFailures)
	if err, ok := loadErrs.Load(key); ok {
		t.Fatalf("NewTracer failed in an earlier test: %v", err)
	}
	tr, err := NewTracer(cfg)
	if err != nil && !errors.Is(err, unix.EPERM) {
		loadErrs.Store(key, err)
	}
	if errors.Is(err, unix.EPERM) {
		testenv.Unavailable(t, "eBPF not permitted: "+err.Error())
	}
	if err != nil {
		t.Fatalf("NewTracer: %v", err)
	}
	t.Logf("mode: %s; hooks: %v", tr.Mode(), tr.Hooks())
	return tr
}

func startTracer(t *testing.T, cfg Config) (*Tracer, *collector) {
	t.Helper()
	testenv.RequireRoot(t)
	tr := newTracer(t, cfg)
	c := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Read(ctx, c.add) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Read: %v", err)
		}
		tr.Close()
	})
	return tr, c
}

func hasArg(ev *Event, arg string) bool { return slices.Contains(ev.Argv, arg) }

func TestExecInTrackedCgroup(t *testing.T) {
	tr, c := startTracer(t, Config{RingBufferBytes: 1 << 20})
	cg := newCgroup(t)
	if err := tr.TrackCgroup(cg.id); err != nil {
		t.Fatal(err)
	}
	out, err := cg.command("/bin/echo", "hello", "loupe-exec-1").CombinedOutput()
	if err != nil {
		t.Fatalf("echo: %v: %s", err, out)
	}
	ev := c.wait(t, "exec of /bin/echo", func(ev *Event) bool { return ev.Type == EventExec && hasArg(ev, "loupe-exec-1") })
	if want := []string{"/bin/echo", "hello", "loupe-exec-1"}; !slices.Equal(ev.Argv, want) {
		t.Errorf("argv = %q, want %q", ev.Argv, want)
	}
	if ev.Argc != 3 || ev.ArgvTruncated {
		t.Errorf("argc = %d truncated = %v", ev.Argc, ev.ArgvTruncated)
	}
	if ev.Filename != "/bin/echo" || ev.Comm != "echo" || ev.Interpreter != "" {
		t.Errorf("filename %q comm %q interpreter %q", ev.Filename, ev.Comm, ev.Interpreter)
	}
	real, _ := filepath.EvalSymlinks("/bin/echo")
	if ev.Path != real {
		t.Errorf("path = %q, want %q", ev.Path, real)
	}
	var st unix.Stat_t
	if err := unix.Stat("/bin/echo", &st); err != nil {
		t.Fatal(err)
	}
	if ev.Dev != st.Dev || ev.Ino != st.Ino {
		t.Errorf("dev/ino = %d/%d, want %d/%d", ev.Dev, ev.Ino, st.Dev, st.Ino)
	}
	if ev.CgroupID != cg.id || ev.NSEnter || ev.Untracked || ev.Killed {
		t.Errorf("cgroup %d (want %d) nsenter %v untracked %v killed %v", ev.CgroupID, cg.id, ev.NSEnter, ev.Untracked, ev.Killed)
	}
	if ev.PID != ev.TID || ev.PPID != uint32(os.Getpid()) || ev.UID != 0 || ev.EUID != 0 {
		t.Errorf("pid %d tid %d ppid %d (want %d) uid %d euid %d", ev.PID, ev.TID, ev.PPID, os.Getpid(), ev.UID, ev.EUID)
	}
	var ns unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &ns); err != nil {
		t.Fatal(err)
	}
	if ev.MntNS != ns.Ino {
		t.Errorf("mnt ns = %d, want %d", ev.MntNS, ns.Ino)
	}
	if d := time.Since(ev.Time); d < 0 || d > 10*time.Second {
		t.Errorf("time %v is %v from now", ev.Time, d)
	}
	exit := c.wait(t, "exit of echo", func(e *Event) bool { return e.Type == EventExit && e.PID == ev.PID })
	if exit.Errno != 0 {
		t.Errorf("exit code = %d", exit.Errno)
	}
}

func TestHostExecsFiltered(t *testing.T) {
	tr, c := startTracer(t, Config{ExecFailures: true})
	cg := newCgroup(t)
	if err := tr.TrackCgroup(cg.id); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/bin/echo", "loupe-host-exec").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := exec.Command("/nonexistent/loupe-host-fail").Run(); err == nil {
		t.Fatal("exec of a missing file succeeded")
	}
	if out, err := cg.command("/bin/echo", "loupe-marker").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	c.wait(t, "marker", func(ev *Event) bool { return hasArg(ev, "loupe-marker") })
	for _, ev := range c.snapshot() {
		if ev.CgroupID != cg.id || ev.Untracked || hasArg(ev, "loupe-host-exec") || strings.Contains(ev.Filename, "loupe-host-fail") {
			t.Errorf("host event reported: %+v", ev)
		}
	}
	// untracking stops reporting
	if err := tr.UntrackCgroup(cg.id); err != nil {
		t.Fatal(err)
	}
	if out, err := cg.command("/bin/echo", "loupe-after-untrack").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	time.Sleep(200 * time.Millisecond)
	for _, ev := range c.snapshot() {
		if hasArg(ev, "loupe-after-untrack") {
			t.Errorf("untracked cgroup reported: %+v", ev)
		}
	}
}

func TestTraceHost(t *testing.T) {
	_, c := startTracer(t, Config{TraceHost: true})
	if out, err := exec.Command("/bin/echo", "loupe-trace-host").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ev := c.wait(t, "host exec", func(ev *Event) bool { return hasArg(ev, "loupe-trace-host") })
	if !ev.Untracked || ev.NSEnter {
		t.Errorf("untracked %v nsenter %v", ev.Untracked, ev.NSEnter)
	}
}

func TestFailedExecENOENT(t *testing.T) {
	tr, c := startTracer(t, Config{ExecFailures: true})
	if !slices.Contains(tr.Hooks(), "tracepoint/syscalls/sys_exit_execve") {
		t.Fatalf("hooks = %v", tr.Hooks())
	}
	cg := newCgroup(t)
	if err := tr.TrackCgroup(cg.id); err != nil {
		t.Fatal(err)
	}
	// A root without /bin/sh, like a distroless image.
	root := t.TempDir()
	cmd := cg.command("/bin/sh", "-c", "id")
	cmd.SysProcAttr.Chroot = root
	err := cmd.Run()
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("exec /bin/sh in an empty root: %v, want ENOENT", err)
	}
	ev := c.wait(t, "failed exec", func(ev *Event) bool { return ev.Type == EventExecFailed && ev.Filename == "/bin/sh" })
	if ev.Errno != int32(syscall.ENOENT) {
		t.Errorf("errno = %d", ev.Errno)
	}
	if want := []string{"/bin/sh", "-c", "id"}; !slices.Equal(ev.Argv, want) {
		t.Errorf("argv = %q, want %q", ev.Argv, want)
	}
	if ev.CgroupID != cg.id || ev.Path != "" || ev.Ino != 0 || ev.Execveat {
		t.Errorf("cgroup %d path %q ino %d execveat %v", ev.CgroupID, ev.Path, ev.Ino, ev.Execveat)
	}

	// A successful exec is reported once, by sched_process_exec.
	if out, err := cg.command("/bin/echo", "loupe-once").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	c.wait(t, "exec", func(ev *Event) bool { return hasArg(ev, "loupe-once") })
	time.Sleep(100 * time.Millisecond)
	n := 0
	for _, ev := range c.snapshot() {
		if hasArg(ev, "loupe-once") {
			n++
			if ev.Type != EventExec {
				t.Errorf("successful exec reported as %s", ev.Type)
			}
		}
	}
	if n != 1 {
		t.Errorf("successful exec reported %d times", n)
	}
}

func TestFailedExecArgvBounds(t *testing.T) {
	tr, c := startTracer(t, Config{ExecFailures: true})
	cg := newCgroup(t)
	if err := tr.TrackCgroup(cg.id); err != nil {
		t.Fatal(err)
	}
	var args []string
	for i := 0; i < 40; i++ {
		args = append(args, "arg"+strconv.Itoa(i))
	}
	err := cg.command("/nonexistent/loupe-many", args...).Run()
	if err == nil {
		t.Fatal("exec succeeded")
	}
	ev := c.wait(t, "failed exec with many args", func(ev *Event) bool {
		return ev.Type == EventExecFailed && ev.Filename == "/nonexistent/loupe-many"
	})
	if len(ev.Argv) != MaxArgs || !ev.ArgvTruncated || ev.Argv[0] != "/nonexistent/loupe-many" || ev.Argv[31] != "arg30" {
		t.Errorf("argv (%d) = %q truncated %v", len(ev.Argv), ev.Argv, ev.ArgvTruncated)
	}
}

func TestExecFromNonLeaderThread(t *testing.T) {
	tr, c := startTracer(t, Config{ExecFailures: true})
	cg := newCgroup(t)
	if err := tr.TrackCgroup(cg.id); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := cg.command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), "LOUPE_BPF_TEST_HELPER=thread-exec")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "from-thread") {
		t.Fatalf("helper output: %s", out)
	}
	var tid int
	for _, line := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(line, "tid="); ok {
			tid, _ = strconv.Atoi(s)
		}
	}
	pid := uint32(cmd.Process.Pid)
	if tid == 0 || uint32(tid) == pid {
		t.Fatalf("helper tid %d pid %d: %s", tid, pid, out)
	}
	failed := c.wait(t, "failed exec from thread", func(ev *Event) bool {
		return ev.Type == EventExecFailed && ev.PID == pid
	})
	if failed.TID != uint32(tid) || failed.Filename != "/nonexistent/loupe-thread-exec" || failed.Errno != int32(syscall.ENOENT) {
		t.Errorf("failed exec: tid %d (want %d) filename %q errno %d", failed.TID, tid, failed.Filename, failed.Errno)
	}
	ok := c.wait(t, "exec from thread", func(ev *Event) bool { return ev.Type == EventExec && hasArg(ev, "from-thread") })
	if ok.PID != pid || ok.TID != uint32(tid) {
		t.Errorf("exec: pid %d tid %d, want pid %d tid %d", ok.PID, ok.TID, pid, tid)
	}
	time.Sleep(100 * time.Millisecond)
	n := 0
	for _, ev := range c.snapshot() {
		if ev.PID == pid && ev.Type != EventExit {
			n++
		}
	}
	if n != 3 { // the helper itself, the failed attempt, echo
		for _, ev := range c.snapshot() {
			t.Logf("%s pid %d tid %d %q %q", ev.Type, ev.PID, ev.TID, ev.Filename, ev.Argv)
		}
		t.Errorf("%d exec events for the helper, want 3", n)
	}
}

func TestShebangScript(t *testing.T) {
	tr, c := startTracer(t, Config{})
	cg := newCgroup(t)
	if err := tr.TrackCgroup(cg.id); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "loupe-script.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := cg.command(script, "arg1").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ev := c.wait(t, "script exec", func(ev *Event) bool { return ev.Type == EventExec && ev.Filename == script })
	if ev.Interpreter != "/bin/sh" {
		t.Errorf("interpreter = %q", ev.Interpreter)
	}
	real, _ := filepath.EvalSymlinks("/bin/sh")
	if ev.Path != real {
		t.Errorf("path = %q, want the interpreter %q", ev.Path, real)
	}
	if want := []string{"/bin/sh", script, "arg1"}; !slices.Equal(ev.Argv, want) {
		t.Errorf("argv = %q, want %q", ev.Argv, want)
	}
	if ev.Comm != "loupe-script.sh" {
		t.Errorf("comm = %q", ev.Comm)
	}
}

func TestNSEnterAttributedByMountNamespace(t *testing.T) {
	testenv.RequireCommand(t, "unshare")
	testenv.RequireCommand(t, "nsenter")
	tr, c := startTracer(t, Config{})
	// A process in its own mount namespace, in the host cgroup.
	holder := exec.Command("unshare", "-m", "--propagation", "private", "sleep", "30")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	pid := holder.Process.Pid
	var ino uint64
	for i := 0; i < 100; i++ {
		var st, self unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid), &st) == nil && unix.Stat("/proc/self/ns/mnt", &self) == nil &&
			st.Ino != self.Ino {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) == "sleep" {
				ino = st.Ino
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ino == 0 {
		t.Fatal("unshare did not create a mount namespace")
	}
	if err := tr.TrackMntNS(ino); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-m", "/bin/echo", "loupe-nsenter").CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	ev := c.wait(t, "exec via nsenter", func(ev *Event) bool { return hasArg(ev, "loupe-nsenter") })
	if !ev.NSEnter || ev.MntNS != ino || ev.Untracked {
		t.Errorf("nsenter %v mntns %d (want %d) untracked %v", ev.NSEnter, ev.MntNS, ino, ev.Untracked)
	}
	for _, e := range c.snapshot() {
		if e.Comm == "nsenter" && e.Type == EventExec {
			t.Errorf("nsenter's own exec in the host namespace was reported: %+v", e)
		}
	}
}

func TestRingBufferLossesCounted(t *testing.T) {
	testenv.RequireRoot(t)
	// A one-page ring buffer that nobody reads.
	tr := newTracer(t, Config{RingBufferBytes: 4096})
	defer tr.Close()
	cg := newCgroup(t)
	if err := tr.TrackCgroup(cg.id); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if err := cg.command("/bin/true", strings.Repeat("x", 100)).Run(); err != nil {
			t.Fatal(err)
		}
	}
	lost := tr.Lost()
	if lost == 0 {
		t.Fatal("no lost events counted after 200 execs into a 4 KiB ring buffer")
	}
	t.Logf("lost %d of ~400 records", lost)
	// What fitted is still readable.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var n int
	if err := tr.Read(ctx, func(*Event) { n++ }); err != nil {
		t.Fatal(err)
	}
	if n == 0 || uint64(n)+lost < 400 {
		t.Errorf("read %d, lost %d: want read > 0 and read+lost >= 400", n, lost)
	}
}

func TestEnforcementKillsShell(t *testing.T) {
	tr, c := startTracer(t, Config{Enforce: true})
	cg := newCgroup(t)
	if err := tr.TrackCgroup(cg.id); err != nil {
		t.Fatal(err)
	}
	if err := tr.KillShellsIn(cg.id); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) (string, error) {
		var out bytes.Buffer
		cmd := cg.command(name, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	killed := func(err error) bool {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return false
		}
		ws, ok := ee.Sys().(syscall.WaitStatus)
		return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
	}
	out, err := run("/bin/sh", "-c", "echo loupe-pwned")
	if !killed(err) || out != "" {
		t.Fatalf("sh: err %v output %q, want SIGKILL and no output", err, out)
	}
	ev := c.wait(t, "killed shell", func(ev *Event) bool { return ev.Type == EventExec && hasArg(ev, "echo loupe-pwned") })
	if !ev.Killed {
		t.Errorf("event not marked killed: %+v", ev)
	}
	if bb, err := exec.LookPath("busybox"); err == nil {
		out, err := run(bb, "sh", "-c", "echo loupe-busybox")
		if !killed(err) || out != "" {
			t.Errorf("busybox sh: err %v output %q, want SIGKILL and no output", err, out)
		}
		out, err = run(bb, "echo", "loupe-busybox-echo")
		if err != nil || !strings.Contains(out, "loupe-busybox-echo") {
			t.Errorf("busybox echo: err %v output %q, want it to run", err, out)
		}
	}
	// Not a shell: runs.
	out, err = run("/bin/echo", "loupe-allowed")
	if err != nil || !strings.Contains(out, "loupe-allowed") {
		t.Errorf("echo: %v %q", err, out)
	}
	// A script whose interpreter is a shell is killed too.
	script := filepath.Join(t.TempDir(), "s.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho loupe-script\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err = run(script)
	if !killed(err) || out != "" {
		t.Errorf("script: err %v output %q, want SIGKILL", err, out)
	}
	// Outside the policy's cgroup shells run.
	if err := tr.StopKillingIn(cg.id); err != nil {
		t.Fatal(err)
	}
	out, err = run("/bin/sh", "-c", "echo loupe-free")
	if err != nil || !strings.Contains(out, "loupe-free") {
		t.Errorf("sh after StopKillingIn: %v %q", err, out)
	}
}

func TestEnforcementOffByDefault(t *testing.T) {
	tr, _ := startTracer(t, Config{})
	if err := tr.KillShellsIn(1); !errors.Is(err, ErrEnforcementOff) {
		t.Errorf("KillShellsIn without Enforce: %v", err)
	}
}

// Without privileges NewTracer fails with a message saying what is missing.
func TestUnprivilegedFailsClearly(t *testing.T) {
	testenv.RequireRoot(t) // to drop to nobody
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "loupe-bpf-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "bpf.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "LOUPE_BPF_TEST_HELPER=new-tracer")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "error: load exec tracer: remove memlock limit (needs root") {
		t.Errorf("unprivileged NewTracer said: %s", out)
	}
}

// A failed-exec hook that cannot attach leaves the tracer running without
// failure tracing, says so in Mode, and releases what it had attached.
func TestDegradesWithoutFailureHooks(t *testing.T) {
	failHook = "tracepoint/syscalls/sys_exit_execveat"
	defer func() { failHook = "" }()
	tr, c := startTracer(t, Config{ExecFailures: true})
	m := tr.Mode()
	if !m.Degraded() || !strings.HasPrefix(m.ExecFailures, "unavailable: attach tracepoint/syscalls/sys_exit_execveat: failure injected") {
		t.Fatalf("mode %s, want exec_failures unavailable", m)
	}
	if strings.Contains(m.String(), "\n") {
		t.Errorf("mode is not one line: %q", m.String())
	}
	hooks := tr.Hooks()
	if len(hooks) != 2 || len(tr.Programs()) != 2 {
		t.Errorf("hooks %v, %d programs: want only the exec and exit programs", hooks, len(tr.Programs()))
	}
	cg := newCgroup(t)
	if err := tr.TrackCgroup(cg.id); err != nil {
		t.Fatal(err)
	}
	if err := cg.command("/nonexistent/loupe-degraded").Run(); err == nil {
		t.Fatal("exec of a missing file succeeded")
	}
	if out, err := cg.command("/bin/echo", "loupe-degraded").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	c.wait(t, "exec while degraded", func(ev *Event) bool { return ev.Type == EventExec && hasArg(ev, "loupe-degraded") })
	for _, ev := range c.snapshot() {
		if ev.Type == EventExecFailed {
			t.Errorf("failed exec reported by detached hooks: %+v", ev)
		}
	}
}

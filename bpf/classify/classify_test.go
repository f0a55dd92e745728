package classify

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/bpf"
)

type fakeContainers struct {
	byCgroup map[uint64]Container
	byMntNS  map[uint64]Container
}

func (f fakeContainers) ByCgroupID(id uint64) (Container, bool) {
	c, ok := f.byCgroup[id]
	return c, ok
}
func (f fakeContainers) ByMntNS(ino uint64) (Container, bool) { c, ok := f.byMntNS[ino]; return c, ok }

type fakeDrift map[string]bool

func (f fakeDrift) InUpperLayer(_ Container, p string, _ uint64) (bool, error) { return f[p], nil }

var app = Container{Ref: &loupev1.ContainerRef{Id: "abcdef0123456789", Name: "app", Pod: "api-1", Namespace: "payments"}, UpperDir: "/upper"}

// fakeProc writes a /proc-like tree: pid -> (ppid, comm).
func fakeProc(t *testing.T, procs map[int][2]any) string {
	t.Helper()
	dir := t.TempDir()
	for pid, p := range procs {
		d := filepath.Join(dir, fmt.Sprint(pid))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		stat := fmt.Sprintf("%d (%s) S %d 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0", pid, p[1], p[0])
		if err := os.WriteFile(filepath.Join(d, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func newTestClassifier(t *testing.T) *Classifier {
	proc := fakeProc(t, map[int][2]any{
		1: {0, "systemd"}, 50: {1, "containerd-shim"}, 100: {50, "java"}, 200: {100, "weird) (name"},
	})
	pt := NewProcTable(proc, 0)
	if n, err := pt.Seed(); err != nil || n != 4 {
		t.Fatalf("seed: %d %v", n, err)
	}
	return New(Options{
		Node:       "node-1",
		Containers: fakeContainers{byCgroup: map[uint64]Container{7: app}, byMntNS: map[uint64]Container{99: app}},
		Drift:      fakeDrift{"/tmp/evil": true},
		Procs:      pt,
	})
}

// execEv returns an exec event whose argv[0] is the file name.
func execEv(argv ...string) *bpf.Event {
	return &bpf.Event{Type: bpf.EventExec, Time: time.Unix(1700000000, 0), PID: 300, TID: 300, PPID: 200,
		CgroupID: 7, MntNS: 99, Comm: filepath.Base(argv[0]), Filename: argv[0], Path: argv[0], Argv: argv}
}

func one(t *testing.T, fs []*loupev1.Finding) *loupev1.Finding {
	t.Helper()
	if len(fs) != 1 {
		t.Fatalf("%d findings, want 1: %v", len(fs), fs)
	}
	return fs[0]
}

func TestShellExec(t *testing.T) {
	c := newTestClassifier(t)
	ev := execEv("/bin/sh", "-c", "wget http://x")
	ev.Path = "/usr/bin/dash"
	f := one(t, c.Classify(ev))
	if f.Kind != loupev1.Kind_KIND_SHELL_EXEC || f.Severity != loupev1.Severity_SEVERITY_MEDIUM || f.Rule != RuleShell {
		t.Errorf("kind %v severity %v rule %s", f.Kind, f.Severity, f.Rule)
	}
	if f.Container.GetPod() != "api-1" || f.Node != "node-1" || f.Action != "" {
		t.Errorf("container %v node %s action %q", f.Container, f.Node, f.Action)
	}
	if _, err := uuid.Parse(f.Id); err != nil || uuid.MustParse(f.Id).Version() != 7 {
		t.Errorf("id %q is not a UUIDv7", f.Id)
	}
	p := f.Process
	if p.Filename != "/usr/bin/dash" || f.Details["filename_passed"] != "/bin/sh" || !slices.Equal(p.Argv, ev.Argv) || p.Pid != 300 || p.Ppid != 200 {
		t.Errorf("process %+v details %v", p, f.Details)
	}
	var chain []string
	for _, a := range p.Ancestors {
		chain = append(chain, fmt.Sprintf("%d:%s", a.Pid, a.Comm))
	}
	if want := []string{"200:weird) (name", "100:java", "50:containerd-shim", "1:systemd"}; !slices.Equal(chain, want) {
		t.Errorf("ancestors %v, want %v", chain, want)
	}
	if !f.Time.AsTime().Equal(time.Unix(1700000000, 0)) || f.Summary == "" {
		t.Errorf("time %v summary %q", f.Time.AsTime(), f.Summary)
	}
	t.Log(f.Summary)
}

func TestShellVariants(t *testing.T) {
	c := newTestClassifier(t)
	for _, tc := range []struct {
		name string
		ev   *bpf.Event
		kind loupev1.Kind
		sev  loupev1.Severity
		rule string
	}{
		{"busybox applet", execEv("/bin/busybox", "sh", "-c", "id"), loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_MEDIUM, RuleShell},
		{"busybox symlink sh", func() *bpf.Event { e := execEv("/bin/sh", "sh"); e.Path = "/bin/busybox"; return e }(), loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_MEDIUM, RuleShell},
		{"busybox symlink ls", func() *bpf.Event { e := execEv("/bin/ls", "ls"); e.Path = "/bin/busybox"; return e }(), loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO, RuleExec},
		{"toybox applet", execEv("/usr/bin/toybox", "bash"), loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_MEDIUM, RuleShell},
		{"python -c", execEv("/usr/bin/python3", "-c", "import os"), loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_MEDIUM, RuleInline},
		{"python -uc", execEv("/usr/bin/python3.11", "-uc", "x"), loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_MEDIUM, RuleInline},
		{"python script", execEv("/usr/bin/python3", "app.py", "-c", "x"), loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO, RuleExec},
		{"perl -e", execEv("/usr/bin/perl", "-e", "print 1"), loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_MEDIUM, RuleInline},
		{"node -e", execEv("/usr/local/bin/node", "-e", "1"), loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_MEDIUM, RuleInline},
		{"node --eval", execEv("/usr/local/bin/node", "--eval", "1"), loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_MEDIUM, RuleInline},
		{"ruby -e", execEv("/usr/bin/ruby", "-e", "1"), loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_MEDIUM, RuleInline},
		{"node server", execEv("/usr/local/bin/node", "server.js"), loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO, RuleExec},
		{"script", func() *bpf.Event {
			e := execEv("/app/run.sh", "/bin/bash", "/app/run.sh")
			e.Interpreter = "/bin/bash"
			e.Path = "/usr/bin/bash"
			return e
		}(), loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_MEDIUM, RuleShell},
		{"interactive", func() *bpf.Event { e := execEv("/bin/bash", "bash"); e.TTY = true; return e }(), loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH, RuleShellTTY},
		{"plain binary", execEv("/app/server", "--port=8080"), loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO, RuleExec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := one(t, c.Classify(tc.ev))
			if f.Kind != tc.kind || f.Severity != tc.sev || f.Rule != tc.rule {
				t.Errorf("got %v %v %s, want %v %v %s", f.Kind, f.Severity, f.Rule, tc.kind, tc.sev, tc.rule)
			}
			if tc.ev.TTY != f.Process.Tty {
				t.Errorf("tty not carried")
			}
		})
	}
}

func TestExecFailed(t *testing.T) {
	c := newTestClassifier(t)
	for _, tc := range []struct {
		file string
		sev  loupev1.Severity
	}{
		{"/bin/sh", loupev1.Severity_SEVERITY_HIGH},
		{"/usr/bin/curl", loupev1.Severity_SEVERITY_HIGH},
		{"wget", loupev1.Severity_SEVERITY_HIGH},
		{"/usr/local/bin/anything", loupev1.Severity_SEVERITY_HIGH},
		{"/app/helper", loupev1.Severity_SEVERITY_MEDIUM},
	} {
		ev := &bpf.Event{Type: bpf.EventExecFailed, PID: 100, TID: 101, PPID: 50, CgroupID: 7, Comm: "java",
			Filename: tc.file, Argv: []string{tc.file, "-c", "id"}, Errno: 2}
		f := one(t, c.Classify(ev))
		if f.Kind != loupev1.Kind_KIND_EXEC_FAILED || f.Severity != tc.sev || f.Process.Errno != 2 || f.Process.Filename != tc.file {
			t.Errorf("%s: %v %v errno %d filename %q", tc.file, f.Kind, f.Severity, f.Process.Errno, f.Process.Filename)
		}
		if f.Process.Tid != 101 || f.Container.GetName() != "app" {
			t.Errorf("tid %d container %v", f.Process.Tid, f.Container)
		}
		if tc.file == "/bin/sh" {
			t.Log(f.Summary)
		}
	}
}

func TestKilledNSEnterDriftHost(t *testing.T) {
	c := newTestClassifier(t)
	ev := execEv("/bin/sh", "sh", "-c", "id")
	ev.Killed = true
	f := one(t, c.Classify(ev))
	if f.Action != "killed" || f.Rule != RuleShellKilled || f.Severity != loupev1.Severity_SEVERITY_HIGH {
		t.Errorf("killed: action %q rule %s severity %v", f.Action, f.Rule, f.Severity)
	}

	ev = execEv("/bin/bash", "bash")
	ev.NSEnter, ev.CgroupID = true, 1 // host cgroup, container mount ns
	f = one(t, c.Classify(ev))
	if f.Container.GetPod() != "api-1" || !f.Process.Nsenter || f.Severity != loupev1.Severity_SEVERITY_HIGH {
		t.Errorf("nsenter: container %v nsenter %v severity %v", f.Container, f.Process.Nsenter, f.Severity)
	}

	fs := c.Classify(execEv("/tmp/evil", "evil"))
	if len(fs) != 2 || fs[1].Kind != loupev1.Kind_KIND_DRIFT_EXEC || fs[1].File.GetPath() != "/tmp/evil" ||
		fs[1].Severity != loupev1.Severity_SEVERITY_HIGH || fs[0].Id == fs[1].Id {
		t.Errorf("drift: %v", fs)
	}

	ev = execEv("/bin/sh", "sh")
	ev.CgroupID, ev.MntNS, ev.Untracked = 1, 2, true
	f = one(t, c.Classify(ev))
	if f.Container != nil || f.Details["scope"] != "host" || f.Severity != loupev1.Severity_SEVERITY_LOW {
		t.Errorf("host: container %v details %v severity %v", f.Container, f.Details, f.Severity)
	}
}

func TestProcTableFollowsEvents(t *testing.T) {
	c := newTestClassifier(t)
	c.Classify(execEv("/bin/sh", "sh")) // pid 300, child of 200
	child := execEv("/usr/bin/id", "id")
	child.PID, child.TID, child.PPID = 301, 301, 300
	f := one(t, c.Classify(child))
	if a := f.Process.Ancestors; len(a) != MaxAncestors || a[0].Pid != 300 || a[0].Filename != "/bin/sh" || a[1].Pid != 200 {
		t.Errorf("ancestors %v", a)
	}
	if fs := c.Classify(&bpf.Event{Type: bpf.EventExit, PID: 300}); len(fs) != 0 {
		t.Errorf("exit produced findings")
	}
	f = one(t, c.Classify(child))
	if a := f.Process.Ancestors; len(a) != 0 {
		t.Errorf("ancestors after exit (no /proc entry for 300): %v", a)
	}
}

func TestProcTableRealProc(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	pt := NewProcTable("/proc", 0)
	if n, err := pt.Seed(); err != nil || n == 0 {
		t.Fatalf("seed: %d %v", n, err)
	}
	a := pt.Ancestors(uint32(os.Getpid()), MaxAncestors)
	if len(a) == 0 || a[0].Pid != int32(os.Getpid()) {
		t.Fatalf("ancestors of self: %v", a)
	}
	if len(a) > 1 && a[1].Pid != int32(os.Getppid()) {
		t.Errorf("parent = %d, want %d", a[1].Pid, os.Getppid())
	}
}

func TestProcTableBadStat(t *testing.T) {
	dir := t.TempDir()
	for pid, content := range map[string]string{"5": "garbage", "6": "6 (x", "7": "7 (x) S notanumber", "8": ""} {
		os.MkdirAll(filepath.Join(dir, pid), 0o755)
		os.WriteFile(filepath.Join(dir, pid, "stat"), []byte(content), 0o644)
	}
	pt := NewProcTable(dir, 0)
	if n, _ := pt.Seed(); n != 0 {
		t.Errorf("seeded %d from garbage", n)
	}
}

func FuzzShellKind(f *testing.F) {
	f.Add("/bin/busybox", "/bin/busybox", "busybox\x00sh")
	f.Add("/usr/bin/python3", "", "python3\x00-c\x00x")
	f.Fuzz(func(t *testing.T, filename, interp, args string) {
		ev := &bpf.Event{Type: bpf.EventExec, Filename: filename, Path: filename, Interpreter: interp}
		for _, a := range splitNul(args) {
			ev.Argv = append(ev.Argv, a)
		}
		shellKind(ev)
		suspiciousTarget(filename)
	})
}

func splitNul(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func TestPathSearchWindow(t *testing.T) {
	c := newTestClassifier(t)
	c.opts.PathSearchWindow = time.Hour
	fail := func(tid uint32, file string) *bpf.Event {
		return &bpf.Event{Type: bpf.EventExecFailed, PID: 400, TID: tid, PPID: 200, CgroupID: 7, Comm: "sh",
			Filename: file, Argv: []string{"id"}, Errno: 2}
	}
	if fs := c.Classify(fail(5, "/usr/local/sbin/id")); len(fs) != 0 {
		t.Fatalf("failure not held: %v", fs)
	}
	if fs := c.Classify(fail(5, "/usr/local/bin/id")); len(fs) != 0 {
		t.Fatalf("failure not held: %v", fs)
	}
	ok := execEv("/usr/bin/id")
	ok.PID, ok.TID = 400, 5
	fs := c.Classify(ok)
	if len(fs) != 1 || fs[0].Kind != loupev1.Kind_KIND_EXEC || fs[0].Details["path_search_misses"] != "2" {
		t.Fatalf("exec after PATH search: %v", fs)
	}

	// A failure not followed by the same command is reported: by Flush, …
	if fs := c.Classify(fail(6, "/bin/sh")); len(fs) != 0 {
		t.Fatalf("failure not held: %v", fs)
	}
	if fs := c.Flush(time.Now()); len(fs) != 0 {
		t.Fatalf("flushed before the window: %v", fs)
	}
	if fs := c.Flush(time.Time{}); len(fs) != 1 || fs[0].Kind != loupev1.Kind_KIND_EXEC_FAILED {
		t.Fatalf("flush: %v", fs)
	}
	// … by the process's exit, …
	c.Classify(fail(7, "/bin/sh"))
	if fs := c.Classify(&bpf.Event{Type: bpf.EventExit, PID: 400}); len(fs) != 1 || fs[0].Process.Filename != "/bin/sh" {
		t.Fatalf("exit: %v", fs)
	}
	// … by an exec of something else, …
	c.Classify(fail(8, "/bin/sh"))
	other := execEv("/app/server")
	other.PID, other.TID = 400, 8
	if fs := c.Classify(other); len(fs) != 2 || fs[0].Kind != loupev1.Kind_KIND_EXEC_FAILED || fs[0].Severity != loupev1.Severity_SEVERITY_HIGH {
		t.Fatalf("other exec: %v", fs)
	}
	// … and by any later event once the window has passed.
	c.opts.PathSearchWindow = time.Nanosecond
	c.Classify(fail(9, "/bin/sh"))
	time.Sleep(time.Millisecond)
	if fs := c.Classify(&bpf.Event{Type: bpf.EventExit, PID: 1}); len(fs) != 1 {
		t.Fatalf("expired: %v", fs)
	}
}

// TestSandbox: a pod sandbox's own start (its init's exec of /pause) is no
// finding; anything else exec'd in a sandbox is, at high severity.
func TestSandbox(t *testing.T) {
	sandbox := Container{Ref: &loupev1.ContainerRef{Id: "5a4db0c0ffee0000", Pod: "api-1", Namespace: "payments"}, Sandbox: true, InitPID: 300}
	cl := New(Options{Node: "node-1", Procs: NewProcTable(t.TempDir(), 0),
		Containers: fakeContainers{byCgroup: map[uint64]Container{7: sandbox}, byMntNS: map[uint64]Container{99: sandbox}}})

	if fs := cl.Classify(execEv("/pause")); len(fs) != 0 {
		t.Errorf("the sandbox's init exec was reported: %v", fs)
	}

	ev := execEv("/pause")
	ev.PID, ev.TID = 301, 301 // a second process: someone exec'd into the sandbox
	f := one(t, cl.Classify(ev))
	if f.Kind != loupev1.Kind_KIND_EXEC || f.Severity != loupev1.Severity_SEVERITY_HIGH || f.Details["sandbox"] != "true" ||
		f.Container.GetId() != "5a4db0c0ffee0000" {
		t.Errorf("exec in a sandbox: %v", f)
	}
	if want := `"/pause" ran in pod payments/api-1 sandbox; nothing but the pause process belongs in a pod sandbox`; f.Summary != want {
		t.Errorf("summary %q, want %q", f.Summary, want)
	}

	sh := execEv("/bin/sh", "-c", "id") // the init replacing itself with a shell is reported
	if f := one(t, cl.Classify(sh)); f.Kind != loupev1.Kind_KIND_SHELL_EXEC || f.Severity != loupev1.Severity_SEVERITY_HIGH {
		t.Errorf("shell as the sandbox's init: %v", f)
	}

	failed := execEv("/bin/sh")
	failed.Type, failed.Errno = bpf.EventExecFailed, 2
	if f := one(t, cl.Classify(failed)); f.Kind != loupev1.Kind_KIND_EXEC_FAILED || f.Details["sandbox"] != "true" {
		t.Errorf("failed exec in a sandbox: %v", f)
	}
}

//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package classify

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/bpf"
	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/runtime"
	ctrd "github.com/loupe-dev/loupe/runtime/containerd"
)

// containerKeys returns the cgroup v2 id and mount-namespace inode of a
// container's init process, as the runtime registry computes them.
func containerKeys(t *testing.T, pid int) (cgID, mntNS uint64) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rel string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			rel = p
		}
	}
	if rel == "" {
		t.Fatalf("pid %d has no cgroup v2 path", pid)
	}
	var st unix.Stat_t
	found := false
	for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if unix.Stat(root+rel, &st) == nil {
			found = true
			break
		}
	}
	if !found {
		t.Fatalf("cgroup %s of pid %d not found", rel, pid)
	}
	var ns unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid), &ns); err != nil {
		t.Fatal(err)
	}
	return st.Ino, ns.Ino
}

// TestCRIContainers runs real pods through CRI on a private containerd and
// checks what the tracer and classifier report, attributed to the right
// pod and container by the container's cgroup id (and mount namespace for
// nsenter).
func TestCRIContainers(t *testing.T) {
	env := testenv.StartContainerd(t)
	tr, err := bpf.NewTracer(bpf.Config{ExecFailures: true})
	if errors.Is(err, unix.EPERM) {
		testenv.Unavailable(t, "eBPF not permitted: "+err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	var mu sync.Mutex
	byCgroup, byMnt := map[uint64]Container{}, map[uint64]Container{}
	cl := New(Options{Node: "n1", Containers: lockedContainers{&mu, byCgroup, byMnt}})
	log, stop := collect(tr, cl)
	defer stop()

	track := func(c *testenv.Container, pod *testenv.Pod) (uint64, uint64) {
		cg, mnt := containerKeys(t, c.PID(t))
		ref := &loupev1.ContainerRef{Id: c.ID(), Name: c.Name(), Pod: pod.Name(), Namespace: pod.Namespace(), PodUid: pod.UID()}
		mu.Lock()
		byCgroup[cg] = Container{Ref: ref}
		byMnt[mnt] = Container{Ref: ref}
		mu.Unlock()
		if err := tr.TrackCgroup(cg); err != nil {
			t.Fatal(err)
		}
		if err := tr.TrackMntNS(mnt); err != nil {
			t.Fatal(err)
		}
		return cg, mnt
	}
	find := func(what string, pred func(*loupev1.Finding) bool) *loupev1.Finding {
		t.Helper()
		return log.find(t, 10*time.Second, what, pred)
	}

	// busybox: kubectl exec … sh -c id
	bbPod := env.RunPod(t, testenv.PodConfig{Name: "bb-0", Namespace: "tools"})
	bb := bbPod.Start(t, testenv.ContainerConfig{Name: "bb", Image: env.Image(t, testenv.Busybox)})
	bbCg, bbMnt := track(bb, bbPod)
	res, err := bb.Exec(t, []string{"sh", "-c", "id"}, 5*time.Second)
	if err != nil || res.ExitCode != 0 || !strings.Contains(string(res.Stdout), "uid=0") {
		t.Fatalf("ExecSync sh -c id: %v %+v", err, res)
	}
	sh := find("SHELL_EXEC in busybox", func(f *loupev1.Finding) bool {
		return f.Kind == loupev1.Kind_KIND_SHELL_EXEC && slices.Equal(f.Process.GetArgv(), []string{"sh", "-c", "id"})
	})
	if sh.Container.GetId() != bb.ID() || sh.Container.GetPod() != "bb-0" || sh.Container.GetNamespace() != "tools" ||
		sh.Process.CgroupId != bbCg || sh.Process.Nsenter {
		t.Errorf("shell finding attribution: %v", sh)
	}
	// (busybox sh runs id as an in-process applet: no exec of its own)

	// distroless: the app itself tries /bin/sh
	dlPod := env.RunPod(t, testenv.PodConfig{Name: "api-7d", Namespace: "payments"})
	dl := dlPod.Start(t, testenv.ContainerConfig{Name: "api", Image: env.Image(t, testenv.Distroless)})
	track(dl, dlPod)
	appPID := dl.PID(t)
	dl.RequestExec(t, "/bin/sh", "-c", "id")
	failed := find("EXEC_FAILED of /bin/sh in distroless", func(f *loupev1.Finding) bool {
		return f.Kind == loupev1.Kind_KIND_EXEC_FAILED && f.Process.GetFilename() == "/bin/sh"
	})
	if failed.Container.GetId() != dl.ID() || failed.Container.GetPod() != "api-7d" || failed.Process.Errno != int32(unix.ENOENT) ||
		failed.Process.Pid != int32(appPID) || failed.Severity != loupev1.Severity_SEVERITY_HIGH ||
		!slices.Equal(failed.Process.Argv, []string{"/bin/sh", "-c", "id"}) {
		t.Errorf("failed exec finding: %v", failed)
	}

	// nsenter from the host into the busybox container's mount namespace
	testenv.RequireCommand(t, "nsenter")
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(bb.PID(t)), "-m", "/bin/sh", "-c", "exit 0").CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	ns := find("nsenter shell", func(f *loupev1.Finding) bool {
		return f.Kind == loupev1.Kind_KIND_SHELL_EXEC && f.Process.GetNsenter()
	})
	if ns.Container.GetId() != bb.ID() || ns.Process.MntNs != bbMnt || ns.Severity != loupev1.Severity_SEVERITY_HIGH {
		t.Errorf("nsenter finding: %v", ns)
	}
}

type lockedContainers struct {
	mu           *sync.Mutex
	byCgroup, ns map[uint64]Container
}

func (l lockedContainers) ByCgroupID(id uint64) (Container, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.byCgroup[id]
	return c, ok
}

func (l lockedContainers) ByMntNS(ino uint64) (Container, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.ns[ino]
	return c, ok
}

// TestCRIEnforcement kills a shell exec'd through CRI (kubectl exec) into a
// container selected by a kill policy, before the shell prints anything.
func TestCRIEnforcement(t *testing.T) {
	env := testenv.StartContainerd(t)
	tr, err := bpf.NewTracer(bpf.Config{Enforce: true})
	if errors.Is(err, unix.EPERM) {
		testenv.Unavailable(t, "eBPF not permitted: "+err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	policy := bpf.KillPolicy{Selectors: []bpf.KillSelector{{Namespace: "locked", Pod: "bb-*"}}}

	var mu sync.Mutex
	byCgroup := map[uint64]Container{}
	cl := New(Options{Node: "n1", Containers: lockedContainers{&mu, byCgroup, map[uint64]Container{}}})
	log, stop := collect(tr, cl)
	defer stop()

	start := func(ns string) *testenv.Container {
		pod := env.RunPod(t, testenv.PodConfig{Name: "bb-1", Namespace: ns})
		c := pod.Start(t, testenv.ContainerConfig{Name: "bb", Image: env.Image(t, testenv.Busybox)})
		cg, _ := containerKeys(t, c.PID(t))
		mu.Lock()
		byCgroup[cg] = Container{Ref: &loupev1.ContainerRef{Id: c.ID(), Name: "bb", Pod: pod.Name(), Namespace: ns}}
		mu.Unlock()
		if err := tr.TrackCgroup(cg); err != nil {
			t.Fatal(err)
		}
		if policy.Matches(ns, pod.Name(), testenv.Busybox.Ref()) {
			if err := tr.KillShellsIn(cg); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	locked := start("locked")
	free := start("free")

	res, err := locked.Exec(t, []string{"sh", "-c", "echo loupe-pwned"}, 5*time.Second)
	if err == nil && (res.ExitCode == 0 || strings.Contains(string(res.Stdout), "loupe-pwned")) {
		t.Fatalf("shell in an enforced container ran: %+v", res)
	}
	t.Logf("enforced exec: err=%v result=%+v", err, res)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		killed := log.last(func(f *loupev1.Finding) bool { return f.Action == "killed" && f.Container.GetId() == locked.ID() })
		if killed != nil {
			if killed.Kind != loupev1.Kind_KIND_SHELL_EXEC || killed.Severity != loupev1.Severity_SEVERITY_HIGH {
				t.Errorf("killed finding: %v", killed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no finding with action=killed")
		}
	}
	res, err = free.Exec(t, []string{"sh", "-c", "echo loupe-free"}, 5*time.Second)
	if err != nil || res.ExitCode != 0 || !strings.Contains(string(res.Stdout), "loupe-free") {
		t.Errorf("shell in a container outside the policy: %v %+v", err, res)
	}
}

// TestFollowRealRegistry wires the tracer to the real runtime registry
// (runtime/containerd on the private containerd): Follow tracks a pod's
// container as it starts, and FromRegistry attributes its shell.
func TestFollowRealRegistry(t *testing.T) {
	env := testenv.StartContainerd(t)
	tr, err := bpf.NewTracer(bpf.Config{})
	if errors.Is(err, unix.EPERM) {
		testenv.Unavailable(t, "eBPF not permitted: "+err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	reg := ctrd.New(ctrd.Config{Socket: env.Address(), Namespace: env.Namespace(), StateDir: env.State()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go reg.Run(ctx)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := reg.WaitReady(wctx); err != nil {
		t.Fatalf("registry not ready: %v", err)
	}
	var self unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &self); err != nil {
		t.Fatal(err)
	}
	followDone := make(chan error, 1)
	go func() { followDone <- Follow(ctx, reg, tr, FollowOptions{HostMntNS: self.Ino}) }()

	cl := New(Options{Node: "n1", Containers: FromRegistry(reg)})
	log, stopLog := collect(tr, cl)
	defer func() { cancel(); stopLog(); <-followDone }()

	pod := env.RunPod(t, testenv.PodConfig{Name: "follow-0", Namespace: "ops"})
	c := pod.Start(t, testenv.ContainerConfig{Name: "bb", Image: env.Image(t, testenv.Busybox)})
	// wait until the registry has the running container and Follow tracked it
	var entry *runtime.Container
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if e, ok := reg.Get(c.ID()); ok && e.State == runtime.StateRunning && e.CgroupID != 0 {
			entry = e
			break
		}
	}
	if entry == nil {
		t.Fatal("registry never reported the container running with a cgroup id")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := c.Exec(t, []string{"sh", "-c", "exit 0"}, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		got := log.last(func(f *loupev1.Finding) bool {
			return f.Kind == loupev1.Kind_KIND_SHELL_EXEC && f.Container.GetId() == c.ID()
		})
		if got != nil {
			if got.Container.GetPod() != "follow-0" || got.Container.GetNamespace() != "ops" || got.Container.GetImage() == "" ||
				got.Process.CgroupId != entry.CgroupID {
				t.Errorf("finding attribution: %v", got.Container)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no SHELL_EXEC attributed through the registry")
		}
	}

	// The pod's sandbox: its own start is no finding; a process exec'd into
	// it through containerd (hiding beside the pause process) is one, high.
	var sandbox *runtime.Container
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if e, ok := reg.Get(pod.ID()); ok && e.State == runtime.StateRunning && e.CgroupID != 0 && e.PID != 0 {
			sandbox = e
			break
		}
	}
	if sandbox == nil || sandbox.Kind != runtime.KindSandbox {
		t.Fatalf("registry entry of the sandbox: %+v", sandbox)
	}
	pid := execInto(t, env, pod.ID(), "/pause")
	hidden := log.find(t, 10*time.Second, "EXEC in the sandbox", func(f *loupev1.Finding) bool {
		return f.Kind == loupev1.Kind_KIND_EXEC && f.Container.GetId() == pod.ID() && f.Process.GetPid() == int32(pid)
	})
	if hidden.Severity != loupev1.Severity_SEVERITY_HIGH || hidden.Details["sandbox"] != "true" ||
		hidden.Container.GetPod() != "follow-0" || !strings.Contains(hidden.Summary, "sandbox") {
		t.Errorf("exec in the sandbox: %v", hidden)
	}
	for _, f := range log.all() {
		if f.Container.GetId() == pod.ID() && f.Process.GetPid() == int32(sandbox.PID) {
			t.Errorf("the sandbox's own start was reported: %v", f)
		}
	}
}

// execInto starts argv as an extra process of a container's task through the
// containerd API (what `ctr task exec` does) and returns its host PID; the
// process is killed when the test ends.
func execInto(t *testing.T, env *testenv.Env, id string, argv ...string) int {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), env.Namespace())
	c, err := env.Client().LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	ps := *spec.Process
	ps.Args, ps.Terminal = argv, false
	p, err := task.Exec(ctx, "loupe-test-"+strconv.FormatInt(time.Now().UnixNano(), 36), &ps, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Kill(ctx, unix.SIGKILL)
		if st, err := p.Wait(ctx); err == nil {
			<-st
		}
		_, _ = p.Delete(ctx)
	})
	return int(p.Pid())
}

package containerd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/runtime"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// startRegistry runs a registry against env until the test ends.
func startRegistry(t *testing.T, env *testenv.Env, mod func(*Config)) (*Registry, <-chan runtime.Event) {
	t.Helper()
	cfg := Config{Socket: env.Address(), StateDir: env.State(), MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, ExecStartTimeout: time.Second}
	if mod != nil {
		mod(&cfg)
	}
	r := New(cfg)
	evs, cancelSub := r.Subscribe(1024)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; cancelSub() })
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := r.WaitReady(wctx); err != nil {
		t.Fatalf("registry not ready: %v", err)
	}
	return r, evs
}

// waitEvent returns the first event matching want within d.
func waitEvent(t *testing.T, evs <-chan runtime.Event, d time.Duration, what string, want func(runtime.Event) bool) runtime.Event {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case ev := <-evs:
			if want(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event within %s", what, d)
		}
	}
}

func waitCond(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	return st.Ino
}

func TestCRIPodIdentityAndRootfs(t *testing.T) {
	env := testenv.StartContainerd(t)
	ref := env.Image(t, testenv.Distroless)
	r, evs := startRegistry(t, env, nil)

	pod := env.RunPod(t, testenv.PodConfig{Name: "api-1", Namespace: "payments"})
	ctr := pod.Start(t, testenv.ContainerConfig{Name: "app", Image: ref, Env: map[string]string{"DB_PASSWORD": "hunter2"}})
	ev := waitEvent(t, evs, 5*time.Second, "start of app", func(ev runtime.Event) bool {
		return ev.Type == runtime.EventStart && ev.Container.ID == ctr.ID()
	})
	c := ev.Container
	if c.Kind != runtime.KindContainer || c.Pod != (runtime.Pod{Name: "api-1", Namespace: "payments", UID: pod.UID()}) || c.ContainerName != "app" {
		t.Errorf("identity: kind %v pod %+v name %q", c.Kind, c.Pod, c.ContainerName)
	}
	if c.SandboxID != pod.ID() || c.Namespace != "k8s.io" {
		t.Errorf("sandbox id %q (want %q), namespace %q", c.SandboxID, pod.ID(), c.Namespace)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("unexpected warnings: %q", c.Warnings)
	}
	img, err := env.Client().GetImage(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if c.Image != ref || c.ImageDigest != img.Target().Digest.String() {
		t.Errorf("image %q digest %q, want %q %q", c.Image, c.ImageDigest, ref, img.Target().Digest)
	}
	pid := ctr.PID(t)
	if c.State != runtime.StateRunning || c.PID != pid {
		t.Errorf("state %v pid %d, want running %d", c.State, c.PID, pid)
	}
	// cgroupfs driver: the container's cgroup is <pod cgroup>/<id>; its id is
	// the inode of that directory in the v2 (here: unified) hierarchy.
	v2, err := runtime.CgroupV2Root("/")
	if err != nil {
		t.Fatal(err)
	}
	wantPath := pod.CgroupParent() + "/" + ctr.ID()
	if c.CgroupPath != wantPath || c.CgroupID != ino(t, filepath.Join(v2, wantPath)) {
		t.Errorf("cgroup %q id %d, want %q id %d", c.CgroupPath, c.CgroupID, wantPath, ino(t, filepath.Join(v2, wantPath)))
	}
	if want := ino(t, fmt.Sprintf("/proc/%d/ns/mnt", pid)); c.MountNS != want || want == ino(t, "/proc/self/ns/mnt") {
		t.Errorf("mount ns %d, want %d (and not the host's)", c.MountNS, want)
	}
	// Rootfs: two image layers (base, app), topmost first, with chain ids;
	// the upper dir; the merged view.
	rf := c.Rootfs
	if rf.Snapshotter != "overlayfs" || rf.LayersUnknown || len(rf.Layers) != 2 || rf.Upper == "" {
		t.Fatalf("rootfs %+v", rf)
	}
	if _, err := os.Stat(filepath.Join(rf.Layers[0].Dir, "app")); err != nil {
		t.Errorf("top layer should hold /app: %v", err)
	}
	if _, err := os.Stat(filepath.Join(rf.Layers[1].Dir, "etc/passwd")); err != nil {
		t.Errorf("base layer should hold /etc/passwd: %v", err)
	}
	for _, l := range rf.Layers {
		if !strings.HasPrefix(l.Key, "sha256:") {
			t.Errorf("layer %s: key %q", l.Dir, l.Key)
		}
	}
	if fi, err := os.Stat(rf.Upper); err != nil || !fi.IsDir() {
		t.Errorf("upper dir %s: %v", rf.Upper, err)
	}
	if rf.Merged != fmt.Sprintf("/proc/%d/root", pid) {
		t.Errorf("merged %q", rf.Merged)
	}
	if _, err := os.Stat(filepath.Join(rf.Merged, "etc/ssl/certs/ca-certificates.crt")); err != nil {
		t.Errorf("merged view: %v", err)
	}
	// OCI spec facts; env values are never kept.
	s := c.Spec
	if !slices.Equal(s.Args, []string{"/app"}) || s.UID != 0 || s.Privileged || s.ReadOnlyRootfs || !slices.Contains(s.EnvNames, "DB_PASSWORD") || !slices.Contains(s.EnvNames, "PATH") {
		t.Errorf("spec facts %+v", s)
	}
	if strings.Contains(fmt.Sprintf("%+v", c), "hunter2") {
		t.Error("an environment value leaked into the registry")
	}
	// The sandbox is there too.
	sb, ok := r.Get(pod.ID())
	if !ok || sb.Kind != runtime.KindSandbox || sb.Pod.Name != "api-1" || sb.SandboxID != pod.ID() || sb.Image != testenv.Pause.Ref() {
		t.Errorf("sandbox entry %+v", sb)
	}
	// Lookups by every key.
	for name, got := range map[string]func() (*runtime.Container, bool){
		"cgroup id": func() (*runtime.Container, bool) { return r.ByCgroupID(c.CgroupID) },
		"mount ns":  func() (*runtime.Container, bool) { return r.ByMountNS(c.MountNS) },
		"pid":       func() (*runtime.Container, bool) { return r.ByPID(pid) },
		"id":        func() (*runtime.Container, bool) { return r.Get(ctr.ID()) },
	} {
		if g, ok := got(); !ok || g.ID != ctr.ID() {
			t.Errorf("lookup by %s failed", name)
		}
	}
	if _, ok := r.ByPID(os.Getpid()); ok {
		t.Error("the test process was attributed to a container")
	}
}

// TestHostRootAndMetrics runs the registry as in a pod, with the host seen
// under a prefix (here: symlinks to the real /proc, /sys and /tmp), and with
// metrics on a private Prometheus registry.
func TestHostRootAndMetrics(t *testing.T) {
	env := testenv.StartContainerd(t)
	host := t.TempDir()
	for _, d := range []string{"proc", "sys", "tmp"} {
		if err := os.Symlink("/"+d, filepath.Join(host, d)); err != nil {
			t.Fatal(err)
		}
	}
	preg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(preg)
	if err != nil {
		t.Fatal(err)
	}
	r, evs := startRegistry(t, env, func(c *Config) { c.HostRoot = host; c.Metrics = m })
	pod := env.RunPod(t, testenv.PodConfig{Name: "prefixed", Namespace: "ops"})
	ctr := pod.Start(t, testenv.ContainerConfig{Name: "app", Image: env.Image(t, testenv.Distroless)})
	c := waitEvent(t, evs, 5*time.Second, "start", func(ev runtime.Event) bool {
		return ev.Type == runtime.EventStart && ev.Container.ID == ctr.ID()
	}).Container
	if c.CgroupID == 0 || c.MountNS == 0 || c.PID != ctr.PID(t) || len(c.Warnings) != 0 {
		t.Errorf("entry under a host root: %+v", c)
	}
	for _, p := range []string{c.Rootfs.Upper, c.Rootfs.Merged, c.Rootfs.Layers[0].Dir} {
		if !strings.HasPrefix(p, host+"/") {
			t.Errorf("path %s lacks the host root %s", p, host)
		}
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	t0 := time.Now()
	if _, err := ctr.Exec(t, []string{"/bin/sh"}, 5*time.Second); err == nil {
		t.Fatal("exec of /bin/sh in distroless succeeded")
	}
	ev := waitEvent(t, evs, 5*time.Second, "exec_failed", func(ev runtime.Event) bool {
		return ev.Type == runtime.EventExecFailed && ev.Container.ID == ctr.ID()
	})
	t.Logf("exec failed after %s", time.Since(t0))
	if ev.Exec.Path != "/bin/sh" {
		t.Errorf("runc log under the host root not read: %+v", ev.Exec)
	}
	if got := testutil.ToFloat64(m.ready); got != 1 {
		t.Errorf("loupe_runtime_ready = %v", got)
	}
	if got := testutil.ToFloat64(m.events.WithLabelValues("exec_failed")); got < 1 {
		t.Errorf("exec_failed events counted: %v", got)
	}
	if got := testutil.ToFloat64(m.containers); got != float64(r.Len()) || got < 2 {
		t.Errorf("loupe_runtime_containers = %v, registry has %d", got, r.Len())
	}
	if _, err := preg.Gather(); err != nil {
		t.Errorf("metrics do not gather cleanly: %v", err)
	}
}

// TestStopAndRemoveReflected checks that a stop and a removal reach the
// registry as events. The wait is generous: tests do not assert on speed
// (bench/runtime measures the latency); a loaded CI machine is slow.
func TestStopAndRemoveReflected(t *testing.T) {
	env := testenv.StartContainerd(t)
	ref := env.Image(t, testenv.Distroless)
	r, evs := startRegistry(t, env, nil)
	pod := env.RunPod(t, testenv.PodConfig{Name: "short", Namespace: "jobs"})
	ctr := pod.Start(t, testenv.ContainerConfig{Name: "app", Image: ref})
	c := waitEvent(t, evs, 5*time.Second, "start", func(ev runtime.Event) bool {
		return ev.Type == runtime.EventStart && ev.Container.ID == ctr.ID()
	}).Container

	ctr.Stop(t)
	stopped := time.Now()
	ev := waitEvent(t, evs, 15*time.Second, "stop", func(ev runtime.Event) bool {
		return ev.Type == runtime.EventStop && ev.Container.ID == ctr.ID()
	})
	if ev.Container.State != runtime.StateStopped || ev.ExitCode != 0 {
		t.Errorf("after stop: state %v exit %d", ev.Container.State, ev.ExitCode)
	}
	if _, ok := r.ByCgroupID(c.CgroupID); ok {
		t.Error("stopped container still found by cgroup id")
	}
	t.Logf("stop reflected after %s", time.Since(stopped))
	// The CRI plugin deletes the task after the exit: still stopped, not "created".
	time.Sleep(200 * time.Millisecond)
	if c, ok := r.Get(ctr.ID()); !ok || c.State != runtime.StateStopped || c.PID != 0 {
		t.Errorf("stopped container after task delete: %+v", c)
	}

	ctr.Remove(t)
	removed := time.Now()
	waitEvent(t, evs, 15*time.Second, "remove", func(ev runtime.Event) bool {
		return ev.Type == runtime.EventRemove && ev.Container.ID == ctr.ID()
	})
	if _, ok := r.Get(ctr.ID()); ok {
		t.Error("removed container still in the registry")
	}
	t.Logf("removal reflected after %s", time.Since(removed))
}

func TestPrivilegedReadOnlyNonRoot(t *testing.T) {
	env := testenv.StartContainerd(t)
	r, _ := startRegistry(t, env, nil)
	ref := env.Image(t, testenv.Distroless)
	pod := env.RunPod(t, testenv.PodConfig{Name: "sec", Namespace: "ops", Privileged: true})
	uid := int64(65532)
	priv := pod.Start(t, testenv.ContainerConfig{Name: "priv", Image: ref, Privileged: true})
	ro := pod.Start(t, testenv.ContainerConfig{Name: "ro", Image: ref, ReadOnlyRootfs: true, RunAsUser: &uid, Args: []string{"--flag"}})
	waitCond(t, 5*time.Second, "both running", func() bool {
		a, ok1 := r.Get(priv.ID())
		b, ok2 := r.Get(ro.ID())
		return ok1 && ok2 && a.State == runtime.StateRunning && b.State == runtime.StateRunning
	})
	a, _ := r.Get(priv.ID())
	b, _ := r.Get(ro.ID())
	if !a.Spec.Privileged || !slices.Contains(a.Spec.CapBounding, "CAP_SYS_ADMIN") || a.Spec.UID != 0 {
		t.Errorf("privileged container: %+v", a.Spec)
	}
	if b.Spec.Privileged || !b.Spec.ReadOnlyRootfs || b.Spec.UID != 65532 || slices.Contains(b.Spec.CapBounding, "CAP_SYS_ADMIN") ||
		!slices.Equal(b.Spec.Args, []string{"/app", "--flag"}) {
		t.Errorf("read-only non-root container: %+v", b.Spec)
	}
}

func TestPausedContainer(t *testing.T) {
	env := testenv.StartContainerd(t)
	r, evs := startRegistry(t, env, nil)
	pod := env.RunPod(t, testenv.PodConfig{Name: "frozen", Namespace: "ops"})
	ctr := pod.Start(t, testenv.ContainerConfig{Name: "app", Image: env.Image(t, testenv.Distroless)})
	c := waitEvent(t, evs, 5*time.Second, "start", func(ev runtime.Event) bool {
		return ev.Type == runtime.EventStart && ev.Container.ID == ctr.ID()
	}).Container
	ctx := context.Background()
	cc, err := env.Client().LoadContainer(ctx, ctr.ID())
	if err != nil {
		t.Fatal(err)
	}
	task, err := cc.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	waitCond(t, 2*time.Second, "paused state", func() bool {
		p, ok := r.Get(ctr.ID())
		return ok && p.State == runtime.StatePaused
	})
	// A paused container is still itself: same PID, still found by cgroup id.
	if p, ok := r.ByCgroupID(c.CgroupID); !ok || p.PID != c.PID || p.State != runtime.StatePaused {
		t.Errorf("paused container lookup: %+v %v", p, ok)
	}
	if err := task.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	waitCond(t, 2*time.Second, "running again", func() bool {
		p, ok := r.Get(ctr.ID())
		return ok && p.State == runtime.StateRunning
	})
}

func TestExecEvents(t *testing.T) {
	env := testenv.StartContainerd(t)
	r, evs := startRegistry(t, env, nil)
	pod := env.RunPod(t, testenv.PodConfig{Name: "exec", Namespace: "payments"})
	dl := pod.Start(t, testenv.ContainerConfig{Name: "distroless", Image: env.Image(t, testenv.Distroless)})
	deb := pod.Start(t, testenv.ContainerConfig{Name: "debian", Image: env.Image(t, testenv.DebianLike)})
	waitCond(t, 5*time.Second, "containers in registry", func() bool {
		a, ok1 := r.Get(dl.ID())
		b, ok2 := r.Get(deb.ID())
		return ok1 && ok2 && a.State == runtime.StateRunning && b.State == runtime.StateRunning
	})

	// kubectl exec … sh against distroless: runc fails before execve.
	if _, err := dl.Exec(t, []string{"/bin/sh", "-c", "id"}, 5*time.Second); err == nil {
		t.Fatal("ExecSync of /bin/sh in the distroless container succeeded")
	}
	ev := waitEvent(t, evs, 5*time.Second, "exec_failed", func(ev runtime.Event) bool {
		return ev.Type == runtime.EventExecFailed && ev.Container.ID == dl.ID()
	})
	if ev.Exec.Path != "/bin/sh" || !strings.Contains(ev.Exec.Error, "no such file or directory") || ev.Container.Pod.Name != "exec" {
		t.Errorf("exec failed event: %+v container %s", ev.Exec, ev.Container)
	}

	// An exec that works: EventExec with the PID of the exec'd process.
	type res struct {
		r   *testenv.ExecResult
		err error
	}
	done := make(chan res, 1)
	go func() {
		r, err := deb.Exec(t, []string{"/usr/bin/sleep", "2"}, 10*time.Second)
		done <- res{r, err}
	}()
	ev = waitEvent(t, evs, 5*time.Second, "exec", func(ev runtime.Event) bool {
		return ev.Type == runtime.EventExec && ev.Container.ID == deb.ID()
	})
	pid := ev.Exec.PID
	if pid <= 0 {
		t.Fatalf("exec event without pid: %+v", ev.Exec)
	}
	// exec-started comes when runc has started the process, which may still
	// be "runc init" for a moment before it execve()s the command: same PID.
	var cmdline []byte
	waitCond(t, 2*time.Second, "the exec pid to run sleep", func() bool {
		cmdline, _ = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return strings.HasPrefix(string(cmdline), "/usr/bin/sleep\x002")
	})
	// The PID is not the init PID: found through /proc/<pid>/cgroup.
	if c, ok := r.ByPID(pid); !ok || c.ID != deb.ID() {
		t.Errorf("ByPID(exec pid) = %v, %v", c, ok)
	}
	// task.Pids maps the exec id to the same PID.
	if got := ExecPID(context.Background(), env.Client(), deb.ID(), ev.Exec.ID); got != pid {
		t.Errorf("ExecPID = %d, want %d", got, pid)
	}
	if out := <-done; out.err != nil || out.r.ExitCode != 0 {
		t.Errorf("exec sleep: %+v %v", out.r, out.err)
	}
}

func TestContainerdRestart(t *testing.T) {
	env := testenv.StartContainerd(t)
	ref := env.Image(t, testenv.Distroless)
	r, _ := startRegistry(t, env, nil)
	pod := env.RunPod(t, testenv.PodConfig{Name: "restart", Namespace: "ops"})
	a := pod.Start(t, testenv.ContainerConfig{Name: "a", Image: ref})
	b := pod.Start(t, testenv.ContainerConfig{Name: "b", Image: ref})
	waitCond(t, 5*time.Second, "a and b running", func() bool {
		ca, ok1 := r.Get(a.ID())
		cb, ok2 := r.Get(b.ID())
		return ok1 && ok2 && ca.State == runtime.StateRunning && cb.State == runtime.StateRunning
	})
	bPID := b.PID(t)

	env.KillDaemon(t)
	waitCond(t, 5*time.Second, "not ready while containerd is down", func() bool { return r.Ready() != nil })
	// While containerd is down, b's process dies.
	if err := syscall.Kill(bPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	env.StartDaemon(t)
	c := pod.Start(t, testenv.ContainerConfig{Name: "c", Image: ref})
	waitCond(t, 10*time.Second, "registry ready and correct after restart", func() bool {
		ca, okA := r.Get(a.ID())
		cb, okB := r.Get(b.ID())
		cc, okC := r.Get(c.ID())
		return r.Ready() == nil && okA && okB && okC &&
			ca.State == runtime.StateRunning && cb.State != runtime.StateRunning && cc.State == runtime.StateRunning
	})
	if _, ok := r.ByPID(bPID); ok {
		t.Error("dead container still found by its old PID")
	}
	if cc, _ := r.Get(c.ID()); cc.PID != c.PID(t) || cc.CgroupID == 0 {
		t.Errorf("container started after the restart: %+v", cc)
	}
}

func TestSocketMissingAndNotASocket(t *testing.T) {
	dir := t.TempDir()
	notSock := filepath.Join(dir, "plain-file")
	if err := os.WriteFile(notSock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, sock := range map[string]string{"missing": filepath.Join(dir, "nope.sock"), "not a socket": notSock} {
		t.Run(name, func(t *testing.T) {
			r := New(Config{Socket: sock, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- r.Run(ctx) }()
			var err error
			waitCond(t, 10*time.Second, "a connection error", func() bool {
				err = r.Ready()
				return err != nil && err != ErrNotSynced
			})
			if !strings.Contains(err.Error(), sock) {
				t.Errorf("error does not name the socket: %v", err)
			}
			wctx, wcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			if r.WaitReady(wctx) == nil {
				t.Error("WaitReady succeeded without containerd")
			}
			wcancel()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
		})
	}
}

// TestMalformedLabelsAndNativeSnapshotter uses containerd's own client (not
// CRI) to create what kubelet never would: bad labels, the native snapshotter.
func TestMalformedLabelsAndNativeSnapshotter(t *testing.T) {
	env := testenv.StartContainerd(t)
	ref := env.Image(t, testenv.Distroless)
	r, evs := startRegistry(t, env, nil)
	ctx := context.Background()
	client := env.Client()
	img, err := client.GetImage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Unpack(ctx, "native"); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("native-%d", time.Now().UnixNano())
	ctr, err := client.NewContainer(ctx, id,
		ctrd.WithImage(img), ctrd.WithSnapshotter("native"), ctrd.WithNewSnapshot(id+"-snap", img),
		ctrd.WithContainerLabels(map[string]string{
			"io.cri-containerd.kind":      "container",
			"io.kubernetes.pod.name":      "Bad_Name!",
			"io.kubernetes.pod.namespace": strings.Repeat("x", 100),
			"io.kubernetes.pod.uid":       "ok-uid-1",
		}),
		ctrd.WithNewSpec(oci.WithImageConfig(img), oci.WithCgroup(env.CgroupParent()+"/"+id)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctr.Delete(ctx, ctrd.WithSnapshotCleanup) })
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	exitCh, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = task.Kill(ctx, syscall.SIGKILL)
		<-exitCh
		_, _ = task.Delete(ctx)
	})
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c := waitEvent(t, evs, 5*time.Second, "start", func(ev runtime.Event) bool {
		return ev.Type == runtime.EventStart && ev.Container.ID == id
	}).Container
	if c.Kind != runtime.KindContainer || c.Pod.Name != "" || c.Pod.Namespace != "" || c.Pod.UID != "ok-uid-1" {
		t.Errorf("identity %v %+v", c.Kind, c.Pod)
	}
	joined := strings.Join(c.Warnings, "; ")
	for _, want := range []string{"io.kubernetes.pod.name: malformed", "io.kubernetes.pod.namespace: malformed", "io.kubernetes.container.name: missing"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings %q lack %q", joined, want)
		}
	}
	if !c.Rootfs.LayersUnknown || len(c.Rootfs.Layers) != 0 || !strings.Contains(c.Rootfs.LayersReason, "native") {
		t.Errorf("native snapshotter rootfs should be marked layers-unknown: %+v", c.Rootfs)
	}
	if _, err := os.Stat(filepath.Join(c.Rootfs.Merged, "app")); err != nil {
		t.Errorf("merged view of a native rootfs: %v", err)
	}
	if got, ok := r.ByCgroupID(c.CgroupID); !ok || got.ID != id {
		t.Error("native container not found by cgroup id")
	}
}

func TestContainerVanishesDuringSync(t *testing.T) {
	env := testenv.StartContainerd(t)
	ref := env.Image(t, testenv.Distroless)
	ctx := context.Background()
	client := env.Client()
	img, err := client.GetImage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	keep, gone := fmt.Sprintf("keep-%d", time.Now().UnixNano()), fmt.Sprintf("gone-%d", time.Now().UnixNano())
	for _, id := range []string{keep, gone} {
		c, err := client.NewContainer(ctx, id, ctrd.WithImage(img), ctrd.WithNewSnapshot(id, img), ctrd.WithNewSpec(oci.WithImageConfig(img)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Delete(ctx, ctrd.WithSnapshotCleanup) })
	}
	var once sync.Once
	_, _ = startRegistry(t, env, nil) // a registry that syncs normally first
	r2 := New(Config{Socket: env.Address(), StateDir: env.State()})
	r2.beforeInspect = func(id string) {
		if id != gone {
			return
		}
		once.Do(func() {
			c, err := client.LoadContainer(ctx, gone)
			if err == nil {
				err = c.Delete(ctx, ctrd.WithSnapshotCleanup)
			}
			if err != nil {
				t.Errorf("delete %s: %v", gone, err)
			}
		})
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r2.Run(rctx) }()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := r2.WaitReady(wctx); err != nil {
		t.Fatalf("sync with a vanishing container: %v", err)
	}
	if _, ok := r2.Get(gone); ok {
		t.Error("vanished container is in the registry")
	}
	if c, ok := r2.Get(keep); !ok || c.State != runtime.StateCreated {
		t.Errorf("container without task: %+v %v", c, ok)
	}
}

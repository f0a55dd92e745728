package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Namespace is the containerd namespace the CRI plugin (and so the harness) uses.
const Namespace = "k8s.io"

// cgroupRoot is the parent of every pod cgroup the harness creates; each
// environment uses cgroupRoot/<its dir name>/pod<uid>.
const cgroupRoot = "loupe-testenv"

// dirPrefix starts the name of every environment directory in os.TempDir();
// the owning test process's PID follows, so leftovers of dead runs are found.
const dirPrefix = "loupe-ctrd-"

// Env is a private containerd daemon with the CRI plugin, owned by one test
// process. Its methods are safe for concurrent use.
type Env struct {
	dir  string // everything lives below it
	name string // filepath.Base(dir)
	ctrd Containerd
	lay  Layout

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	conn    *grpc.ClientConn
	rt      runtimeapi.RuntimeServiceClient
	imgs    runtimeapi.ImageServiceClient
	client  *containerd.Client
	pods    []*Pod
	images  map[ImageKind]string
	stopped bool
}

var (
	mainMode  bool
	sharedMu  sync.Mutex
	sharedEnv *Env
	sharedErr error
)

// Main runs the tests of a package with one containerd shared by all of them
// and tears it down afterwards. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//
// Without it, StartContainerd starts a daemon per test (slower, same result).
func Main(m *testing.M) int {
	mainMode = true
	code := m.Run()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedEnv != nil {
		if err := sharedEnv.teardown(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: teardown: %v\n", err)
		}
		sharedEnv = nil
	}
	return code
}

// StartContainerd returns a running private containerd for the test: the
// package's shared one under Main, else a new one torn down when t ends. It
// skips (or fails with LOUPE_REQUIRE_E2E=1) without root, containerd or runc.
func StartContainerd(t testing.TB) *Env {
	t.Helper()
	RequireRoot(t)
	RequireCommand(t, "runc")
	ctrd, err := SelectedContainerd()
	if errors.Is(err, errNoContainerd) {
		Unavailable(t, err.Error())
	}
	if err != nil {
		t.Fatalf("containerd: %v", err)
	}
	if mainMode {
		sharedMu.Lock()
		defer sharedMu.Unlock()
		if sharedEnv == nil && sharedErr == nil {
			sharedEnv, sharedErr = start(ctrd)
		}
		if sharedErr != nil {
			t.Fatalf("start containerd: %v", sharedErr)
		}
		return sharedEnv
	}
	env, err := start(ctrd)
	if err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	t.Cleanup(func() {
		if err := env.teardown(); err != nil {
			t.Errorf("testenv teardown: %v", err)
		}
	})
	return env
}

// Layout places a daemon's directories and socket below the environment's
// directory the way a distribution places them below the host's root, so a
// registry given HostRoot = Env.Dir() sees the paths it would see on such a
// node. Paths are relative.
type Layout struct {
	Name                string
	Root, State, Socket string
}

// Layouts of containerd deployments users run.
var (
	// LayoutDefault is the harness's own: root/, state/, containerd.sock.
	LayoutDefault = Layout{Name: "default", Root: "root", State: "state", Socket: "containerd.sock"}
	// LayoutK3s is k3s's embedded containerd (k3s agent: --data-dir /var/lib/rancher/k3s).
	LayoutK3s = Layout{Name: "k3s", Root: "var/lib/rancher/k3s/agent/containerd", State: "run/k3s/containerd", Socket: "run/k3s/containerd/containerd.sock"}
	// LayoutRKE2 is RKE2's: its own data dir, k3s's run dir and socket.
	LayoutRKE2 = Layout{Name: "rke2", Root: "var/lib/rancher/rke2/agent/containerd", State: "run/k3s/containerd", Socket: "run/k3s/containerd/containerd.sock"}
)

// StartContainerdLayout is StartContainerd with the daemon's root, state and
// socket placed as lay says; the daemon is the test's own (never shared) and
// is torn down when t ends.
func StartContainerdLayout(t testing.TB, lay Layout) *Env {
	t.Helper()
	RequireRoot(t)
	RequireCommand(t, "runc")
	ctrd, err := SelectedContainerd()
	if errors.Is(err, errNoContainerd) {
		Unavailable(t, err.Error())
	}
	if err != nil {
		t.Fatalf("containerd: %v", err)
	}
	env, err := startLayout(ctrd, lay)
	if err != nil {
		t.Fatalf("start containerd (%s layout): %v", lay.Name, err)
	}
	t.Cleanup(func() {
		if err := env.teardown(); err != nil {
			t.Errorf("testenv teardown: %v", err)
		}
	})
	return env
}

func start(ctrd Containerd) (*Env, error) { return startLayout(ctrd, LayoutDefault) }

func startLayout(ctrd Containerd, lay Layout) (*Env, error) {
	cleanupStale()
	d, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", dirPrefix, os.Getpid()))
	if err != nil {
		return nil, err
	}
	e := &Env{dir: d, name: filepath.Base(d), ctrd: ctrd, lay: lay, images: map[ImageKind]string{}}
	for _, sub := range []string{lay.Root, lay.State, filepath.Dir(lay.Socket), "runc", "cni/conf", "cni/bin", "logs", "images", "opt"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(e.configPath(), []byte(e.config()), 0o644); err != nil {
		return nil, err
	}
	if err := e.startDaemon(); err != nil {
		_ = e.teardown()
		return nil, fmt.Errorf("%s: %w", ctrd, err)
	}
	if _, err := e.importImage(Pause); err != nil {
		_ = e.teardown()
		return nil, err
	}
	return e, nil
}

// Address is the containerd socket path.
func (e *Env) Address() string { return filepath.Join(e.dir, e.lay.Socket) }

// Namespace is the containerd namespace of CRI containers ("k8s.io").
func (e *Env) Namespace() string { return Namespace }

// Root is containerd's root directory (snapshots live below it).
func (e *Env) Root() string { return filepath.Join(e.dir, e.lay.Root) }

// State is containerd's state directory (task bundles live below it, in
// io.containerd.runtime.v2.task/<namespace>/<id>).
func (e *Env) State() string { return filepath.Join(e.dir, e.lay.State) }

// RuncRoot is runc's private state directory.
func (e *Env) RuncRoot() string { return filepath.Join(e.dir, "runc") }

// Containerd is the containerd build the environment runs (binary, version).
func (e *Env) Containerd() Containerd { return e.ctrd }

// Dir is the environment's private directory.
func (e *Env) Dir() string { return e.dir }

// CgroupParent is the cgroup (relative to a hierarchy's root, with a leading
// slash) under which this environment's pod cgroups are created.
func (e *Env) CgroupParent() string { return "/" + cgroupRoot + "/" + e.name }

// LogFile is the daemon's combined stdout/stderr.
func (e *Env) LogFile() string { return filepath.Join(e.dir, "containerd.log") }

// Runtime is a CRI runtime service client connected to the daemon.
func (e *Env) Runtime() runtimeapi.RuntimeServiceClient { return e.rt }

// Images is a CRI image service client connected to the daemon.
func (e *Env) Images() runtimeapi.ImageServiceClient { return e.imgs }

// Client is a containerd client connected to the daemon (namespace k8s.io by
// default); the harness owns it, callers must not close it.
func (e *Env) Client() *containerd.Client { return e.client }

func (e *Env) configPath() string { return filepath.Join(e.dir, "config.toml") }

// disabledPlugins are plugins the harness never needs (snapshotters that
// want other filesystems, tracing); names a version does not have are ignored.
const disabledPlugins = `["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]`

// config is the daemon's config.toml in the format of the version it runs:
// version 2 for 1.6 and 1.7 (one io.containerd.grpc.v1.cri plugin), version
// 3 for 2.x (CRI split into io.containerd.cri.v1.runtime, .images and the
// grpc.v1.cri server; sandbox_image became images' pinned_images.sandbox;
// CNI bin_dir became bin_dirs). The settings are the same in both: private
// root, state, sockets and runc Root, the local Pause image as sandbox,
// restrict_oom_score_adj, stream server on loopback, empty CNI dirs, and NRI
// off (2.x enables it by default, with a socket shared by every daemon on the
// host at /var/run/nri/nri.sock).
func (e *Env) config() string {
	if e.ctrd.ConfigVersion() == 3 {
		return e.configV3()
	}
	return e.configV2()
}

func (e *Env) configV2() string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = %[10]s

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %[9]q
        SystemdCgroup = false
`, e.Root(), e.State(), e.Address(), e.Address()+".ttrpc", filepath.Join(e.dir, "opt"), Pause.Ref(),
		filepath.Join(e.dir, "cni/bin"), filepath.Join(e.dir, "cni/conf"), e.RuncRoot(), disabledPlugins)
}

func (e *Env) configV3() string {
	return fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = %[10]s

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  level = "info"

[plugins.'io.containerd.internal.v1.opt']
  path = %[5]q

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[6]q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[7]q]
    conf_dir = %[8]q
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        Root = %[9]q
        SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, e.Root(), e.State(), e.Address(), e.Address()+".ttrpc", filepath.Join(e.dir, "opt"), Pause.Ref(),
		filepath.Join(e.dir, "cni/bin"), filepath.Join(e.dir, "cni/conf"), e.RuncRoot(), disabledPlugins)
}

func (e *Env) startDaemon() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	log, err := os.OpenFile(e.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(e.ctrd.Binary, "--config", e.configPath())
	cmd.Stdout, cmd.Stderr = log, log
	// containerd looks the shim up on PATH: the one built with this daemon first.
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(e.ctrd.Binary)+string(os.PathListSeparator)+os.Getenv("PATH"))
	// Pdeathsig: the daemon dies with the test process even when a test panics.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	_ = os.WriteFile(filepath.Join(e.dir, "containerd.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	e.cmd, e.exited = cmd, exited
	e.stopped = false

	if e.conn == nil {
		conn, err := grpc.NewClient("unix://"+e.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("connect CRI: %w", err)
		}
		e.conn = conn
		e.rt = runtimeapi.NewRuntimeServiceClient(conn)
		e.imgs = runtimeapi.NewImageServiceClient(conn)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := e.rt.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("containerd exited at start: %s", tail(e.LogFile()))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not ready after 15s: %v: %s", err, tail(e.LogFile()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if e.client == nil {
		c, err := containerd.New(e.Address(), containerd.WithDefaultNamespace(Namespace), containerd.WithTimeout(5*time.Second))
		if err != nil {
			return fmt.Errorf("connect containerd: %w", err)
		}
		e.client = c
	}
	return nil
}

// StopDaemon stops containerd (SIGTERM, then SIGKILL after 10 s). Shims and
// containers keep running, as on a real node.
func (e *Env) StopDaemon(t testing.TB) {
	t.Helper()
	if err := e.stopDaemon(syscall.SIGTERM); err != nil {
		t.Fatalf("stop containerd: %v", err)
	}
}

// KillDaemon kills containerd with SIGKILL (a crash); shims and containers keep running.
func (e *Env) KillDaemon(t testing.TB) {
	t.Helper()
	if err := e.stopDaemon(syscall.SIGKILL); err != nil {
		t.Fatalf("kill containerd: %v", err)
	}
}

// StartDaemon starts containerd again after StopDaemon or KillDaemon.
func (e *Env) StartDaemon(t testing.TB) {
	t.Helper()
	if err := e.startDaemon(); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
}

// Restart stops and starts containerd; containers survive.
func (e *Env) Restart(t testing.TB) {
	t.Helper()
	e.StopDaemon(t)
	e.StartDaemon(t)
}

func (e *Env) stopDaemon(sig syscall.Signal) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil || e.stopped {
		return nil
	}
	e.stopped = true
	_ = e.cmd.Process.Signal(sig)
	select {
	case <-e.exited:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = e.cmd.Process.Kill()
	select {
	case <-e.exited:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("containerd did not exit after SIGKILL")
	}
}

// teardown removes pods, stops the daemon and removes everything the
// environment left on the host: processes, mounts, cgroups, files.
func (e *Env) teardown() error {
	e.mu.Lock()
	pods := append([]*Pod(nil), e.pods...)
	running := e.cmd != nil && !e.stopped
	e.mu.Unlock()
	var errs []error
	if running {
		for i := len(pods) - 1; i >= 0; i-- {
			if err := pods[i].remove(); err != nil {
				errs = append(errs, err)
			}
		}
		e.removeAllCRI()
	}
	if e.client != nil {
		_ = e.client.Close()
	}
	if e.conn != nil {
		_ = e.conn.Close()
	}
	if err := e.stopDaemon(syscall.SIGTERM); err != nil {
		errs = append(errs, err)
	}
	if err := cleanupDir(e.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeAllCRI removes whatever pods and containers the CRI still knows.
func (e *Env) removeAllCRI() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cs, err := e.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err == nil {
		for _, c := range cs.Containers {
			_, _ = e.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.Id, Timeout: 2})
			_, _ = e.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.Id})
		}
	}
	if ps, err := e.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
		for _, p := range ps.Items {
			_, _ = e.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
			_, _ = e.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
		}
	}
}

// cleanupStale removes what earlier test processes that died (killed,
// panicked, timed out) left behind. Environments of live processes, such as
// other packages' tests running in parallel, are left alone.
func cleanupStale() {
	ms, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range ms {
		rest := strings.TrimPrefix(filepath.Base(d), dirPrefix)
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		_ = cleanupDir(d)
	}
}

// cleanupDir kills the daemon, shims and container processes of the
// environment in d, unmounts what is mounted below d, removes its cgroups
// (deepest first) and finally d itself.
func cleanupDir(d string) error {
	name := filepath.Base(d)
	if b, err := os.ReadFile(filepath.Join(d, "containerd.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && cmdlineContains(pid, d) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// Container processes first (so shims see their exit), then shims.
	killCgroupProcs(name)
	// A shim's -address is the environment's socket, somewhere below d.
	for _, pid := range pids() {
		if cmdlineContains(pid, d+"/") && cmdlineContains(pid, "containerd-shim") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	var errs []error
	if err := unmountBelow(d); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroups(cgroupRoot + "/" + name); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(d); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
	}
	return errors.Join(errs...)
}

func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func cmdlineContains(pid int, s string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte(s))
}

// cgroupHierarchies lists the mounted cgroup hierarchies (v1 controllers and
// the v2 unified one), as directories.
func cgroupHierarchies() []string {
	var out []string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range ents {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

// killCgroupProcs SIGKILLs every process in the environment's cgroups until
// they are empty (or 5 s pass).
func killCgroupProcs(name string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		found := false
		for _, h := range cgroupHierarchies() {
			_ = filepath.WalkDir(filepath.Join(h, cgroupRoot, name), func(p string, de os.DirEntry, err error) error {
				if err != nil || !de.IsDir() {
					return nil
				}
				b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						found = true
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				return nil
			})
		}
		if !found || time.Now().After(deadline) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeCgroups removes rel (relative to each hierarchy's root) and all
// cgroups below it, deepest first, in every hierarchy, retrying briefly while
// exiting processes leave them busy.
func removeCgroups(rel string) error {
	var errs []error
	for _, h := range cgroupHierarchies() {
		root := filepath.Join(h, rel)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, de os.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			var err error
			for i := 0; i < 50; i++ {
				if err = unix.Rmdir(d); err == nil || errors.Is(err, unix.ENOENT) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
		// The shared parent goes when the last environment is gone.
		_ = unix.Rmdir(filepath.Join(h, cgroupRoot))
	}
	return errors.Join(errs...)
}

// unmountBelow detaches every mount point below d, deepest first.
func unmountBelow(d string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mps []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 {
			mp := unescapeMount(f[4])
			if strings.HasPrefix(mp, d+"/") {
				mps = append(mps, mp)
			}
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	var errs []error
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space etc.).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func tail(p string) string {
	b, _ := os.ReadFile(p)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Image builds (once per environment) and imports the image of kind into
// the daemon, unpacked for the overlayfs snapshotter, and returns its reference.
func (e *Env) Image(t testing.TB, kind ImageKind) string {
	t.Helper()
	ref, err := e.importImage(kind)
	if err != nil {
		t.Fatalf("image %s: %v", kind, err)
	}
	return ref
}

func (e *Env) importImage(kind ImageKind) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ref, ok := e.images[kind]; ok {
		return ref, nil
	}
	p := filepath.Join(e.dir, "images", string(kind)+".tar")
	if err := WriteImageTar(kind, p); err != nil {
		return "", err
	}
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	imgs, err := e.client.Import(ctx, f)
	if err != nil {
		return "", fmt.Errorf("import %s: %w", kind, err)
	}
	for _, img := range imgs {
		if err := containerd.NewImage(e.client, img).Unpack(ctx, "overlayfs"); err != nil {
			return "", fmt.Errorf("unpack %s: %w", img.Name, err)
		}
	}
	// The CRI plugin learns about images from events: wait until it sees it.
	for {
		st, err := e.imgs.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: kind.Ref()}})
		if err == nil && st.Image != nil {
			break
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("image %s imported but not visible to CRI: %v", kind, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.images[kind] = kind.Ref()
	return kind.Ref(), nil
}

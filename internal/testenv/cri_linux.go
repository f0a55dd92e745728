package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CRI labels kubelet sets on pods and containers.
const (
	LabelPodName       = "io.kubernetes.pod.name"
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelPodUID        = "io.kubernetes.pod.uid"
	LabelContainerName = "io.kubernetes.container.name"
)

// PodConfig describes a pod for RunPod. Name is required; Namespace defaults
// to "default" and UID to a random UUID.
type PodConfig struct {
	Name, Namespace, UID string
	// Labels and Annotations are added to kubelet's standard labels.
	Labels, Annotations map[string]string
	// Privileged makes the sandbox privileged (needed for privileged containers).
	Privileged bool
	// HostPID shares the host's PID namespace (hostPID: true), for node agents.
	HostPID bool
}

// Pod is a pod sandbox created through CRI RunPodSandbox.
type Pod struct {
	env    *Env
	id     string
	cfg    PodConfig
	sbx    *runtimeapi.PodSandboxConfig
	mu     sync.Mutex
	ctrs   []*Container
	gone   bool
	logDir string
}

// RunPod creates a pod sandbox the way kubelet does: kubelet's labels,
// host network (and so no hostname), cgroup parent CgroupParent()/pod<uid>.
// The pod and its containers are removed when t ends.
func (e *Env) RunPod(t testing.TB, cfg PodConfig) *Pod {
	t.Helper()
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if cfg.UID == "" {
		cfg.UID = uuid.NewString()
	}
	labels := map[string]string{LabelPodName: cfg.Name, LabelPodNamespace: cfg.Namespace, LabelPodUID: cfg.UID}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	ann := map[string]string{"kubernetes.io/config.source": "api", "kubernetes.io/config.seen": time.Now().UTC().Format(time.RFC3339Nano)}
	for k, v := range cfg.Annotations {
		ann[k] = v
	}
	logDir := filepath.Join(e.dir, "logs", cfg.Namespace+"_"+cfg.Name+"_"+cfg.UID)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatalf("run pod %s: %v", cfg.Name, err)
	}
	pid := runtimeapi.NamespaceMode_CONTAINER
	if cfg.HostPID {
		pid = runtimeapi.NamespaceMode_NODE
	}
	sbx := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: cfg.Name, Namespace: cfg.Namespace, Uid: cfg.UID},
		Labels:       labels,
		Annotations:  ann,
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: e.podCgroup(cfg.UID),
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: pid, Ipc: runtimeapi.NamespaceMode_POD},
				Privileged:       cfg.Privileged,
			},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbx})
	if err != nil {
		t.Fatalf("RunPodSandbox %s/%s: %v", cfg.Namespace, cfg.Name, err)
	}
	p := &Pod{env: e, id: r.PodSandboxId, cfg: cfg, sbx: sbx, logDir: logDir}
	e.mu.Lock()
	e.pods = append(e.pods, p)
	e.mu.Unlock()
	t.Cleanup(func() {
		if err := p.remove(); err != nil {
			t.Errorf("remove pod %s: %v", cfg.Name, err)
		}
	})
	return p
}

func (e *Env) podCgroup(uid string) string { return e.CgroupParent() + "/pod" + uid }

// ID is the sandbox id (= the id of the sandbox container in containerd).
func (p *Pod) ID() string { return p.id }

// Name, Namespace and UID are the pod's Kubernetes identity.
func (p *Pod) Name() string      { return p.cfg.Name }
func (p *Pod) Namespace() string { return p.cfg.Namespace }
func (p *Pod) UID() string       { return p.cfg.UID }

// CgroupParent is the pod's cgroup (relative to a hierarchy's root).
func (p *Pod) CgroupParent() string { return p.env.podCgroup(p.cfg.UID) }

// Remove stops and removes the pod's containers, then the sandbox, then the
// pod's cgroups (containerd leaves them, like kubelet would clean them).
func (p *Pod) Remove(t testing.TB) {
	t.Helper()
	if err := p.remove(); err != nil {
		t.Fatalf("remove pod %s: %v", p.cfg.Name, err)
	}
}

func (p *Pod) remove() error {
	p.mu.Lock()
	if p.gone {
		p.mu.Unlock()
		return nil
	}
	p.gone = true
	ctrs := append([]*Container(nil), p.ctrs...)
	p.mu.Unlock()
	var errs []error
	for _, c := range ctrs {
		if err := c.stop(5); err != nil {
			errs = append(errs, err)
		}
		if err := c.remove(); err != nil {
			errs = append(errs, err)
		}
	}
	rt := p.env.rt
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.id}); err != nil {
		errs = append(errs, fmt.Errorf("StopPodSandbox: %w", err))
	}
	if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.id}); err != nil {
		errs = append(errs, fmt.Errorf("RemovePodSandbox: %w", err))
	}
	if err := removeCgroups(strings.TrimPrefix(p.CgroupParent(), "/")); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ContainerConfig describes a container for Pod.Start. Name and Image are required.
type ContainerConfig struct {
	Name  string
	Image string
	// Command overrides the image's entrypoint, Args its command.
	Command, Args []string
	Env           map[string]string
	// RunAsUser, when set, is the uid the process runs as.
	RunAsUser      *int64
	Privileged     bool
	ReadOnlyRootfs bool
	Labels         map[string]string
	Annotations    map[string]string
}

// Container is a container created and started through CRI.
type Container struct {
	pod  *Pod
	id   string
	cfg  ContainerConfig
	mu   sync.Mutex
	gone bool
}

// Start creates and starts a container in the pod (CRI CreateContainer +
// StartContainer) with kubelet's labels.
func (p *Pod) Start(t testing.TB, cfg ContainerConfig) *Container {
	t.Helper()
	c, err := p.start(cfg)
	if err != nil {
		t.Fatalf("start container %s: %v", cfg.Name, err)
	}
	return c
}

func (p *Pod) start(cfg ContainerConfig) (*Container, error) {
	labels := map[string]string{
		LabelPodName: p.cfg.Name, LabelPodNamespace: p.cfg.Namespace, LabelPodUID: p.cfg.UID,
		LabelContainerName: cfg.Name,
	}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	var envs []*runtimeapi.KeyValue
	for k, v := range cfg.Env {
		envs = append(envs, &runtimeapi.KeyValue{Key: k, Value: []byte(v)})
	}
	sc := &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
		Privileged:       cfg.Privileged,
		ReadonlyRootfs:   cfg.ReadOnlyRootfs,
	}
	if cfg.RunAsUser != nil {
		sc.RunAsUser = &runtimeapi.Int64Value{Value: *cfg.RunAsUser}
	}
	cc := &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: cfg.Name},
		Image:       &runtimeapi.ImageSpec{Image: cfg.Image},
		Command:     cfg.Command,
		Args:        cfg.Args,
		Envs:        envs,
		Labels:      labels,
		Annotations: cfg.Annotations,
		LogPath:     cfg.Name + "_0.log",
		Linux:       &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{}, SecurityContext: sc},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := p.env.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.id, Config: cc, SandboxConfig: p.sbx})
	if err != nil {
		return nil, fmt.Errorf("CreateContainer: %w", err)
	}
	c := &Container{pod: p, id: r.ContainerId, cfg: cfg}
	p.mu.Lock()
	p.ctrs = append(p.ctrs, c)
	p.mu.Unlock()
	if _, err := p.env.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.id}); err != nil {
		return c, fmt.Errorf("StartContainer: %w", err)
	}
	return c, nil
}

// ID is the container id.
func (c *Container) ID() string { return c.id }

// Name is the container's name in the pod.
func (c *Container) Name() string { return c.cfg.Name }

// Pod is the container's pod.
func (c *Container) Pod() *Pod { return c.pod }

// Status returns the container's verbose CRI status.
func (c *Container) Status(t testing.TB) *runtimeapi.ContainerStatusResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.pod.env.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.id, Verbose: true})
	if err != nil {
		t.Fatalf("ContainerStatus %s: %v", c.cfg.Name, err)
	}
	return st
}

// PID is the host PID of the container's init process.
func (c *Container) PID(t testing.TB) int {
	t.Helper()
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(c.Status(t).Info["info"]), &info); err != nil || info.Pid == 0 {
		t.Fatalf("container %s: no pid in verbose status (%v)", c.cfg.Name, err)
	}
	return info.Pid
}

// ExecResult is the outcome of an ExecSync.
type ExecResult struct {
	Stdout, Stderr []byte
	ExitCode       int32
}

// Exec runs cmd in the container through CRI ExecSync, as kubectl exec does.
// The error is the CRI error (e.g. for a missing binary); a non-zero exit is
// reported in ExitCode, not as an error.
func (c *Container) Exec(t testing.TB, cmd []string, timeout time.Duration) (*ExecResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	secs := int64(timeout / time.Second)
	if secs < 1 {
		secs = 1
	}
	r, err := c.pod.env.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: c.id, Cmd: cmd, Timeout: secs})
	if err != nil {
		return nil, err
	}
	return &ExecResult{Stdout: r.Stdout, Stderr: r.Stderr, ExitCode: r.ExitCode}, nil
}

// RequestExec makes loupe-testapp (the container's main process) execve(2)
// argv in place: it writes argv to ExecRequestFile through /proc/<pid>/root.
func (c *Container) RequestExec(t testing.TB, argv ...string) {
	t.Helper()
	c.writeRequest(t, ExecRequestFile, argv)
}

// RequestSpawn makes loupe-testapp start argv as a child process.
func (c *Container) RequestSpawn(t testing.TB, argv ...string) {
	t.Helper()
	c.writeRequest(t, SpawnRequestFile, argv)
}

// RequestStart makes loupe-testapp start argv in the background: a second
// process of the container that keeps running.
func (c *Container) RequestStart(t testing.TB, argv ...string) {
	t.Helper()
	c.writeRequest(t, StartRequestFile, argv)
}

func (c *Container) writeRequest(t testing.TB, path string, argv []string) {
	t.Helper()
	root := fmt.Sprintf("/proc/%d/root", c.PID(t))
	tmp := root + path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(argv, "\n")+"\n"), 0o644); err != nil {
		t.Fatalf("write exec request: %v", err)
	}
	if err := os.Rename(tmp, root+path); err != nil {
		t.Fatalf("write exec request: %v", err)
	}
}

// Logs returns what the container wrote to stdout/stderr (CRI log format).
func (c *Container) Logs(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.pod.logDir, c.cfg.Name+"_0.log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("read logs of %s: %v", c.cfg.Name, err)
	}
	return string(b)
}

// Stop stops the container (SIGTERM, SIGKILL after 5 s) through CRI.
func (c *Container) Stop(t testing.TB) {
	t.Helper()
	c.waitSignalHandler(t, syscall.SIGTERM, 10*time.Second)
	if err := c.stop(5); err != nil {
		t.Fatalf("stop %s: %v", c.cfg.Name, err)
	}
}

// Remove removes the (stopped) container through CRI.
func (c *Container) Remove(t testing.TB) {
	t.Helper()
	if err := c.remove(); err != nil {
		t.Fatalf("remove %s: %v", c.cfg.Name, err)
	}
}

// waitSignalHandler waits until the container's init process handles sig.
// The kernel drops a signal sent to a PID namespace's init that has no
// handler for it, so a SIGTERM that arrives while a just-started program
// is still initialising is lost, and the stop ends in SIGKILL after the
// grace period. A container that is already gone, or a process that never
// installs the handler, returns after d without failing.
func (c *Container) waitSignalHandler(t testing.TB, sig syscall.Signal, d time.Duration) {
	t.Helper()
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(c.Status(t).Info["info"]), &info); err != nil || info.Pid == 0 {
		return
	}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", info.Pid))
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			if hex, ok := strings.CutPrefix(line, "SigCgt:"); ok {
				if mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64); err == nil && mask&(1<<(uint(sig)-1)) != 0 {
					return
				}
			}
		}
	}
}

func (c *Container) stop(timeout int64) error {
	c.mu.Lock()
	gone := c.gone
	c.mu.Unlock()
	if gone {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(timeout+20)*time.Second)
	defer cancel()
	if _, err := c.pod.env.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.id, Timeout: timeout}); err != nil {
		return fmt.Errorf("StopContainer %s: %w", c.cfg.Name, err)
	}
	return nil
}

func (c *Container) remove() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.pod.env.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.id}); err != nil {
		return fmt.Errorf("RemoveContainer %s: %w", c.cfg.Name, err)
	}
	c.gone = true
	return nil
}

package testenv

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImportImageTar imports an image tarball built elsewhere (OCI image layout
// or docker-archive, one image or more) into the daemon, unpacks it for the
// overlayfs snapshotter, waits until CRI sees it and returns the names it
// was imported under.
func (e *Env) ImportImageTar(t testing.TB, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("import %s: %v", path, err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	imgs, err := e.client.Import(ctx, f)
	if err != nil {
		t.Fatalf("import %s: %v", path, err)
	}
	var names []string
	for _, img := range imgs {
		if err := containerd.NewImage(e.client, img).Unpack(ctx, "overlayfs"); err != nil {
			t.Fatalf("unpack %s: %v", img.Name, err)
		}
		names = append(names, img.Name)
		for {
			st, err := e.imgs.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: img.Name}})
			if err == nil && st.Image != nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("image %s imported but not visible to CRI: %v", img.Name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if len(names) == 0 {
		t.Fatalf("import %s: no image in the archive", path)
	}
	return names
}

// HostMount is a bind mount from the host into a container (a hostPath volume).
type HostMount struct {
	HostPath, ContainerPath string
	ReadOnly                bool
	// HostToContainer propagates mounts made on the host later (rslave),
	// as mountPropagation: HostToContainer does.
	HostToContainer bool
}

// HostContainerConfig describes a node-agent container for Pod.StartHost:
// what a DaemonSet's container spec gives kubelet.
type HostContainerConfig struct {
	Name, Image   string
	Command, Args []string
	Env           map[string]string
	Mounts        []HostMount
	// AddCapabilities and DropCapabilities use Kubernetes names (BPF, not CAP_BPF);
	// "ALL" drops every capability.
	AddCapabilities, DropCapabilities []string
	RunAsUser                         *int64
	ReadOnlyRootfs                    bool
	NoNewPrivs                        bool
	// SeccompUnconfined and AppArmorUnconfined mirror the profiles' type: Unconfined;
	// otherwise the runtime's defaults apply.
	SeccompUnconfined, AppArmorUnconfined bool
}

// StartHost creates and starts a container in a host-PID pod (PodConfig.HostPID)
// with the given mounts, capabilities and security settings, as kubelet
// would for a DaemonSet's container.
func (p *Pod) StartHost(t testing.TB, cfg HostContainerConfig) *Container {
	t.Helper()
	labels := map[string]string{
		LabelPodName: p.cfg.Name, LabelPodNamespace: p.cfg.Namespace, LabelPodUID: p.cfg.UID, LabelContainerName: cfg.Name,
	}
	var envs []*runtimeapi.KeyValue
	for k, v := range cfg.Env {
		envs = append(envs, &runtimeapi.KeyValue{Key: k, Value: []byte(v)})
	}
	var mounts []*runtimeapi.Mount
	for _, m := range cfg.Mounts {
		prop := runtimeapi.MountPropagation_PROPAGATION_PRIVATE
		if m.HostToContainer {
			prop = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
		}
		mounts = append(mounts, &runtimeapi.Mount{ContainerPath: m.ContainerPath, HostPath: m.HostPath, Readonly: m.ReadOnly, Propagation: prop})
	}
	sc := &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_POD},
		Capabilities:     &runtimeapi.Capability{AddCapabilities: cfg.AddCapabilities, DropCapabilities: cfg.DropCapabilities},
		ReadonlyRootfs:   cfg.ReadOnlyRootfs,
		NoNewPrivs:       cfg.NoNewPrivs,
	}
	if cfg.RunAsUser != nil {
		sc.RunAsUser = &runtimeapi.Int64Value{Value: *cfg.RunAsUser}
	}
	if cfg.SeccompUnconfined {
		sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
	} else {
		sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	}
	if cfg.AppArmorUnconfined {
		sc.Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
	}
	cc := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: cfg.Name},
		Image:    &runtimeapi.ImageSpec{Image: cfg.Image},
		Command:  cfg.Command,
		Args:     cfg.Args,
		Envs:     envs,
		Labels:   labels,
		Mounts:   mounts,
		LogPath:  cfg.Name + "_0.log",
		Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{}, SecurityContext: sc},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := p.env.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.id, Config: cc, SandboxConfig: p.sbx})
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", cfg.Name, err)
	}
	c := &Container{pod: p, id: r.ContainerId, cfg: ContainerConfig{Name: cfg.Name, Image: cfg.Image}}
	p.mu.Lock()
	p.ctrs = append(p.ctrs, c)
	p.mu.Unlock()
	if _, err := p.env.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.id}); err != nil {
		t.Fatalf("StartContainer %s: %v", cfg.Name, fmt.Errorf("%w\n%s", err, c.Logs(t)))
	}
	return c
}

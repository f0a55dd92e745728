package kubernetes

import (
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/loupe-dev/loupe/agent"
)

// TestDistributionOverlays checks that overlays/k3s and overlays/rke2 give
// the agent the paths of those distributions' containerd (the layouts
// runtime/containerd's TestDistributionLayouts runs the registry against):
// the flags as the agent parses them, and the two containerd host paths
// mounted at the same place under --host-root and nothing of the default
// layout left.
func TestDistributionOverlays(t *testing.T) {
	root, _ := buildDirs(t)
	for dir, dataRoot := range map[string]string{
		"overlays/k3s":  "/var/lib/rancher/k3s/agent/containerd",
		"overlays/rke2": "/var/lib/rancher/rke2/agent/containerd",
	} {
		objs, err := Build(filepath.Join(root, dir))
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		var ds *appsv1.DaemonSet
		for _, o := range objs {
			if d, ok := o.Value.(*appsv1.DaemonSet); ok && d.Name == "loupe-agent" {
				ds = d
			}
		}
		if ds == nil {
			t.Fatalf("%s: no loupe-agent DaemonSet", dir)
		}
		cfg := agent.DefaultConfig()
		fs := pflag.NewFlagSet("loupe-agent", pflag.ContinueOnError)
		agent.RegisterFlags(fs, &cfg)
		if err := fs.Parse(ds.Spec.Template.Spec.Containers[0].Args); err != nil {
			t.Fatalf("%s: agent flags: %v", dir, err)
		}
		if cfg.ContainerdSocket != "/run/k3s/containerd/containerd.sock" || cfg.ContainerdState != "/run/k3s/containerd" || cfg.ContainerdNamespace != "k8s.io" || cfg.HostRoot != "/host" {
			t.Errorf("%s: socket %q state %q namespace %q host root %q", dir, cfg.ContainerdSocket, cfg.ContainerdState, cfg.ContainerdNamespace, cfg.HostRoot)
		}
		for _, host := range []string{"/run/k3s/containerd", dataRoot} {
			m, ok := HostMount(ds, host)
			if !ok || m.MountPath != "/host"+host || !m.ReadOnly {
				t.Errorf("%s: host path %s mounted %+v (%v), want read-only at /host%s", dir, host, m, ok, host)
			}
		}
		for _, host := range []string{"/run/containerd", "/var/lib/containerd"} {
			if _, ok := HostMount(ds, host); ok {
				t.Errorf("%s: still mounts %s, which k3s/RKE2 nodes need not have", dir, host)
			}
		}
		if m, _ := HostMount(ds, dataRoot); m.MountPropagation == nil || *m.MountPropagation != "HostToContainer" {
			t.Errorf("%s: snapshot mount propagation %v, want HostToContainer (new snapshots appear)", dir, m.MountPropagation)
		}
	}
}

package containerd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/runtime"
)

// TestDistributionLayouts runs the registry against a containerd laid out
// as k3s and RKE2 lay out theirs — socket and state in run/k3s/containerd,
// snapshots in var/lib/rancher/<k3s|rke2>/agent/containerd, all below the
// environment's directory — seen, as in the DaemonSet, under a host root
// (symlinks to the real /proc, /sys and /tmp), with the socket and state dir
// given as the agent's --containerd-socket and --containerd-state are
// (docs/install.md); namespace k8s.io, as k3s's CRI uses.
func TestDistributionLayouts(t *testing.T) {
	for _, lay := range []testenv.Layout{testenv.LayoutK3s, testenv.LayoutRKE2} {
		t.Run(lay.Name, func(t *testing.T) {
			env := testenv.StartContainerdLayout(t, lay)
			// A short name: the socket's path below it must fit sun_path (108 bytes).
			host, err := os.MkdirTemp("", "h")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.RemoveAll(host) })
			for _, d := range []string{"proc", "sys", "tmp"} {
				if err := os.Symlink("/"+d, filepath.Join(host, d)); err != nil {
					t.Fatal(err)
				}
			}
			_, evs := startRegistry(t, env, func(c *Config) {
				c.HostRoot = host
				c.Socket = env.Address()
				c.StateDir = env.State()
			})
			if !strings.HasSuffix(env.Address(), "/run/k3s/containerd/containerd.sock") || !strings.HasSuffix(env.State(), "/run/k3s/containerd") {
				t.Fatalf("layout not applied: socket %s state %s", env.Address(), env.State())
			}
			pod := env.RunPod(t, testenv.PodConfig{Name: "svclb-traefik", Namespace: "kube-system"})
			ctr := pod.Start(t, testenv.ContainerConfig{Name: "lb", Image: env.Image(t, testenv.Distroless)})
			c := waitEvent(t, evs, 5*time.Second, "start", func(ev runtime.Event) bool {
				return ev.Type == runtime.EventStart && ev.Container.ID == ctr.ID()
			}).Container
			if c.Pod.Name != "svclb-traefik" || c.Pod.Namespace != "kube-system" || c.CgroupID == 0 || c.PID != ctr.PID(t) || len(c.Warnings) != 0 {
				t.Errorf("entry: %+v", c)
			}
			snaps := filepath.Join(host, env.Dir(), lay.Root, "io.containerd.snapshotter.v1.overlayfs", "snapshots") + "/"
			if len(c.Rootfs.Layers) != 2 || !strings.HasPrefix(c.Rootfs.Upper, snaps) {
				t.Fatalf("rootfs %+v, want layers and upper below %s", c.Rootfs, snaps)
			}
			for _, l := range c.Rootfs.Layers {
				if !strings.HasPrefix(l.Dir, snaps) {
					t.Errorf("layer %s not below %s", l.Dir, snaps)
				}
			}
			if _, err := os.Stat(filepath.Join(c.Rootfs.Layers[0].Dir, "app")); err != nil {
				t.Error(err)
			}
			if _, err := ctr.Exec(t, []string{"/bin/sh"}, 5*time.Second); err == nil {
				t.Fatal("exec of /bin/sh in distroless succeeded")
			}
			ev := waitEvent(t, evs, 5*time.Second, "exec_failed", func(ev runtime.Event) bool {
				return ev.Type == runtime.EventExecFailed && ev.Container.ID == ctr.ID()
			})
			if ev.Exec.Path != "/bin/sh" {
				t.Errorf("runc's log.json under /%s not read: %+v", lay.State, ev.Exec)
			}
		})
	}
}

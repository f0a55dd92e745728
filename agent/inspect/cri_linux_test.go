package inspect_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/loupe-dev/loupe/agent/inspect"
	"github.com/loupe-dev/loupe/agent/inspect/layercache"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/runtime"
	"github.com/loupe-dev/loupe/runtime/containerd"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// targetOf maps a registry container to an inspect target: runtime lists
// layers topmost first (overlay lowerdir order), inspect wants bottom first.
func targetOf(c *runtime.Container) inspect.Target {
	t := inspect.Target{
		Name:      c.Image,
		Container: &loupev1.ContainerRef{Id: c.ID, Name: c.ContainerName, Pod: c.Pod.Name, Namespace: c.Pod.Namespace, PodUid: c.Pod.UID, Image: c.Image, ImageDigest: c.ImageDigest},
	}
	if c.Rootfs.LayersUnknown {
		t.Root = c.Rootfs.Merged
		return t
	}
	for i := len(c.Rootfs.Layers) - 1; i >= 0; i-- {
		l := c.Rootfs.Layers[i]
		t.Layers = append(t.Layers, inspect.Layer{Dir: l.Dir, ID: l.Key})
	}
	t.Upper = c.Rootfs.Upper
	return t
}

func running(t *testing.T, r *containerd.Registry, id string) *runtime.Container {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, ok := r.Get(id); ok && c.State == runtime.StateRunning && len(c.Rootfs.Layers) > 0 && c.Rootfs.Upper != "" {
			return c
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("container %s not registered as running with its layers", id)
	return nil
}

func kinds(rep *inspect.Report, k loupev1.Kind) []*loupev1.Finding {
	var out []*loupev1.Finding
	for _, f := range rep.Findings {
		if f.GetKind() == k {
			out = append(out, f)
		}
	}
	return out
}

// TestScanRunningCRIContainers scans real containers started through CRI
// on a private containerd: a distroless one (no shell), a busybox one
// (shell), drift after a file is written inside it, and the layer cache hit
// for a second container of the same image.
func TestScanRunningCRIContainers(t *testing.T) {
	env := testenv.StartContainerd(t)
	reg := containerd.New(containerd.Config{Socket: env.Address(), StateDir: env.State()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); reg.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	if err := reg.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	cache, err := layercache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	sc := inspect.New(inspect.Options{Node: "test-node"}, cache, nil)

	pod := env.RunPod(t, testenv.PodConfig{Name: "web-1", Namespace: "shop"})
	dl := pod.Start(t, testenv.ContainerConfig{Name: "app", Image: env.Image(t, testenv.Distroless)})
	bbImage := env.Image(t, testenv.Busybox)
	bb := pod.Start(t, testenv.ContainerConfig{Name: "tools", Image: bbImage, Command: []string{"/bin/sleep", "3600"}})

	rep, err := sc.Scan(ctx, targetOf(running(t, reg, dl.ID())))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(kinds(rep, loupev1.Kind_KIND_SHELL_PRESENT)); n != 0 || rep.Profile.Name != "distroless-static" {
		t.Fatalf("distroless: %d shells, profile %+v", n, rep.Profile)
	}
	if p := kinds(rep, loupev1.Kind_KIND_IMAGE_PROFILE); len(p) != 1 || p[0].GetContainer().GetPod() != "web-1" || p[0].GetNode() != "test-node" {
		t.Fatalf("profile finding: %v", p)
	}

	bbc := running(t, reg, bb.ID())
	rep, err = sc.Scan(ctx, targetOf(bbc))
	if err != nil {
		t.Fatal(err)
	}
	shells := kinds(rep, loupev1.Kind_KIND_SHELL_PRESENT)
	if len(shells) == 0 || len(kinds(rep, loupev1.Kind_KIND_DRIFT_FILE)) != 0 {
		t.Fatalf("busybox: shells %v drift %v", shells, kinds(rep, loupev1.Kind_KIND_DRIFT_FILE))
	}
	for _, f := range shells {
		if f.GetFile().GetLayer() == inspect.UpperLayer || f.GetFile().GetLayer() == "" {
			t.Fatalf("image shell attributed to layer %q", f.GetFile().GetLayer())
		}
	}

	// Drift: a binary written inside the running container.
	if res, err := bb.Exec(t, []string{"/bin/sh", "-c", "cp /bin/busybox /tmp/dropper && chmod 755 /tmp/dropper"}, 10*time.Second); err != nil || res.ExitCode != 0 {
		t.Fatalf("exec: %v %+v", err, res)
	}
	rep, err = sc.Scan(ctx, targetOf(bbc))
	if err != nil {
		t.Fatal(err)
	}
	var dropper *loupev1.Finding
	for _, f := range kinds(rep, loupev1.Kind_KIND_DRIFT_FILE) {
		if f.GetFile().GetPath() == "/tmp/dropper" {
			dropper = f
		}
	}
	if dropper == nil || dropper.GetFile().GetChange() != "added" || len(dropper.GetFile().GetSha256()) != 64 || dropper.GetFile().GetLayer() != inspect.UpperLayer {
		t.Fatalf("drift: %v", dropper)
	}
	if rep.CacheHits != len(bbc.Rootfs.Layers) {
		t.Fatalf("rescan of the same container: %d cache hits for %d layers", rep.CacheHits, len(bbc.Rootfs.Layers))
	}

	// A second container of the busybox image in another pod: every image
	// layer comes from the cache, and its (empty) upper dir shows no drift.
	pod2 := env.RunPod(t, testenv.PodConfig{Name: "web-2", Namespace: "shop"})
	bb2 := pod2.Start(t, testenv.ContainerConfig{Name: "tools", Image: bbImage, Command: []string{"/bin/sleep", "3600"}})
	c2 := running(t, reg, bb2.ID())
	rep2, err := sc.Scan(ctx, targetOf(c2))
	if err != nil {
		t.Fatal(err)
	}
	if rep2.CacheHits != len(c2.Rootfs.Layers) || len(kinds(rep2, loupev1.Kind_KIND_DRIFT_FILE)) != 0 || len(kinds(rep2, loupev1.Kind_KIND_SHELL_PRESENT)) != len(shells) {
		t.Fatalf("second container: hits %d/%d, drift %v", rep2.CacheHits, len(c2.Rootfs.Layers), kinds(rep2, loupev1.Kind_KIND_DRIFT_FILE))
	}
}

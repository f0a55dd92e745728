package agent

import (
	"fmt"
	"slices"

	"github.com/loupe-dev/loupe/agent/inspect"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/bpf/classify"
	"github.com/loupe-dev/loupe/runtime"
)

// This file holds the conversions between the runtime registry's domain
// type and what the other parts need: one place, no copies elsewhere.

// containerRef is the finding's view of a container.
func containerRef(c *runtime.Container) *loupev1.ContainerRef {
	return &loupev1.ContainerRef{
		Id: c.ID, Name: c.ContainerName, Pod: c.Pod.Name, Namespace: c.Pod.Namespace, PodUid: c.Pod.UID,
		Image: c.Image, ImageDigest: c.ImageDigest, RuntimeNamespace: c.Namespace,
	}
}

// scanTarget maps a container's root filesystem to the scanner's input.
// Layers come topmost first from the registry and lowest first for the scanner.
func scanTarget(c *runtime.Container) inspect.Target {
	t := inspect.Target{
		Container: containerRef(c),
		Name:      c.Image,
		ImageUser: fmt.Sprint(c.Spec.UID),
		UserKnown: true,
	}
	if c.Rootfs.LayersUnknown || len(c.Rootfs.Layers) == 0 {
		t.Root, t.RootLayer = c.Rootfs.Merged, "rootfs"
		return t
	}
	for _, l := range slices.Backward(c.Rootfs.Layers) {
		t.Layers = append(t.Layers, inspect.Layer{Dir: l.Dir, ID: l.Key})
	}
	t.Upper = c.Rootfs.Upper
	return t
}

// classifyContainers lets the exec classifier attribute events through the registry.
type classifyContainers struct{ reg runtime.Registry }

func (cc classifyContainers) ByCgroupID(id uint64) (classify.Container, bool) {
	c, ok := cc.reg.ByCgroupID(id)
	return toClassify(c, ok)
}

func (cc classifyContainers) ByMntNS(ino uint64) (classify.Container, bool) {
	c, ok := cc.reg.ByMountNS(ino)
	return toClassify(c, ok)
}

func toClassify(c *runtime.Container, ok bool) (classify.Container, bool) {
	if !ok {
		return classify.Container{}, false
	}
	upper := c.Rootfs.Upper
	if c.Rootfs.LayersUnknown {
		upper = ""
	}
	return classify.Container{Ref: containerRef(c), UpperDir: upper}, true
}

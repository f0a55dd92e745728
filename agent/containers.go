package agent

import (
	"fmt"
	"slices"

	"github.com/loupe-dev/loupe/agent/inspect"
	"github.com/loupe-dev/loupe/bpf/classify"
	"github.com/loupe-dev/loupe/runtime"
)

// scanTarget is the conversion from the runtime registry's domain type to
// the scanner's; the classifier's is classify.ContainerOf.

// scanTarget maps a container's root filesystem to the scanner's input.
// Layers come topmost first from the registry and lowest first for the scanner.
func scanTarget(c *runtime.Container) inspect.Target {
	t := inspect.Target{
		Container: classify.ContainerOf(c).Ref,
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

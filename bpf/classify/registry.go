package classify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/bpf"
	"github.com/loupe-dev/loupe/runtime"
)

// ContainerOf converts a registry entry to what the classifier needs.
func ContainerOf(c *runtime.Container) Container {
	return Container{
		Ref: &loupev1.ContainerRef{
			Id: c.ID, Name: c.ContainerName, Pod: c.Pod.Name, Namespace: c.Pod.Namespace, PodUid: c.Pod.UID,
			Image: c.Image, ImageDigest: c.ImageDigest, RuntimeNamespace: c.Namespace,
		},
		UpperDir: c.Rootfs.Upper,
		Sandbox:  c.Kind == runtime.KindSandbox,
		InitPID:  c.PID,
	}
}

// FromRegistry adapts the runtime registry to Containers.
func FromRegistry(reg runtime.Registry) Containers { return registryContainers{reg} }

type registryContainers struct{ reg runtime.Registry }

func (r registryContainers) ByCgroupID(id uint64) (Container, bool) {
	c, ok := r.reg.ByCgroupID(id)
	if !ok {
		return Container{}, false
	}
	return ContainerOf(c), true
}

func (r registryContainers) ByMntNS(ino uint64) (Container, bool) {
	c, ok := r.reg.ByMountNS(ino)
	if !ok {
		return Container{}, false
	}
	return ContainerOf(c), true
}

// Tracker is the part of *bpf.Tracer that Follow keeps current.
type Tracker interface {
	TrackCgroup(id uint64) error
	UntrackCgroup(id uint64) error
	TrackMntNS(ino uint64) error
	UntrackMntNS(ino uint64) error
	KillShellsIn(cgroupID uint64) error
	StopKillingIn(cgroupID uint64) error
}

// FollowOptions configures Follow.
type FollowOptions struct {
	// Policy selects the containers whose shells are killed; nil kills nothing.
	Policy *bpf.KillPolicy
	// HostMntNS is the host's mount-namespace inode: a container sharing it
	// is not tracked by mount namespace (that would report every host exec).
	HostMntNS uint64
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Resync is how often the maps are reconciled with the registry's list,
	// which repairs events a slow subscriber lost (default 10s).
	Resync time.Duration
}

type tracked struct {
	cg, mnt uint64
	killed  bool
}

// Follow keeps the tracer's filter maps (and the kill map, with a policy)
// in step with the registry's running containers until ctx is done: every
// running container is tracked by cgroup id and mount namespace; stopped
// and removed ones are untracked. It returns nil when ctx ends.
func Follow(ctx context.Context, reg runtime.Registry, t Tracker, opts FollowOptions) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	events, cancel := reg.Subscribe(1024)
	defer cancel()
	state := map[string]tracked{}
	apply := func(c *runtime.Container) {
		if c.State != runtime.StateRunning || c.CgroupID == 0 {
			return
		}
		if old, ok := state[c.ID]; ok && old.cg == c.CgroupID {
			return
		}
		var errs []error
		tr := tracked{cg: c.CgroupID}
		errs = append(errs, t.TrackCgroup(c.CgroupID))
		if c.MountNS != 0 && c.MountNS != opts.HostMntNS {
			errs = append(errs, t.TrackMntNS(c.MountNS))
			tr.mnt = c.MountNS
		}
		if opts.Policy != nil && c.Kind != runtime.KindSandbox && opts.Policy.Matches(c.Pod.Namespace, c.Pod.Name, c.Image) {
			errs = append(errs, t.KillShellsIn(c.CgroupID))
			tr.killed = true
			log.Info("enforcing: shells are killed", "container", c.String())
		}
		state[c.ID] = tr
		if err := errors.Join(errs...); err != nil {
			log.Warn("exec tracer: track container", "container", c.String(), "err", err)
		}
	}
	remove := func(id string) {
		tr, ok := state[id]
		if !ok {
			return
		}
		delete(state, id)
		errs := []error{t.UntrackCgroup(tr.cg)}
		if tr.killed {
			errs = append(errs, t.StopKillingIn(tr.cg))
		}
		if tr.mnt != 0 {
			errs = append(errs, t.UntrackMntNS(tr.mnt))
		}
		if err := errors.Join(errs...); err != nil {
			log.Warn("exec tracer: untrack container", "id", id, "err", err)
		}
	}
	resync := func() {
		running := map[string]bool{}
		for _, c := range reg.List() {
			if c.State == runtime.StateRunning {
				running[c.ID] = true
				apply(c)
			}
		}
		for id := range state {
			if !running[id] {
				remove(id)
			}
		}
	}
	if opts.Resync <= 0 {
		opts.Resync = 10 * time.Second
	}
	tick := time.NewTicker(opts.Resync)
	defer tick.Stop()
	resync()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			resync()
		case ev, ok := <-events:
			if !ok {
				return fmt.Errorf("follow registry: subscription closed")
			}
			if ev.Container == nil {
				continue
			}
			switch ev.Type {
			case runtime.EventStart:
				apply(ev.Container)
			case runtime.EventStop, runtime.EventRemove:
				remove(ev.Container.ID)
			}
		}
	}
}

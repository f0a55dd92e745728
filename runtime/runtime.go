// Package runtime is the node's registry of containers: who each container is
// (Kubernetes identity from the CRI labels), what it runs (image, OCI spec
// facts), where its files are (snapshot layers, upper dir, merged view) and
// how the kernel knows it (init PID, cgroup id, mount-namespace inode), with
// lookups by each of those keys and a stream of start, stop, remove and exec
// events. runtime/containerd implements it over containerd's API.
//
// Containers handed out are read-only snapshots: the registry replaces an
// entry when it changes and never mutates one that was returned.
package runtime

import (
	"fmt"
	"time"
)

// Kind says whether a container is a pod sandbox or a workload container.
type Kind int

const (
	// KindUnknown: the container carries no CRI kind label (not created by the CRI plugin).
	KindUnknown Kind = iota
	// KindSandbox is a pod sandbox ("pause") container.
	KindSandbox
	// KindContainer is a workload container of a pod.
	KindContainer
)

func (k Kind) String() string {
	switch k {
	case KindSandbox:
		return "sandbox"
	case KindContainer:
		return "container"
	}
	return "unknown"
}

// State is the state of a container's task (its init process).
type State int

const (
	// StateUnknown: the state could not be read.
	StateUnknown State = iota
	// StateCreated: no task, or a task created but not started.
	StateCreated
	// StateRunning: the init process runs.
	StateRunning
	// StatePaused: the task is frozen.
	StatePaused
	// StateStopped: the init process exited.
	StateStopped
)

func (s State) String() string {
	switch s {
	case StateCreated:
		return "created"
	case StateRunning:
		return "running"
	case StatePaused:
		return "paused"
	case StateStopped:
		return "stopped"
	}
	return "unknown"
}

// Pod is the Kubernetes identity of a container, from its CRI labels. Fields
// whose label is missing or malformed are empty (and a warning says why).
type Pod struct {
	Name      string // io.kubernetes.pod.name
	Namespace string // io.kubernetes.pod.namespace
	UID       string // io.kubernetes.pod.uid
}

// Spec holds the OCI runtime spec facts the scanners need. Environment values
// are never kept: they are where secrets live.
type Spec struct {
	UID, GID       uint32
	AdditionalGIDs []uint32
	// Privileged is true when the container has CAP_SYS_ADMIN in its bounding
	// set and no masked /proc paths: what a Kubernetes privileged container
	// gets (the spec has no explicit flag).
	Privileged bool
	// Capabilities are the effective and bounding sets, e.g. "CAP_NET_RAW".
	CapEffective, CapBounding []string
	ReadOnlyRootfs            bool
	NoNewPrivileges           bool
	Args                      []string
	EnvNames                  []string
	// Annotations of the spec are not kept; CgroupsPath is the spec's value.
	CgroupsPath string
}

// Layer is one read-only image layer of a container's root filesystem.
type Layer struct {
	// Dir is the layer's directory on the host (under the host root).
	Dir string
	// Key identifies the layer's content and ancestry stably (the snapshot's
	// chain id, "sha256:…"): use it as a cache key. Empty when unknown.
	Key string
}

// Rootfs describes where a container's files are.
type Rootfs struct {
	// Snapshotter is containerd's snapshotter name (e.g. "overlayfs").
	Snapshotter string
	// Layers are the image layers, topmost first (overlay lowerdir order).
	Layers []Layer
	// Upper is the container's writable layer (overlay upperdir): what
	// changed since start. Empty when unknown.
	Upper string
	// Merged is the container's view of its root, /proc/<pid>/root under the
	// host root, while the container runs; empty otherwise.
	Merged string
	// LayersUnknown is set when the snapshotter's mounts are not overlay
	// (native, devmapper, …) or could not be read: only Merged can be used,
	// and per-layer caching must be off. LayersReason says why.
	LayersUnknown bool
	LayersReason  string
}

// Container is one entry of the registry.
type Container struct {
	ID        string // containerd container id (= CRI container or sandbox id)
	Namespace string // containerd namespace, e.g. "k8s.io"
	Kind      Kind
	// SandboxID is the pod sandbox's id (the container's own for a sandbox).
	SandboxID     string
	Pod           Pod
	ContainerName string // io.kubernetes.container.name (empty for sandboxes)
	Labels        map[string]string

	Image       string // image reference as stored by containerd
	ImageDigest string // digest of the image's manifest or index, "sha256:…"

	State    State
	ExitCode uint32 // when State is StateStopped
	// PID is the init process's PID in the host PID namespace (0 without a running task).
	PID int
	// CgroupPath is the cgroup v2 path of the init process (relative to the
	// unified hierarchy's root, with a leading slash), CgroupID its inode:
	// what bpf_get_current_cgroup_id() returns. Zero when not running or when
	// the host has no cgroup v2 hierarchy.
	CgroupPath string
	CgroupID   uint64
	// MountNS is the inode of the init process's mount namespace.
	MountNS uint64

	Spec   Spec
	Rootfs Rootfs

	CreatedAt time.Time
	// Warnings lists problems with the container's metadata (malformed
	// labels, unreadable spec, …); the fields concerned are left empty.
	Warnings []string
}

// String names the container for logs: namespace/pod/container (id prefix).
func (c *Container) String() string {
	id := c.ID
	if len(id) > 12 {
		id = id[:12]
	}
	if c.Pod.Name == "" {
		return id
	}
	name := c.ContainerName
	if c.Kind == KindSandbox {
		name = "(sandbox)"
	}
	return fmt.Sprintf("%s/%s/%s (%s)", c.Pod.Namespace, c.Pod.Name, name, id)
}

// EventType is the kind of a registry event.
type EventType int

const (
	// EventStart: a container's task started (the container is running).
	EventStart EventType = iota + 1
	// EventStop: a container's init process exited (ExitCode is set).
	EventStop
	// EventRemove: a container was deleted and left the registry.
	EventRemove
	// EventExec: a process was exec'd into a container through the runtime
	// (kubectl exec, crictl exec): exec-added followed by exec-started.
	EventExec
	// EventExecFailed: an exec through the runtime never started (exec-added
	// with no exec-started in time): typically `kubectl exec … sh` against a
	// distroless container, which runc refuses before execve.
	EventExecFailed
)

func (t EventType) String() string {
	switch t {
	case EventStart:
		return "start"
	case EventStop:
		return "stop"
	case EventRemove:
		return "remove"
	case EventExec:
		return "exec"
	case EventExecFailed:
		return "exec_failed"
	}
	return "unknown"
}

// Exec describes an exec through the runtime.
type Exec struct {
	ID  string // the runtime's exec id
	PID int    // host PID of the exec'd process (EventExec; 0 if unknown)
	// Path and Error come from runc's log for a failed exec, when it names
	// them (e.g. "/bin/sh", "stat /bin/sh: no such file or directory").
	Path  string
	Error string
	// Message is runc's whole error message, or why none is known.
	Message string
}

// Event is delivered to subscribers.
type Event struct {
	Type EventType
	Time time.Time
	// Container is the entry at the time of the event (for EventRemove, the
	// last one known).
	Container *Container
	ExitCode  uint32 // EventStop
	Exec      *Exec  // EventExec, EventExecFailed
}

// Registry is what the agent uses; runtime/containerd implements it.
type Registry interface {
	// Get returns the container with this id.
	Get(id string) (*Container, bool)
	// ByCgroupID returns the running container whose init cgroup has this id.
	ByCgroupID(id uint64) (*Container, bool)
	// ByMountNS returns a running container with this mount-namespace inode.
	ByMountNS(ino uint64) (*Container, bool)
	// ByPID returns the container a host process belongs to: by init PID,
	// else through /proc/<pid>/cgroup, else its mount namespace.
	ByPID(pid int) (*Container, bool)
	// List returns all containers, sorted by id.
	List() []*Container
	// Subscribe delivers events on a channel with room for buffer events;
	// when a subscriber falls that far behind, events for it are dropped
	// (and counted) rather than stalling the registry. cancel ends it.
	Subscribe(buffer int) (events <-chan Event, cancel func())
	// Ready returns nil when the registry is connected and synced, else why not.
	Ready() error
}

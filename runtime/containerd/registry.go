// Package containerd implements runtime.Registry over containerd's API
// (github.com/containerd/containerd/v2/client), for containerd 1.6, 1.7 and
// 2.x: it lists containers, follows the event stream, reconnects with
// backoff and resyncs after a containerd restart, and turns the runtime's
// exec events into EventExec / EventExecFailed (with runc's error from the
// task bundle's log.json).
package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	eventtypes "github.com/containerd/containerd/api/events"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/runc/options"
	tasktypes "github.com/containerd/containerd/api/types/task"
	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/loupe-dev/loupe/runtime"
)

// Config configures the registry. Zero values take the defaults.
type Config struct {
	// Socket is containerd's socket on the host (default /run/containerd/containerd.sock).
	Socket string
	// Namespace is the containerd namespace to follow (default "k8s.io").
	Namespace string
	// HostRoot prefixes every host path: socket, /proc, /sys/fs/cgroup,
	// snapshot and bundle dirs (default "/"; "/host" in a pod).
	HostRoot string
	// StateDir is containerd's state directory on the host, where task
	// bundles and runc's log.json live (default /run/containerd).
	StateDir string
	// ExecStartTimeout is how long an exec may stay added without starting
	// before it is reported as failed (default 2s).
	ExecStartTimeout time.Duration
	// ResyncInterval is how often a full resync runs besides the one after
	// each (re)connect (default 5m).
	ResyncInterval time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay (defaults 100ms, 10s).
	MinBackoff, MaxBackoff time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics, when set, are updated (see NewMetrics).
	Metrics *Metrics
}

func (c *Config) defaults() {
	if c.Socket == "" {
		c.Socket = "/run/containerd/containerd.sock"
	}
	if c.Namespace == "" {
		c.Namespace = "k8s.io"
	}
	if c.HostRoot == "" {
		c.HostRoot = "/"
	}
	if c.StateDir == "" {
		c.StateDir = "/run/containerd"
	}
	if c.ExecStartTimeout <= 0 {
		c.ExecStartTimeout = 2 * time.Second
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = 5 * time.Minute
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// ErrNotSynced is what Ready returns before the first sync.
var ErrNotSynced = errors.New("containerd registry: not synced yet")

// errVanished marks a container deleted while it was being inspected.
var errVanished = errors.New("container vanished")

// maxSpec caps the size of an OCI spec the registry decodes.
const maxSpec = 4 << 20

// Registry is the containerd-backed runtime.Registry. Create it with New and
// run it with Run; lookups and Subscribe work at once (empty until synced).
type Registry struct {
	*runtime.Store
	cfg  Config
	log  *slog.Logger
	sock string

	v2root string // cgroup v2 hierarchy, "" if none
	v2err  error

	readyMu  sync.Mutex
	readyErr error
	readyCh  chan struct{} // closed at the first successful sync

	versionMu sync.Mutex
	versions  map[string]entryVersion // what each entry was built from

	parentMu sync.Mutex
	parents  map[string]string // snapshotter + "\x00" + committed snapshot name → parent

	execMu   sync.Mutex
	pending  map[string]*time.Timer // container id + "\x00" + exec id
	timeouts chan execTimeout

	// beforeInspect, when set (tests), is called in a full sync between
	// listing the containers and inspecting each.
	beforeInspect func(id string)
}

var _ runtime.Registry = (*Registry)(nil)

// New returns a registry for cfg; it does not connect yet.
func New(cfg Config) *Registry {
	cfg.defaults()
	r := &Registry{
		Store:    runtime.NewStore(cfg.HostRoot),
		cfg:      cfg,
		log:      cfg.Logger.With("component", "runtime"),
		sock:     filepath.Join(cfg.HostRoot, cfg.Socket),
		readyErr: ErrNotSynced,
		readyCh:  make(chan struct{}),
		parents:  map[string]string{},
		pending:  map[string]*time.Timer{},
		versions: map[string]entryVersion{},
		timeouts: make(chan execTimeout, 256),
	}
	r.v2root, r.v2err = runtime.CgroupV2Root(cfg.HostRoot)
	if m := cfg.Metrics; m != nil {
		r.Store.OnDrop = m.dropped.Inc
	}
	return r
}

// Ready implements runtime.Registry: nil while connected and synced, else
// the reason (e.g. the socket is missing), for the agent's /readyz.
func (r *Registry) Ready() error {
	r.readyMu.Lock()
	defer r.readyMu.Unlock()
	return r.readyErr
}

// WaitReady waits for the first successful sync.
func (r *Registry) WaitReady(ctx context.Context) error {
	select {
	case <-r.readyCh:
		return nil
	case <-ctx.Done():
		if err := r.Ready(); err != nil {
			return fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return ctx.Err()
	}
}

func (r *Registry) setReady(err error) {
	r.readyMu.Lock()
	defer r.readyMu.Unlock()
	r.readyErr = err
	if err == nil {
		select {
		case <-r.readyCh:
		default:
			close(r.readyCh)
		}
	}
	if m := r.cfg.Metrics; m != nil {
		if err == nil {
			m.ready.Set(1)
		} else {
			m.ready.Set(0)
		}
	}
}

// Run connects, syncs and follows containerd until ctx ends, reconnecting
// with backoff (and resyncing) whenever the connection or stream breaks. It
// returns nil when ctx is cancelled.
func (r *Registry) Run(ctx context.Context) error {
	backoff := r.cfg.MinBackoff
	for {
		start := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			r.stopPendingExecs()
			return nil
		}
		r.setReady(fmt.Errorf("containerd registry: %w", err))
		if m := r.cfg.Metrics; m != nil {
			m.reconnects.Inc()
		}
		if time.Since(start) > 30*time.Second {
			backoff = r.cfg.MinBackoff
		}
		r.log.Warn("containerd connection lost, retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			r.stopPendingExecs()
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, r.cfg.MaxBackoff)
	}
}

// session is one connection: connect, subscribe, sync, then follow events
// until the stream breaks or ctx ends.
func (r *Registry) session(ctx context.Context) error {
	if _, err := os.Stat(r.sock); err != nil {
		return fmt.Errorf("containerd socket: %w", err)
	}
	client, err := ctrd.New(r.sock, ctrd.WithDefaultNamespace(r.cfg.Namespace), ctrd.WithTimeout(2*time.Second))
	if err != nil {
		return fmt.Errorf("connect containerd at %s: %w", r.sock, err)
	}
	defer client.Close()
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	v, err := client.Version(vctx)
	cancel()
	if err != nil {
		return fmt.Errorf("connect containerd at %s: %w", r.sock, err)
	}
	sctx, cancelSub := context.WithCancel(ctx)
	defer cancelSub()
	evs, errs := client.Subscribe(sctx, fmt.Sprintf("namespace==%q", r.cfg.Namespace))
	if err := r.sync(ctx, client); err != nil {
		return err
	}
	r.setReady(nil)
	r.log.Info("containerd registry synced", "socket", r.sock, "containerd", v.Version, "containers", r.Len())

	// A resync shortly after connecting catches what happened between the
	// list and the subscription taking effect; later ones heal any drift.
	resync := time.NewTimer(time.Second)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			if err == nil {
				err = errors.New("event stream closed")
			}
			return fmt.Errorf("containerd event stream: %w", err)
		case env := <-evs:
			if env != nil {
				r.handle(ctx, client, env)
			}
		case to := <-r.timeouts:
			for drained := 0; drained < 10000; drained++ {
				select {
				case env := <-evs:
					if env != nil {
						r.handle(ctx, client, env)
					}
					continue
				default:
				}
				break
			}
			r.execTimedOut(to.cid, to.eid, to.at)
		case <-resync.C:
			if err := r.sync(ctx, client); err != nil {
				return err
			}
			resync.Reset(r.cfg.ResyncInterval)
		}
	}
}

// sync lists everything and brings the store in line, emitting the events
// the differences imply.
func (r *Registry) sync(ctx context.Context, client *ctrd.Client) error {
	start := time.Now()
	infos, err := client.ContainerService().List(ctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	tl, err := client.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		return fmt.Errorf("list tasks: %w", errgrpc.ToNative(err))
	}
	procs := map[string]*tasktypes.Process{}
	for _, p := range tl.Tasks {
		procs[p.ID] = p
	}
	imgs, err := client.ImageService().List(ctx)
	if err != nil {
		return fmt.Errorf("list images: %w", err)
	}
	digests := map[string]string{}
	for _, im := range imgs {
		digests[im.Name] = im.Target.Digest.String()
	}

	built := make([]*runtime.Container, len(infos))
	errsOut := make([]error, len(infos))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := range infos {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			info := infos[i]
			if r.beforeInspect != nil {
				r.beforeInspect(info.ID)
			}
			v := versionOf(info, procs[info.ID], digests[info.Image])
			if prev, ok := r.Get(info.ID); ok && r.unchanged(info.ID, v) {
				built[i] = prev // nothing changed since it was built: no need to inspect again
				return
			}
			built[i], errsOut[i] = r.build(ctx, client, info, procs[info.ID], digests[info.Image])
		}(i)
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, c := range built {
		if err := errsOut[i]; err != nil {
			if errors.Is(err, errVanished) {
				r.log.Debug("container vanished during sync", "id", infos[i].ID)
				continue
			}
			return fmt.Errorf("inspect container %s: %w", infos[i].ID, err)
		}
		seen[c.ID] = true
		r.setVersion(c.ID, versionOf(infos[i], procs[c.ID], digests[infos[i].Image]))
		r.put(c)
	}
	for _, c := range r.List() {
		if !seen[c.ID] {
			r.remove(c.ID)
		}
	}
	if m := r.cfg.Metrics; m != nil {
		m.syncDuration.Observe(time.Since(start).Seconds())
	}
	return nil
}

// put stores c and publishes the start/stop its state change implies.
func (r *Registry) put(c *runtime.Container) {
	if c.State == runtime.StateCreated {
		// A task deleted after its exit (as the CRI plugin does) leaves a
		// container without a task: it stays stopped, not created.
		if old, ok := r.Get(c.ID); ok && (old.State == runtime.StateStopped || live(old.State)) {
			c.State, c.ExitCode = runtime.StateStopped, old.ExitCode
		}
	}
	prev := r.Store.Put(c)
	if m := r.cfg.Metrics; m != nil {
		m.containers.Set(float64(r.Len()))
	}
	was := prev != nil && live(prev.State)
	switch is := live(c.State); {
	case is && !was:
		r.publish(runtime.Event{Type: runtime.EventStart, Container: c})
	case !is && was:
		r.publish(runtime.Event{Type: runtime.EventStop, Container: c, ExitCode: c.ExitCode})
	}
}

func (r *Registry) remove(id string) {
	r.versionMu.Lock()
	delete(r.versions, id)
	r.versionMu.Unlock()
	c := r.Store.Delete(id)
	if c == nil {
		return
	}
	if m := r.cfg.Metrics; m != nil {
		m.containers.Set(float64(r.Len()))
	}
	if live(c.State) {
		r.publish(runtime.Event{Type: runtime.EventStop, Container: c})
	}
	r.publish(runtime.Event{Type: runtime.EventRemove, Container: c})
}

// entryVersion is what an entry was built from: when none of it changed, a
// resync reuses the entry instead of inspecting the container again.
type entryVersion struct {
	updated time.Time
	pid     uint32
	status  tasktypes.Status
	exit    uint32
	digest  string
}

func versionOf(info containers.Container, p *tasktypes.Process, digest string) entryVersion {
	v := entryVersion{updated: info.UpdatedAt, digest: digest}
	if p != nil {
		v.pid, v.status, v.exit = p.Pid, p.Status, p.ExitStatus
	}
	return v
}

func (r *Registry) setVersion(id string, v entryVersion) {
	r.versionMu.Lock()
	r.versions[id] = v
	r.versionMu.Unlock()
}

func (r *Registry) unchanged(id string, v entryVersion) bool {
	r.versionMu.Lock()
	defer r.versionMu.Unlock()
	old, ok := r.versions[id]
	return ok && old == v
}

func live(s runtime.State) bool { return s == runtime.StateRunning || s == runtime.StatePaused }

func (r *Registry) publish(ev runtime.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if m := r.cfg.Metrics; m != nil {
		m.events.WithLabelValues(ev.Type.String()).Inc()
	}
	r.Store.Publish(ev)
}

// handle applies one containerd event.
func (r *Registry) handle(ctx context.Context, client *ctrd.Client, env *events.Envelope) {
	if env.Namespace != r.cfg.Namespace || env.Event == nil {
		return
	}
	if !strings.HasPrefix(env.Topic, "/tasks/") && !strings.HasPrefix(env.Topic, "/containers/") {
		return
	}
	v, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		r.log.Debug("undecodable containerd event", "topic", env.Topic, "err", err)
		return
	}
	switch e := v.(type) {
	case *eventtypes.ContainerCreate:
		r.refresh(ctx, client, e.ID)
	case *eventtypes.ContainerUpdate:
		r.refresh(ctx, client, e.ID)
	case *eventtypes.ContainerDelete:
		r.remove(e.ID)
	case *eventtypes.TaskCreate:
		r.refresh(ctx, client, e.ContainerID)
	case *eventtypes.TaskStart:
		r.refresh(ctx, client, e.ContainerID)
	case *eventtypes.TaskExit:
		if e.ID == e.ContainerID || e.ID == "" {
			r.refresh(ctx, client, e.ContainerID)
		}
	case *eventtypes.TaskDelete:
		if e.ID == "" || e.ID == e.ContainerID {
			r.refresh(ctx, client, e.ContainerID)
		}
	case *eventtypes.TaskPaused:
		r.refresh(ctx, client, e.ContainerID)
	case *eventtypes.TaskResumed:
		r.refresh(ctx, client, e.ContainerID)
	case *eventtypes.TaskExecAdded:
		r.execAdded(e.ContainerID, e.ExecID, env.Timestamp)
	case *eventtypes.TaskExecStarted:
		r.execStarted(ctx, client, e.ContainerID, e.ExecID, int(e.Pid), env.Timestamp)
	}
}

// refresh re-inspects one container.
func (r *Registry) refresh(ctx context.Context, client *ctrd.Client, id string) {
	info, err := client.ContainerService().Get(ctx, id)
	if errdefs.IsNotFound(err) {
		r.remove(id)
		return
	}
	if err != nil {
		r.warn(ctx, "inspect container", id, err)
		return
	}
	var proc *tasktypes.Process
	if tr, err := client.TaskService().Get(ctx, &tasks.GetRequest{ContainerID: id}); err == nil {
		proc = tr.Process
	} else if err = errgrpc.ToNative(err); !errdefs.IsNotFound(err) {
		// Keep the entry as it was rather than guess the task's state; a
		// broken connection ends the session and the resync fixes it.
		r.warn(ctx, "inspect task", id, err)
		return
	}
	digest := ""
	if im, err := client.ImageService().Get(ctx, info.Image); err == nil {
		digest = im.Target.Digest.String()
	}
	c, err := r.build(ctx, client, info, proc, digest)
	if err == nil {
		r.setVersion(id, versionOf(info, proc, digest))
	}
	if errors.Is(err, errVanished) {
		r.remove(id)
		return
	}
	if err != nil {
		r.warn(ctx, "inspect container", id, err)
		return
	}
	r.put(c)
}

// warn logs a failed inspection, unless the registry is shutting down.
func (r *Registry) warn(ctx context.Context, what, id string, err error) {
	if ctx.Err() == nil {
		r.log.Warn(what, "id", id, "err", err)
	}
}

// build assembles a registry entry. It returns errVanished when the
// container or its snapshot disappeared meanwhile; other problems become
// warnings on the entry.
func (r *Registry) build(ctx context.Context, client *ctrd.Client, info containers.Container, proc *tasktypes.Process, digest string) (*runtime.Container, error) {
	c := &runtime.Container{
		ID: info.ID, Namespace: r.cfg.Namespace, Labels: info.Labels,
		Image: info.Image, ImageDigest: digest, CreatedAt: info.CreatedAt,
		State: runtime.StateCreated,
	}
	identity(c, info.Labels)
	var spec *specs.Spec
	switch {
	case info.Spec == nil:
		c.Warnings = append(c.Warnings, "no OCI spec")
	case len(info.Spec.GetValue()) > maxSpec:
		c.Warnings = append(c.Warnings, fmt.Sprintf("OCI spec of %d bytes not read", len(info.Spec.GetValue())))
	default:
		spec = &specs.Spec{}
		if err := json.Unmarshal(info.Spec.GetValue(), spec); err != nil {
			c.Warnings = append(c.Warnings, "OCI spec: "+err.Error())
			spec = nil
		}
	}
	c.Spec = specFacts(spec)
	switch {
	case c.Kind == runtime.KindSandbox:
		c.SandboxID = c.ID
	case spec != nil:
		c.SandboxID = spec.Annotations[annSandboxID]
	}

	if proc != nil {
		switch proc.Status {
		case tasktypes.Status_RUNNING:
			c.State = runtime.StateRunning
		case tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
			c.State = runtime.StatePaused
		case tasktypes.Status_STOPPED:
			c.State = runtime.StateStopped
			c.ExitCode = proc.ExitStatus
		case tasktypes.Status_CREATED:
			c.State = runtime.StateCreated
		default:
			c.State = runtime.StateUnknown
		}
		if live(c.State) && proc.Pid > 0 {
			r.processFacts(c, int(proc.Pid))
		}
	}

	rf, err := r.rootfs(ctx, client, info.Snapshotter, info.SnapshotKey)
	if errors.Is(err, errVanished) {
		if _, gerr := client.ContainerService().Get(ctx, info.ID); errdefs.IsNotFound(gerr) {
			return nil, errVanished
		}
	}
	if err != nil {
		rf.LayersUnknown = true
		rf.LayersReason = err.Error()
	}
	rf.Merged = c.Rootfs.Merged
	c.Rootfs = rf
	return c, nil
}

// processFacts fills PID, cgroup and mount namespace from /proc.
func (r *Registry) processFacts(c *runtime.Container, pid int) {
	c.PID = pid
	c.Rootfs.Merged = runtime.ProcRoot(r.cfg.HostRoot, pid)
	if ino, err := runtime.ProcMountNS(r.cfg.HostRoot, pid); err == nil {
		c.MountNS = ino
	} else {
		c.Warnings = append(c.Warnings, "mount namespace: "+err.Error())
	}
	if r.v2root == "" {
		c.Warnings = append(c.Warnings, "cgroup id: "+r.v2err.Error())
		return
	}
	path, err := runtime.ProcCgroupV2Path(r.cfg.HostRoot, pid)
	if err != nil && c.Spec.CgroupsPath != "" {
		// The process may be gone already; the spec still says where it was.
		path, err = SystemdCgroupPath(c.Spec.CgroupsPath)
	}
	if err != nil {
		c.Warnings = append(c.Warnings, "cgroup path: "+err.Error())
		return
	}
	c.CgroupPath = path
	if id, err := runtime.CgroupID(r.v2root, path); err == nil {
		c.CgroupID = id
	} else {
		c.Warnings = append(c.Warnings, "cgroup id: "+err.Error())
	}
}

// rootfs resolves the snapshot mounts into layers and upper dir.
func (r *Registry) rootfs(ctx context.Context, client *ctrd.Client, snapshotter, key string) (runtime.Rootfs, error) {
	rf := runtime.Rootfs{Snapshotter: snapshotter}
	if snapshotter == "" || key == "" {
		return rf, errors.New("container has no snapshot")
	}
	sn := client.SnapshotService(snapshotter)
	mounts, err := sn.Mounts(ctx, key)
	if errdefs.IsNotFound(err) {
		return rf, errVanished
	}
	if err != nil {
		return rf, fmt.Errorf("snapshot mounts: %w", err)
	}
	chain, chainErr := r.parentChain(ctx, client, snapshotter, key)
	if len(mounts) != 1 {
		return rf, fmt.Errorf("snapshotter %s: %d mounts, want 1", snapshotter, len(mounts))
	}
	m := mounts[0]
	host := func(p string) string { return filepath.Join(r.cfg.HostRoot, p) }
	switch {
	case isOverlay(m):
		ov, err := ParseOverlayOptions(m.Options)
		if err != nil {
			return rf, fmt.Errorf("snapshotter %s: %w", snapshotter, err)
		}
		for i, d := range ov.Lower {
			l := runtime.Layer{Dir: host(d)}
			if chainErr == nil && len(chain) == len(ov.Lower) {
				l.Key = chain[i]
			}
			rf.Layers = append(rf.Layers, l)
		}
		if ov.Upper != "" {
			rf.Upper = host(ov.Upper)
		}
		return rf, nil
	case m.Type == "bind" && chainErr == nil && len(chain) == 0:
		// A snapshot without parents is a plain directory: all of it is upper.
		rf.Upper = host(m.Source)
		return rf, nil
	default:
		return rf, fmt.Errorf("snapshotter %s: %s mount is not overlay; image layers unknown", snapshotter, m.Type)
	}
}

func isOverlay(m mount.Mount) bool {
	return m.Type == "overlay" || strings.HasSuffix(m.Type, "overlayfs")
}

// parentChain returns the names of key's ancestors, nearest first (the
// chain ids of the image layers, topmost first). Committed snapshots never
// change, so their parents are cached.
func (r *Registry) parentChain(ctx context.Context, client *ctrd.Client, snapshotter, key string) ([]string, error) {
	sn := client.SnapshotService(snapshotter)
	info, err := sn.Stat(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("stat snapshot: %w", err)
	}
	var chain []string
	for p := info.Parent; p != ""; {
		if len(chain) > maxLowerDirs {
			return nil, errors.New("snapshot chain too long")
		}
		chain = append(chain, p)
		ck := snapshotter + "\x00" + p
		r.parentMu.Lock()
		next, ok := r.parents[ck]
		r.parentMu.Unlock()
		if !ok {
			pi, err := sn.Stat(ctx, p)
			if err != nil {
				return nil, fmt.Errorf("stat snapshot: %w", err)
			}
			next = pi.Parent
			r.parentMu.Lock()
			r.parents[ck] = next
			r.parentMu.Unlock()
		}
		p = next
	}
	return chain, nil
}

type execTimeout struct {
	cid, eid string
	at       time.Time
}

// execAdded starts the clock for an exec: without exec-started in time it
// is reported as failed.
func (r *Registry) execAdded(cid, eid string, at time.Time) {
	key := cid + "\x00" + eid
	r.execMu.Lock()
	defer r.execMu.Unlock()
	if t, ok := r.pending[key]; ok {
		t.Stop()
	}
	r.pending[key] = time.AfterFunc(r.cfg.ExecStartTimeout, func() {
		// Hand the verdict to the event loop, which first handles the events
		// containerd already sent (an exec-started may be queued behind a
		// slow resync); without a running loop, decide here.
		select {
		case r.timeouts <- execTimeout{cid, eid, at}:
		default:
			r.execTimedOut(cid, eid, at)
		}
	})
}

func (r *Registry) execStarted(ctx context.Context, client *ctrd.Client, cid, eid string, pid int, at time.Time) {
	key := cid + "\x00" + eid
	r.execMu.Lock()
	if t, ok := r.pending[key]; ok {
		t.Stop()
		delete(r.pending, key)
	}
	r.execMu.Unlock()
	if pid == 0 {
		pid = ExecPID(ctx, client, cid, eid)
	}
	c, ok := r.Get(cid)
	if !ok {
		c = &runtime.Container{ID: cid, Namespace: r.cfg.Namespace}
	}
	r.publish(runtime.Event{Type: runtime.EventExec, Time: at, Container: c, Exec: &runtime.Exec{ID: eid, PID: pid}})
}

func (r *Registry) execTimedOut(cid, eid string, at time.Time) {
	key := cid + "\x00" + eid
	r.execMu.Lock()
	_, ok := r.pending[key]
	delete(r.pending, key)
	r.execMu.Unlock()
	if !ok {
		return
	}
	ex := &runtime.Exec{ID: eid}
	logPath := filepath.Join(r.cfg.HostRoot, r.cfg.StateDir, "io.containerd.runtime.v2.task", r.cfg.Namespace, cid, "log.json")
	// runc logs with second precision.
	since := at.Truncate(time.Second).Add(-time.Second)
	if data, err := readTail(logPath, maxRuncLog); err != nil {
		ex.Message = fmt.Sprintf("no exec-started within %s; runc log: %v", r.cfg.ExecStartTimeout, err)
	} else if e, ok := LastRuncError(data, since); ok {
		ex.Message = e.Msg
		ex.Path, ex.Error, _ = ParseExecError(e.Msg)
	} else {
		ex.Message = fmt.Sprintf("no exec-started within %s; no runc error logged", r.cfg.ExecStartTimeout)
	}
	c, ok := r.Get(cid)
	if !ok {
		c = &runtime.Container{ID: cid, Namespace: r.cfg.Namespace}
	}
	r.publish(runtime.Event{Type: runtime.EventExecFailed, Time: at, Container: c, Exec: ex})
}

func (r *Registry) stopPendingExecs() {
	r.execMu.Lock()
	defer r.execMu.Unlock()
	for k, t := range r.pending {
		t.Stop()
		delete(r.pending, k)
	}
}

// ExecPID maps an exec id to its host PID through task.Pids (the runc
// shim's ProcessDetails); 0 when it is not (or no longer) running.
func ExecPID(ctx context.Context, client *ctrd.Client, cid, eid string) int {
	resp, err := client.TaskService().ListPids(ctx, &tasks.ListPidsRequest{ContainerID: cid}) // any error: unknown
	if err != nil {
		return 0
	}
	for _, p := range resp.Processes {
		if p.Info == nil || !strings.HasSuffix(p.Info.GetTypeUrl(), "ProcessDetails") {
			continue
		}
		var d options.ProcessDetails
		if proto.Unmarshal(p.Info.GetValue(), &d) == nil && d.ExecID == eid {
			return int(p.Pid)
		}
	}
	return 0
}

// readTail reads at most limit bytes from the end of a file.
func readTail(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	off := max(fi.Size()-limit, 0)
	buf := make([]byte, fi.Size()-off)
	n, err := f.ReadAt(buf, off)
	if err != nil && n == 0 && len(buf) > 0 {
		return nil, err
	}
	return buf[:n], nil
}

package classify

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/loupe-dev/loupe/bpf"
	"github.com/loupe-dev/loupe/runtime"
)

type fakeRegistry struct {
	runtime.Registry // unused methods panic
	list             []*runtime.Container
	events           chan runtime.Event
}

func (f *fakeRegistry) List() []*runtime.Container { return f.list }
func (f *fakeRegistry) Subscribe(int) (<-chan runtime.Event, func()) {
	return f.events, func() {}
}

type fakeTracker struct {
	mu  sync.Mutex
	ops []string
}

func (f *fakeTracker) rec(op string, v uint64) error {
	f.mu.Lock()
	f.ops = append(f.ops, op+":"+itoa(v))
	f.mu.Unlock()
	return nil
}
func itoa(v uint64) string                          { return strconv.FormatUint(v, 10) }
func (f *fakeTracker) TrackCgroup(v uint64) error   { return f.rec("cg+", v) }
func (f *fakeTracker) UntrackCgroup(v uint64) error { return f.rec("cg-", v) }
func (f *fakeTracker) TrackMntNS(v uint64) error    { return f.rec("ns+", v) }
func (f *fakeTracker) UntrackMntNS(v uint64) error  { return f.rec("ns-", v) }
func (f *fakeTracker) KillShellsIn(v uint64) error  { return f.rec("kill+", v) }
func (f *fakeTracker) StopKillingIn(v uint64) error { return f.rec("kill-", v) }
func (f *fakeTracker) snapshot() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops)
}

func TestFollow(t *testing.T) {
	running := func(id string, cg, ns uint64, podNS, pod string) *runtime.Container {
		return &runtime.Container{ID: id, Kind: runtime.KindContainer, State: runtime.StateRunning, CgroupID: cg, MountNS: ns,
			Pod: runtime.Pod{Name: pod, Namespace: podNS}, Image: "img"}
	}
	reg := &fakeRegistry{
		list: []*runtime.Container{
			running("a", 1, 2, "payments", "api-1"),
			running("host-ns", 3, 9, "kube-system", "x"),                                           // shares the host mount ns
			{ID: "stopped", Kind: runtime.KindContainer, State: runtime.StateStopped, CgroupID: 5}, // not tracked
		},
		events: make(chan runtime.Event, 4),
	}
	tr := &fakeTracker{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Follow(ctx, reg, tr, FollowOptions{HostMntNS: 9, Policy: &bpf.KillPolicy{Selectors: []bpf.KillSelector{{Namespace: "payments"}}}})
	}()
	reg.events <- runtime.Event{Type: runtime.EventStart, Container: running("b", 6, 7, "web", "w")}
	reg.events <- runtime.Event{Type: runtime.EventStop, Container: &runtime.Container{ID: "a"}}
	want := []string{"cg+:1", "ns+:2", "kill+:1", "cg+:3", "cg+:6", "ns+:7", "cg-:1", "kill-:1", "ns-:2"}
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(tr.snapshot(), want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := tr.snapshot(); !slices.Equal(got, want) {
		t.Errorf("ops %v, want %v", got, want)
	}
}

func TestContainerOf(t *testing.T) {
	c := ContainerOf(&runtime.Container{ID: "id1", ContainerName: "app", Pod: runtime.Pod{Name: "p", Namespace: "n", UID: "u"},
		Image: "img:1", ImageDigest: "sha256:ab", Namespace: "k8s.io", Rootfs: runtime.Rootfs{Upper: "/up"}})
	r := c.Ref
	if r.Id != "id1" || r.Name != "app" || r.Pod != "p" || r.Namespace != "n" || r.PodUid != "u" || r.Image != "img:1" ||
		r.ImageDigest != "sha256:ab" || r.RuntimeNamespace != "k8s.io" || c.UpperDir != "/up" || c.Sandbox {
		t.Errorf("%+v %+v", r, c)
	}
	sb := ContainerOf(&runtime.Container{ID: "sb1", Kind: runtime.KindSandbox, PID: 4242, Pod: runtime.Pod{Name: "p", Namespace: "n"}})
	if !sb.Sandbox || sb.InitPID != 4242 || sb.Ref.Name != "" {
		t.Errorf("sandbox: %+v", sb)
	}
}

package agent

import (
	"context"
	"sync"
	"time"

	"github.com/loupe-dev/loupe/bpf"
)

// execCache remembers recent exec events by PID so that an exec reported by
// the container runtime (which knows the PID but not the argv) can be joined
// with what the tracer saw. Bounded in entries and age.
type execCache struct {
	mu      sync.Mutex
	max     int
	ttl     time.Duration
	byPID   map[uint32]*bpf.Event
	order   []uint32
	arrived chan struct{} // closed and replaced on every put
}

func newExecCache(max int, ttl time.Duration) *execCache {
	return &execCache{max: max, ttl: ttl, byPID: map[uint32]*bpf.Event{}, arrived: make(chan struct{})}
}

func (c *execCache) put(ev *bpf.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byPID[ev.PID]; !ok {
		c.order = append(c.order, ev.PID)
	}
	c.byPID[ev.PID] = ev
	for len(c.order) > c.max || len(c.order) > 0 && time.Since(c.byPID[c.order[0]].Time) > c.ttl {
		delete(c.byPID, c.order[0])
		c.order = c.order[1:]
	}
	close(c.arrived)
	c.arrived = make(chan struct{})
}

// wait returns the exec event of pid, waiting up to d for it to arrive.
func (c *execCache) wait(ctx context.Context, pid uint32, d time.Duration) (*bpf.Event, bool) {
	if pid == 0 {
		return nil, false
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ev, ok := c.byPID[pid]
		arrived := c.arrived
		c.mu.Unlock()
		if ok {
			return ev, true
		}
		select {
		case <-arrived:
		case <-deadline.C:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
}

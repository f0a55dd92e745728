package runtime

import (
	"sort"
	"sync"
	"sync/atomic"
)

// Store is an in-memory Registry index: the containerd implementation keeps
// its entries here. It is safe for concurrent use; lookups take a read lock.
type Store struct {
	hostRoot string

	mu       sync.RWMutex
	byID     map[string]*Container
	byCgroup map[uint64]*Container
	byMntNS  map[uint64]*Container
	byPID    map[int]*Container
	byPath   map[string]*Container // cgroup path → container

	subMu   sync.Mutex
	subs    map[int]chan Event
	nextSub int
	dropped atomic.Uint64
	// OnDrop, when set before use, is called for every event dropped for a slow subscriber.
	OnDrop func()
}

// NewStore returns an empty store; hostRoot prefixes /proc for ByPID.
func NewStore(hostRoot string) *Store {
	return &Store{
		hostRoot: hostRoot,
		byID:     map[string]*Container{}, byCgroup: map[uint64]*Container{},
		byMntNS: map[uint64]*Container{}, byPID: map[int]*Container{}, byPath: map[string]*Container{},
		subs: map[int]chan Event{},
	}
}

// Put adds or replaces the entry with c.ID and returns the previous one.
func (s *Store) Put(c *Container) (prev *Container) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev = s.byID[c.ID]
	if prev != nil {
		s.unindex(prev)
	}
	s.byID[c.ID] = c
	s.index(c)
	return prev
}

// Delete removes the entry with id and returns it (nil if there was none).
func (s *Store) Delete(id string) *Container {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.byID[id]
	if c != nil {
		s.unindex(c)
		delete(s.byID, id)
	}
	return c
}

func (s *Store) index(c *Container) {
	if c.State != StateRunning && c.State != StatePaused {
		return
	}
	if c.CgroupID != 0 {
		s.byCgroup[c.CgroupID] = c
	}
	if c.CgroupPath != "" {
		s.byPath[c.CgroupPath] = c
	}
	if c.MountNS != 0 {
		s.byMntNS[c.MountNS] = c
	}
	if c.PID > 0 {
		s.byPID[c.PID] = c
	}
}

func (s *Store) unindex(c *Container) {
	if s.byCgroup[c.CgroupID] == c {
		delete(s.byCgroup, c.CgroupID)
	}
	if s.byPath[c.CgroupPath] == c {
		delete(s.byPath, c.CgroupPath)
	}
	if s.byMntNS[c.MountNS] == c {
		delete(s.byMntNS, c.MountNS)
	}
	if s.byPID[c.PID] == c {
		delete(s.byPID, c.PID)
	}
}

// Get implements Registry.
func (s *Store) Get(id string) (*Container, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.byID[id]
	return c, ok
}

// ByCgroupID implements Registry.
func (s *Store) ByCgroupID(id uint64) (*Container, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.byCgroup[id]
	return c, ok
}

// ByMountNS implements Registry.
func (s *Store) ByMountNS(ino uint64) (*Container, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.byMntNS[ino]
	return c, ok
}

// ByPID implements Registry: the init PID, else the process's cgroup v2
// path (read from <host root>/proc/<pid>/cgroup; processes of a container
// live in its cgroup or below it), else its mount namespace.
func (s *Store) ByPID(pid int) (*Container, bool) {
	if pid <= 0 {
		return nil, false
	}
	s.mu.RLock()
	c, ok := s.byPID[pid]
	s.mu.RUnlock()
	if ok {
		return c, true
	}
	if p, err := ProcCgroupV2Path(s.hostRoot, pid); err == nil && p != "" {
		s.mu.RLock()
		for q := p; q != "/" && q != ""; q = parentPath(q) {
			if c, ok := s.byPath[q]; ok {
				s.mu.RUnlock()
				return c, true
			}
		}
		s.mu.RUnlock()
	}
	if ino, err := ProcMountNS(s.hostRoot, pid); err == nil {
		return s.ByMountNS(ino)
	}
	return nil, false
}

func parentPath(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "/"
}

// List implements Registry.
func (s *Store) List() []*Container {
	s.mu.RLock()
	out := make([]*Container, 0, len(s.byID))
	for _, c := range s.byID {
		out = append(out, c)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Len is the number of entries.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byID)
}

// Subscribe implements Registry.
func (s *Store) Subscribe(buffer int) (<-chan Event, func()) {
	if buffer < 1 {
		buffer = 1
	}
	ch := make(chan Event, buffer)
	s.subMu.Lock()
	id := s.nextSub
	s.nextSub++
	s.subs[id] = ch
	s.subMu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.subMu.Lock()
			delete(s.subs, id)
			s.subMu.Unlock()
			close(ch)
		})
	}
}

// Publish delivers ev to every subscriber without blocking.
func (s *Store) Publish(ev Event) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for _, ch := range s.subs {
		select {
		case ch <- ev:
		default:
			s.dropped.Add(1)
			if s.OnDrop != nil {
				s.OnDrop()
			}
		}
	}
}

// Dropped is the number of events dropped for slow subscribers.
func (s *Store) Dropped() uint64 { return s.dropped.Load() }

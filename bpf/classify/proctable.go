package classify

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// MaxAncestors is the length of the parent chain put in findings.
const MaxAncestors = 5

// ProcTable maps host PIDs to their parent, command name and executable. It
// is seeded from /proc, kept current from exec and exit events, and falls
// back to reading /proc for a PID it has not seen.
type ProcTable struct {
	procRoot string
	max      int

	mu    sync.Mutex
	procs map[uint32]procEntry
}

type procEntry struct {
	ppid     uint32
	comm     string
	filename string
}

// NewProcTable returns an empty table reading procRoot (usually "/proc", or
// "/host/proc" in a pod) on misses. It holds at most max entries (0: 65536).
func NewProcTable(procRoot string, max int) *ProcTable {
	if max <= 0 {
		max = 65536
	}
	return &ProcTable{procRoot: procRoot, max: max, procs: make(map[uint32]procEntry)}
}

// Seed adds every process currently in procRoot and returns how many it read.
func (p *ProcTable) Seed() (int, error) {
	ents, err := os.ReadDir(p.procRoot)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		pid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil {
			continue
		}
		if ent, ok := p.read(uint32(pid)); ok {
			p.put(uint32(pid), ent)
			n++
		}
	}
	return n, nil
}

// read parses <procRoot>/<pid>/stat and the exe link. Bad content yields false.
func (p *ProcTable) read(pid uint32) (procEntry, bool) {
	dir := filepath.Join(p.procRoot, strconv.FormatUint(uint64(pid), 10))
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil || len(b) > 4096 {
		return procEntry{}, false
	}
	// pid (comm) state ppid ...; comm may contain spaces and parentheses.
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return procEntry{}, false
	}
	fields := bytes.Fields(b[closing+1:])
	if len(fields) < 2 {
		return procEntry{}, false
	}
	ppid, err := strconv.ParseUint(string(fields[1]), 10, 32)
	if err != nil {
		return procEntry{}, false
	}
	exe, _ := os.Readlink(filepath.Join(dir, "exe"))
	return procEntry{ppid: uint32(ppid), comm: string(b[open+1 : closing]), filename: exe}, true
}

func (p *ProcTable) put(pid uint32, e procEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.procs[pid]; !ok && len(p.procs) >= p.max {
		// Evict an arbitrary tenth; exits normally keep the table small.
		drop := p.max / 10
		for k := range p.procs {
			if drop <= 0 {
				break
			}
			delete(p.procs, k)
			drop--
		}
	}
	p.procs[pid] = e
}

// Exec records that pid (child of ppid) now runs filename as comm.
func (p *ProcTable) Exec(pid, ppid uint32, comm, filename string) {
	p.put(pid, procEntry{ppid: ppid, comm: comm, filename: filename})
}

// Exit forgets pid.
func (p *ProcTable) Exit(pid uint32) {
	p.mu.Lock()
	delete(p.procs, pid)
	p.mu.Unlock()
}

func (p *ProcTable) lookup(pid uint32) (procEntry, bool) {
	p.mu.Lock()
	e, ok := p.procs[pid]
	p.mu.Unlock()
	if ok {
		return e, true
	}
	if e, ok = p.read(pid); ok {
		p.put(pid, e)
	}
	return e, ok
}

// Ancestors returns the chain starting at pid (pid itself first), at most n
// entries, stopping at PID 0 or an unknown process.
func (p *ProcTable) Ancestors(pid uint32, n int) []*loupev1.Ancestor {
	var out []*loupev1.Ancestor
	for pid != 0 && len(out) < n {
		e, ok := p.lookup(pid)
		if !ok {
			break
		}
		out = append(out, &loupev1.Ancestor{Pid: int32(pid), Comm: e.comm, Filename: e.filename})
		if e.ppid == pid {
			break
		}
		pid = e.ppid
	}
	return out
}

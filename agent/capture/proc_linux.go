package capture

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loupe-dev/loupe/runtime"
)

// Read caps for /proc files (their contents are controlled by the container).
const (
	maxCmdline = 128 << 10
	maxEnviron = 128 << 10
	maxStatus  = 64 << 10
	maxMaps    = 8 << 20
	maxNet     = 16 << 20
	clockTicks = 100 // USER_HZ on every Linux architecture Loupe runs on
)

// processes reads every process of the container's cgroup from the host's /proc.
func (col *collector) processes() (*Processes, error) {
	ps := &Processes{Cgroup: col.c.CgroupPath, Processes: []Process{}, Sockets: []Socket{}}
	pids, err := col.pids()
	if err != nil {
		col.warnf("list the container's processes: %v", err)
	}
	if len(pids) > MaxProcesses {
		col.warnf("%d processes: only the first %d captured", len(pids), MaxProcesses)
		pids = pids[:MaxProcesses]
	}
	proc := filepath.Join(col.env.HostRoot, "proc")
	boot := bootTime(proc)
	// The host's network namespace: PID 1's, or the agent's own (a DaemonSet
	// runs with hostNetwork; PID 1's may be unreadable in a nested setup).
	hostNet := map[uint64]bool{}
	for _, p := range []string{filepath.Join(proc, "1", "ns", "net"), "/proc/self/ns/net"} {
		if ino, err := nsInode(p); err == nil {
			hostNet[ino] = true
		}
	}
	netns := map[uint64]int{}  // netns inode → a pid in it
	held := map[uint64][]int{} // socket inode → pids
	for _, pid := range pids {
		if err := col.ctx.Err(); err != nil {
			return nil, err
		}
		p := col.process(proc, pid, boot)
		if p.Gone {
			col.m.Counts.ProcessesGone++
		}
		if p.NetNS != 0 {
			if _, ok := netns[p.NetNS]; !ok {
				netns[p.NetNS] = pid
			}
		}
		for _, fd := range p.FDs {
			if fd.SocketInode != 0 {
				held[fd.SocketInode] = append(held[fd.SocketInode], pid)
			}
		}
		ps.Processes = append(ps.Processes, p)
	}
	for ns, pid := range netns {
		ps.HostNetwork = ps.HostNetwork || hostNet[ns]
		for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
			b, err := readCapped(filepath.Join(proc, strconv.Itoa(pid), "net", proto), maxNet)
			if err != nil {
				col.warnf("read /proc/%d/net/%s: %v", pid, proto, err)
				continue
			}
			for _, s := range parseNetTable(proto, b, ns) {
				s.PIDs = held[s.Inode]
				if hostNet[ns] && len(s.PIDs) == 0 {
					continue // the host's network: only the container's own sockets
				}
				if len(ps.Sockets) >= MaxSockets {
					col.warnf("more than %d sockets: the rest is not listed", MaxSockets)
					break
				}
				ps.Sockets = append(ps.Sockets, s)
			}
		}
	}
	sort.Slice(ps.Sockets, func(i, j int) bool {
		a, b := ps.Sockets[i], ps.Sockets[j]
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		return a.Local < b.Local
	})
	col.m.Counts.Processes = len(ps.Processes)
	col.m.Counts.Sockets = len(ps.Sockets)
	return ps, nil
}

// pids lists the container's processes: its cgroup v2 directory and the
// cgroups below it, else the init PID alone.
func (col *collector) pids() ([]int, error) {
	var pids []int
	if v2, err := runtime.CgroupV2Root(col.env.HostRoot); err == nil && col.c.CgroupPath != "" && col.c.CgroupPath != "/" {
		dir := filepath.Join(v2, filepath.Clean("/"+col.c.CgroupPath))
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := readCapped(filepath.Join(p, "cgroup.procs"), 4<<20)
			if err != nil {
				return nil
			}
			for _, l := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(l); err == nil && n > 0 {
					pids = append(pids, n)
				}
			}
			return nil
		})
		if err == nil && len(pids) > 0 {
			sort.Ints(pids)
			return pids, nil
		}
	}
	if col.c.PID > 0 {
		return []int{col.c.PID}, fmt.Errorf("no cgroup v2 directory with processes for the container; init PID %d only", col.c.PID)
	}
	return nil, errors.New("the container has no running task")
}

// process reads one process. A process that exits half-way is marked gone
// with what was read until then; that is not an error.
func (col *collector) process(proc string, pid int, boot time.Time) Process {
	dir := filepath.Join(proc, strconv.Itoa(pid))
	p := Process{PID: pid, Cmdline: []string{}, FDs: []FD{}, Maps: []Map{}}
	gone := func(err error) bool {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			p.Gone = true
			return true
		}
		return false
	}
	fail := func(what string, err error) {
		if !gone(err) && len(p.Errors) < 32 {
			p.Errors = append(p.Errors, fmt.Sprintf("%s: %v", what, err))
		}
	}
	stat, err := readCapped(filepath.Join(dir, "stat"), 4096)
	if err != nil {
		fail("stat", err)
		return p
	}
	var start uint64
	if p.Comm, p.State, p.PPID, start, err = parseStat(string(stat)); err != nil {
		fail("stat", err)
	}
	p.StartTime = boot.Add(time.Duration(start) * time.Second / clockTicks).UTC()
	if b, err := readCapped(filepath.Join(dir, "status"), maxStatus); err != nil {
		fail("status", err)
	} else {
		p.parseStatus(b)
	}
	if b, err := readCapped(filepath.Join(dir, "cmdline"), maxCmdline); err != nil {
		fail("cmdline", err)
	} else {
		p.Cmdline = splitNul(b)
	}
	if t, err := os.Readlink(filepath.Join(dir, "cwd")); err != nil {
		fail("cwd", err)
	} else {
		p.Cwd = t
	}
	p.NetNS, _ = nsInode(filepath.Join(dir, "ns", "net"))
	p.MntNS, _ = nsInode(filepath.Join(dir, "ns", "mnt"))
	col.exe(dir, &p, fail)
	col.fds(dir, &p, fail)
	if b, err := readCapped(filepath.Join(dir, "maps"), maxMaps); err != nil {
		fail("maps", err)
	} else {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 0, 8192), 1<<16)
		for sc.Scan() {
			m, ok := parseMapLine(sc.Text())
			if !ok {
				continue
			}
			if m.AnonExec {
				p.AnonExec++
			}
			if len(p.Maps) >= MaxMaps {
				p.MapsTruncated = true
				continue
			}
			p.Maps = append(p.Maps, m)
		}
	}
	if col.req.Options.IncludeEnv {
		if b, err := readCapped(filepath.Join(dir, "environ"), maxEnviron); err != nil {
			fail("environ", err)
		} else {
			p.Env = splitNul(b)
		}
	}
	// Still there? A PID reused during the capture would show another start time.
	if b, err := readCapped(filepath.Join(dir, "stat"), 4096); err != nil {
		gone(err)
	} else if _, _, _, s2, err := parseStat(string(b)); err == nil && s2 != start {
		p.Gone = true
	}
	return p
}

// exe hashes the executable as mapped: /proc/PID/exe opens the very file
// the process runs, even when it was deleted or replaced.
func (col *collector) exe(dir string, p *Process, fail func(string, error)) {
	t, err := os.Readlink(filepath.Join(dir, "exe"))
	if err != nil {
		fail("exe", err)
		return
	}
	p.Exe = t
	if s, ok := strings.CutSuffix(t, " (deleted)"); ok {
		p.Exe, p.ExeDeleted = s, true
	}
	fd, err := unix.Open(filepath.Join(dir, "exe"), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		p.ExeError = err.Error()
		fail("open exe", err)
		return
	}
	f := os.NewFile(uintptr(fd), "exe")
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		p.ExeError = "not a regular file"
		return
	}
	p.ExeSize = st.Size
	if st.Size > MaxHashBytes {
		p.ExeError = fmt.Sprintf("larger than %d bytes: not hashed", int64(MaxHashBytes))
		return
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, io.LimitReader(f, st.Size), col.hbuf); err != nil {
		p.ExeError = err.Error()
		fail("read exe", err)
		return
	}
	p.ExeSHA256 = hex.EncodeToString(h.Sum(nil))
}

func (col *collector) fds(dir string, p *Process, fail func(string, error)) {
	d, err := os.Open(filepath.Join(dir, "fd"))
	if err != nil {
		fail("fd", err)
		return
	}
	defer d.Close()
	names, err := d.Readdirnames(MaxFDs + 1)
	if err != nil && !errors.Is(err, io.EOF) {
		fail("fd", err)
	}
	if len(names) > MaxFDs {
		names, p.FDsTruncated = names[:MaxFDs], true
	}
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		t, err := os.Readlink(filepath.Join(dir, "fd", n))
		if err != nil {
			continue // closed meanwhile
		}
		e := FD{FD: fd, Target: t}
		if s, ok := strings.CutPrefix(t, "socket:["); ok {
			e.SocketInode, _ = strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
		}
		p.FDs = append(p.FDs, e)
	}
	sort.Slice(p.FDs, func(i, j int) bool { return p.FDs[i].FD < p.FDs[j].FD })
}

func (p *Process) parseStatus(b []byte) {
	ids := func(v string) []uint32 {
		var out []uint32
		for _, f := range strings.Fields(v) {
			if n, err := strconv.ParseUint(f, 10, 32); err == nil {
				out = append(out, uint32(n))
			}
		}
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Uid":
			p.UID = ids(v)
		case "Gid":
			p.GID = ids(v)
		case "Groups":
			p.Groups = ids(v)
		case "CapEff":
			p.CapEff = v
		case "CapPrm":
			p.CapPrm = v
		case "CapBnd":
			p.CapBnd = v
		case "CapInh":
			p.CapInh = v
		case "CapAmb":
			p.CapAmb = v
		case "NoNewPrivs":
			p.NoNewPrivs = v == "1"
		case "Seccomp":
			p.Seccomp = map[string]string{"0": "disabled", "1": "strict", "2": "filter"}[v]
		case "Threads":
			p.Threads, _ = strconv.Atoi(v)
		case "NSpid":
			if f := strings.Fields(v); len(f) > 0 {
				p.NSPID, _ = strconv.Atoi(f[len(f)-1])
			}
		}
	}
}

func splitNul(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return []string{}
	}
	return strings.Split(string(b), "\x00")
}

func nsInode(p string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

func bootTime(proc string) time.Time {
	b, err := readCapped(filepath.Join(proc, "stat"), 1<<20)
	if err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "btime "); ok {
				if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
					return time.Unix(n, 0)
				}
			}
		}
	}
	return time.Time{}
}

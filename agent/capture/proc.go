package capture

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// MaxProcesses bounds the processes captured; MaxFDs, MaxMaps and MaxSockets
// the records kept per process or network namespace.
const (
	MaxProcesses = 4096
	MaxFDs       = 4096
	MaxMaps      = 8192
	MaxSockets   = 16384
)

// Processes is processes.json.
type Processes struct {
	// Cgroup is the container's cgroup v2 path the PIDs were read from.
	Cgroup    string    `json:"cgroup"`
	Processes []Process `json:"processes"`
	// Sockets of the container's network namespaces; for a pod on the host's
	// network only the sockets its processes hold.
	Sockets []Socket `json:"sockets"`
	// HostNetwork: the container shares the host's network namespace, so
	// only the sockets its processes hold are listed.
	HostNetwork bool `json:"host_network,omitempty"`
}

// Process is one process of the container, as the host's /proc shows it.
type Process struct {
	PID  int `json:"pid"`
	PPID int `json:"ppid"`
	// NSPID is the PID inside the container's PID namespace.
	NSPID int `json:"ns_pid,omitempty"`
	// Gone: the process exited during the capture; fields read before are kept.
	Gone       bool     `json:"gone,omitempty"`
	Comm       string   `json:"comm"`
	State      string   `json:"state,omitempty"`
	Cmdline    []string `json:"cmdline"`
	Exe        string   `json:"exe"`
	ExeDeleted bool     `json:"exe_deleted,omitempty"`
	// ExeSHA256 is the sha256 of the executable as mapped (/proc/PID/exe).
	ExeSHA256    string `json:"exe_sha256,omitempty"`
	ExeSize      int64  `json:"exe_size,omitempty"`
	ExeFromUpper bool   `json:"exe_from_upper"`
	ExeError     string `json:"exe_error,omitempty"`
	Cwd          string `json:"cwd,omitempty"`
	// UID and GID: real, effective, saved, filesystem.
	UID           []uint32  `json:"uid"`
	GID           []uint32  `json:"gid"`
	Groups        []uint32  `json:"groups,omitempty"`
	CapEff        string    `json:"cap_eff"`
	CapPrm        string    `json:"cap_prm"`
	CapBnd        string    `json:"cap_bnd"`
	CapInh        string    `json:"cap_inh,omitempty"`
	CapAmb        string    `json:"cap_amb,omitempty"`
	NoNewPrivs    bool      `json:"no_new_privs,omitempty"`
	Seccomp       string    `json:"seccomp,omitempty"`
	Threads       int       `json:"threads"`
	StartTime     time.Time `json:"start_time"`
	NetNS         uint64    `json:"net_ns,omitempty"`
	MntNS         uint64    `json:"mnt_ns,omitempty"`
	FDs           []FD      `json:"fds"`
	FDsTruncated  bool      `json:"fds_truncated,omitempty"`
	Maps          []Map     `json:"maps"`
	MapsTruncated bool      `json:"maps_truncated,omitempty"`
	// AnonExec counts anonymous (or memfd/deleted) executable mappings.
	AnonExec int `json:"anon_exec_maps"`
	// Env is the environment, only with --env.
	Env []string `json:"env,omitempty"`
	// Errors reading parts of the process (other than it being gone).
	Errors []string `json:"errors,omitempty"`
}

// FD is an open file descriptor.
type FD struct {
	FD     int    `json:"fd"`
	Target string `json:"target"`
	// SocketInode is set for sockets ("socket:[N]").
	SocketInode uint64 `json:"socket_inode,omitempty"`
}

// Map is one line of /proc/PID/maps.
type Map struct {
	Start  string `json:"start"`
	End    string `json:"end"`
	Perms  string `json:"perms"`
	Offset string `json:"offset"`
	Inode  uint64 `json:"inode,omitempty"`
	Path   string `json:"path,omitempty"`
	// AnonExec: executable and not backed by a file on disk (anonymous,
	// memfd, deleted file): where injected code lives.
	AnonExec bool `json:"anon_exec,omitempty"`
}

// Socket is one TCP or UDP socket.
type Socket struct {
	Proto  string `json:"proto"` // tcp, tcp6, udp, udp6
	Local  string `json:"local"`
	Remote string `json:"remote"`
	State  string `json:"state"`
	UID    uint32 `json:"uid"`
	Inode  uint64 `json:"inode"`
	NetNS  uint64 `json:"net_ns"`
	PIDs   []int  `json:"pids,omitempty"`
}

var tcpStates = map[string]string{
	"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT",
	"07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING", "0C": "NEW_SYN_RECV",
}

// parseNetTable parses /proc/net/{tcp,tcp6,udp,udp6}.
func parseNetTable(proto string, data []byte, netns uint64) []Socket {
	var out []Socket
	for i, line := range strings.Split(string(data), "\n") {
		if i == 0 || line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		local, err1 := hexAddr(f[1])
		remote, err2 := hexAddr(f[2])
		if err1 != nil || err2 != nil {
			continue
		}
		st := tcpStates[strings.ToUpper(f[3])]
		if strings.HasPrefix(proto, "udp") {
			st = map[string]string{"07": "UNCONN", "01": "ESTABLISHED"}[strings.ToUpper(f[3])]
		}
		if st == "" {
			st = f[3]
		}
		uid, _ := strconv.ParseUint(f[7], 10, 32)
		ino, _ := strconv.ParseUint(f[9], 10, 64)
		out = append(out, Socket{Proto: proto, Local: local, Remote: remote, State: st, UID: uint32(uid), Inode: ino, NetNS: netns})
	}
	return out
}

// hexAddr decodes "0100007F:1F90" (IPv4) or the 32-hex-digit IPv6 form,
// both in the kernel's host (little-endian) 32-bit word order.
func hexAddr(s string) (string, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return "", fmt.Errorf("bad address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return "", err
	}
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return "", fmt.Errorf("bad address %q", s)
	}
	for i := 0; i+4 <= len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a.Unmap(), uint16(port)).String(), nil
}

// parseMapLine parses one /proc/PID/maps line.
func parseMapLine(line string) (Map, bool) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return Map{}, false
	}
	start, end, ok := strings.Cut(f[0], "-")
	if !ok {
		return Map{}, false
	}
	ino, _ := strconv.ParseUint(f[4], 10, 64)
	m := Map{Start: start, End: end, Perms: f[1], Offset: f[2], Inode: ino}
	if len(f) > 5 {
		// The path is the rest of the line after five fields and padding.
		idx := 0
		for n := 0; n < 5; n++ {
			idx += strings.Index(line[idx:], f[n]) + len(f[n])
		}
		m.Path = strings.TrimLeft(line[idx:], " ")
	}
	if strings.Contains(m.Perms, "x") {
		switch {
		case m.Path == "", m.Path == "[heap]", m.Path == "[stack]", strings.HasPrefix(m.Path, "/memfd:"),
			strings.HasSuffix(m.Path, " (deleted)"):
			m.AnonExec = true
		}
	}
	return m, true
}

// parseStat returns ppid, state and starttime (clock ticks) from /proc/PID/stat.
func parseStat(data string) (comm string, state string, ppid int, start uint64, err error) {
	i, j := strings.IndexByte(data, '('), strings.LastIndexByte(data, ')')
	if i < 0 || j < i {
		return "", "", 0, 0, fmt.Errorf("malformed stat")
	}
	comm = data[i+1 : j]
	f := strings.Fields(data[j+1:])
	if len(f) < 20 {
		return "", "", 0, 0, fmt.Errorf("malformed stat")
	}
	state = f[0]
	ppid, _ = strconv.Atoi(f[1])
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return comm, state, ppid, start, nil
}

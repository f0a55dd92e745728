package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// EventType says what a ring-buffer record reports.
type EventType uint8

// Event types, as written by exec.bpf.c (include/exec.h).
const (
	EventExec       EventType = 1 // a successful exec
	EventExecFailed EventType = 2 // a failed execve/execveat
	EventExit       EventType = 3 // a thread group exited
)

func (t EventType) String() string {
	switch t {
	case EventExec:
		return "exec"
	case EventExecFailed:
		return "exec_failed"
	case EventExit:
		return "exit"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Record flags, as written by exec.bpf.c (include/exec.h).
const (
	flagTTY           = 1 << 0
	flagArgvTruncated = 1 << 1
	flagNSEnter       = 1 << 2
	flagKilled        = 1 << 3
	flagUntracked     = 1 << 4
	flagPathTruncated = 1 << 5
	flagFileDeleted   = 1 << 6
	flagExecveat      = 1 << 7
)

// Bounds applied by the tracer.
const (
	// MaxArgs is the number of arguments kept per exec; more set ArgvTruncated.
	MaxArgs = 32
	// MaxArgvBytes is the number of argv bytes read per exec; more set ArgvTruncated.
	MaxArgvBytes = 4096
)

// Event is one exec, failed exec attempt or exit seen by the tracer. It is a
// domain type: the kernel record is decoded into it by DecodeEvent.
type Event struct {
	Type EventType
	// Time is when the kernel saw the event (wall clock).
	Time time.Time
	// PID is the thread-group id; TID the thread that called exec (it
	// differs from PID for an exec from a non-leader thread).
	PID, TID, PPID uint32
	UID, GID, EUID uint32
	// CgroupID is the cgroup v2 id of the task; MntNS its mount namespace inode.
	CgroupID, MntNS uint64
	// Comm is the task's command name after the exec (before, for failures).
	Comm string
	// Filename is the file name passed to exec (for a successful exec of a
	// script, the script; for execveat with AT_EMPTY_PATH, /dev/fd/N).
	Filename string
	// Interpreter is the interpreter the kernel ran for a script ("" otherwise).
	Interpreter string
	// Path is the executed file's path as resolved by the kernel, relative to
	// the process's root directory (inside the container); for a script,
	// the interpreter's. Empty for failed execs.
	Path string
	// Argv is the argument vector, at most MaxArgs entries.
	Argv []string
	// Argc is the argument count seen by the kernel (may exceed len(Argv)).
	Argc          int
	ArgvTruncated bool
	PathTruncated bool
	// Errno is the positive error number of a failed exec; for EventExit
	// the raw exit code (wait status).
	Errno int32
	// TTY is true when the process has a controlling terminal.
	TTY bool
	// NSEnter is true when the task is in a tracked mount namespace but not
	// in a tracked cgroup: a host process that entered a container (nsenter).
	NSEnter bool
	// Untracked is true when the task is neither in a tracked cgroup nor a
	// tracked mount namespace (reported because TraceHost is on).
	Untracked bool
	// Killed is true when enforcement sent SIGKILL to the new image.
	Killed bool
	// FileDeleted is true when the executed file had no links (memfd, deleted binary).
	FileDeleted bool
	// Execveat is true for a failed execveat (false: execve).
	Execveat bool
	// Dev and Ino identify the executed file (Dev in the user-space
	// encoding used by stat(2)); zero for failed execs.
	Dev, Ino uint64
}

// headerSize is sizeof(struct event) in include/exec.h.
const headerSize = 96

// ErrShortRecord is returned for a record shorter than its header says.
var ErrShortRecord = errors.New("short ring buffer record")

// DecodeEvent decodes one ring-buffer record into ev, without reflection.
// bootOffset converts the kernel's boot-time nanoseconds to wall-clock time.
// Bad input yields an error, never a panic.
func DecodeEvent(b []byte, bootOffset time.Time, ev *Event) error {
	if len(b) < headerSize {
		return fmt.Errorf("decode exec event: %w: %d bytes, header is %d", ErrShortRecord, len(b), headerSize)
	}
	le := binary.LittleEndian
	*ev = Event{
		Time:     bootOffset.Add(time.Duration(le.Uint64(b[0:8]))),
		CgroupID: le.Uint64(b[8:16]),
		MntNS:    le.Uint64(b[16:24]),
		Ino:      le.Uint64(b[24:32]),
		Dev:      kernelDev(le.Uint32(b[32:36])),
		PID:      le.Uint32(b[36:40]),
		TID:      le.Uint32(b[40:44]),
		PPID:     le.Uint32(b[44:48]),
		UID:      le.Uint32(b[48:52]),
		GID:      le.Uint32(b[52:56]),
		EUID:     le.Uint32(b[56:60]),
		Type:     EventType(b[64]),
	}
	ret := int32(le.Uint32(b[60:64]))
	flags := le.Uint16(b[66:68])
	fnLen := int(le.Uint16(b[68:70]))
	interpLen := int(le.Uint16(b[70:72]))
	pathLen := int(le.Uint16(b[72:74]))
	argvLen := int(le.Uint16(b[74:76]))
	ev.Argc = int(le.Uint16(b[76:78]))
	ev.Comm = cString(b[80:96])

	switch ev.Type {
	case EventExec, EventExecFailed:
		if ret < 0 {
			ev.Errno = -ret
		}
	case EventExit:
		ev.Errno = ret
	default:
		return fmt.Errorf("decode exec event: unknown type %d", b[64])
	}
	ev.TTY = flags&flagTTY != 0
	ev.ArgvTruncated = flags&flagArgvTruncated != 0
	ev.NSEnter = flags&flagNSEnter != 0
	ev.Killed = flags&flagKilled != 0
	ev.Untracked = flags&flagUntracked != 0
	ev.PathTruncated = flags&flagPathTruncated != 0
	ev.FileDeleted = flags&flagFileDeleted != 0
	ev.Execveat = flags&flagExecveat != 0

	data := b[headerSize:]
	if fnLen+interpLen+pathLen+argvLen > len(data) {
		return fmt.Errorf("decode exec event: %w: sections need %d bytes, record has %d",
			ErrShortRecord, fnLen+interpLen+pathLen+argvLen, len(data))
	}
	ev.Filename = cString(data[:fnLen])
	data = data[fnLen:]
	ev.Interpreter = cString(data[:interpLen])
	data = data[interpLen:]
	ev.Path = joinPath(data[:pathLen], ev.PathTruncated)
	data = data[pathLen:]
	ev.Argv, ev.ArgvTruncated = splitArgv(data[:argvLen], ev.ArgvTruncated)
	return nil
}

// kernelDev converts a kernel dev_t (major<<20 | minor) to the user-space
// encoding returned by stat(2) (glibc's makedev).
func kernelDev(d uint32) uint64 {
	major := uint64(d >> 20)
	minor := uint64(d & 0xfffff)
	return (major&0x00000fff)<<8 | (major&0xfffff000)<<32 | (minor & 0x000000ff) | (minor&0xffffff00)<<12
}

// cString returns b up to its first NUL.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// joinPath turns leaf-first NUL-terminated components into an absolute path.
func joinPath(b []byte, truncated bool) string {
	if len(b) == 0 {
		if truncated {
			return "…"
		}
		return ""
	}
	var comps []string
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		comps = append(comps, string(b[:i]))
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	var sb strings.Builder
	if truncated {
		sb.WriteString("…")
	}
	for i := len(comps) - 1; i >= 0; i-- {
		sb.WriteByte('/')
		sb.WriteString(comps[i])
	}
	return sb.String()
}

// splitArgv splits NUL-separated arguments, keeping at most MaxArgs.
func splitArgv(b []byte, truncated bool) ([]string, bool) {
	if len(b) == 0 {
		return nil, truncated
	}
	n := 0
	for _, c := range b {
		if c == 0 {
			n++
		}
	}
	if b[len(b)-1] != 0 {
		n++ // last argument cut without its NUL
	}
	if n > MaxArgs {
		n = MaxArgs
		truncated = true
	}
	argv := make([]string, 0, n)
	for len(b) > 0 && len(argv) < MaxArgs {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		argv = append(argv, string(b[:i]))
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	if len(b) > 0 {
		truncated = true
	}
	return argv, truncated
}

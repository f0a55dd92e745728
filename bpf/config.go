package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Config configures a Tracer.
type Config struct {
	// RingBufferBytes is the ring buffer size; rounded up to a power of two
	// of at least one page. 0 means DefaultRingBufferBytes.
	RingBufferBytes int
	// ExecFailures attaches the execve/execveat syscall tracepoints to report
	// failed exec attempts. They add ~45 ns to every syscall on the host.
	ExecFailures bool
	// TraceHost reports execs of tasks outside tracked cgroups and mount
	// namespaces too (Event.Untracked).
	TraceHost bool
	// Enforce enables killing shells in the cgroups given to KillShellsIn.
	Enforce bool
	// ShellNames are the command names treated as shells by enforcement;
	// nil means DefaultShellNames. Names longer than 15 bytes are ignored.
	ShellNames []string
	// Logger receives start-up and reader messages; nil means slog.Default().
	Logger *slog.Logger

	// NoBPFLoop loads the variant built for kernels without bpf_loop (before
	// 5.17) even where the kernel has it; NoGroupDead the exit program for
	// kernels whose sched_process_exit has no group_dead argument (before
	// 6.16). For tests of those paths on newer kernels, and as a workaround.
	NoBPFLoop, NoGroupDead bool
}

// Program variants, as reported by Mode.
const (
	// ObjectBPFLoop is the object built with bpf_loop (Linux 5.17+).
	ObjectBPFLoop = "bpf_loop"
	// ObjectBoundedLoop is the object built with bounded loops (5.8-5.16).
	ObjectBoundedLoop = "bounded_loop"
	// ExitGroupDead decides thread-group exit from the tracepoint's
	// group_dead argument (6.16+).
	ExitGroupDead = "group_dead"
	// ExitSignalLive decides it from the task's signal->live count.
	ExitSignalLive = "signal_live"
)

// Mode says which variant of each program is loaded, chosen by probing the
// running kernel: what the agent logs and exports as loupe_agent_tracer_info.
type Mode struct {
	// Object is ObjectBPFLoop or ObjectBoundedLoop.
	Object string
	// Exit is ExitGroupDead or ExitSignalLive.
	Exit string
	// ExecFailures is "on", "off" (not asked for) or "unavailable: <why>".
	ExecFailures string
	// Enforce is whether shells can be killed (Config.Enforce).
	Enforce bool
}

// String is the mode as one line of key=value pairs.
func (m Mode) String() string {
	return fmt.Sprintf("object=%s exit=%s exec_failures=%s enforce=%v", m.Object, m.Exit, m.ExecFailures, m.Enforce)
}

// Degraded says whether a part that was asked for is not running.
func (m Mode) Degraded() bool { return strings.HasPrefix(m.ExecFailures, "unavailable") }

// ProgramStats describes one loaded program.
type ProgramStats struct {
	// Name is the program's name in exec.bpf.c; Hook where it is attached.
	Name, Hook string
	// VerifiedInstructions is the number of instructions the verifier
	// processed (0 where the kernel does not report it, before 5.16).
	VerifiedInstructions int
	// LoadTime is how long loading (verification) took.
	LoadTime time.Duration
}

// DefaultRingBufferBytes is the ring buffer size when Config.RingBufferBytes is 0.
const DefaultRingBufferBytes = 8 << 20

// DefaultShellNames are the shells enforcement kills.
var DefaultShellNames = []string{"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "pdksh", "ksh93",
	"csh", "tcsh", "fish", "rbash", "yash", "hush", "msh", "lksh", "posh", "elvish", "nu", "xonsh"}

// MultiCallNames are multi-call binaries whose first argument names the applet.
var MultiCallNames = []string{"busybox", "toybox"}

// Sentinel errors.
var (
	// ErrUnsupported is returned where eBPF tracing is not available (not
	// Linux, or an architecture without compiled programs).
	ErrUnsupported = errors.New("exec tracer not supported on this platform")
	// ErrEnforcementOff is returned by KillShellsIn when Config.Enforce is false.
	ErrEnforcementOff = errors.New("enforcement is not enabled")
	// ErrClosed is returned by Read after Close.
	ErrClosed = errors.New("exec tracer closed")
)

func ringSize(n int) uint32 {
	if n <= 0 {
		n = DefaultRingBufferBytes
	}
	size := uint32(4096)
	for size < uint32(n) && size < 1<<30 {
		size <<= 1
	}
	return size
}

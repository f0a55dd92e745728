package bpf

import (
	"errors"
	"log/slog"
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

//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package bpf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Tracer is a loaded exec tracer. Its methods are safe for concurrent use;
// Read is meant to be called from one goroutine.
type Tracer struct {
	cfg        Config
	log        *slog.Logger
	objs       loaded
	links      []link.Link
	rd         *ringbuf.Reader
	hooks      []string
	bootOffset time.Time

	decodeErrs atomic.Uint64
	counts     [4]atomic.Uint64 // by EventType

	closeOnce sync.Once
	closed    atomic.Bool
}

// loaded holds the programs and maps actually loaded (the syscall
// tracepoint programs only in ExecFailures mode).
type loaded struct {
	HandleExec     *ebpf.Program `ebpf:"handle_exec"`
	HandleExit     *ebpf.Program `ebpf:"handle_exit"`
	Events         *ebpf.Map     `ebpf:"events"`
	Lost           *ebpf.Map     `ebpf:"lost"`
	TrackedCgroups *ebpf.Map     `ebpf:"tracked_cgroups"`
	TrackedMntns   *ebpf.Map     `ebpf:"tracked_mntns"`
	KillCgroups    *ebpf.Map     `ebpf:"kill_cgroups"`
	ShellNames     *ebpf.Map     `ebpf:"shell_names"`
	Inflight       *ebpf.Map     `ebpf:"inflight"`
	Scratch        *ebpf.Map     `ebpf:"scratch"`
}

type failurePrograms struct {
	EnterExecve   *ebpf.Program `ebpf:"tp_enter_execve"`
	EnterExecveat *ebpf.Program `ebpf:"tp_enter_execveat"`
	ExitExecve    *ebpf.Program `ebpf:"tp_exit_execve"`
	ExitExecveat  *ebpf.Program `ebpf:"tp_exit_execveat"`
}

// NewTracer removes the memlock limit, checks for BTF, probes the hooks,
// loads and attaches the programs and logs the chosen hook set.
func NewTracer(cfg Config) (_ *Tracer, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	t := &Tracer{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	if os.Geteuid() != 0 {
		log.Warn("exec tracer: not running as root; loading needs CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("load exec tracer: remove memlock limit (needs root or CAP_SYS_RESOURCE): %w", err)
	}
	if _, err := btf.LoadKernelSpec(); err != nil {
		return nil, fmt.Errorf("load exec tracer: kernel BTF is missing (needs CONFIG_DEBUG_INFO_BTF, /sys/kernel/btf/vmlinux): %w", err)
	}
	probes := probeHooks()

	spec, err := loadExec()
	if err != nil {
		return nil, fmt.Errorf("load exec tracer: %w", err)
	}
	spec.Maps[execMapEvents].MaxEntries = ringSize(cfg.RingBufferBytes)
	if err := spec.Variables[execVarTraceHost].Set(cfg.TraceHost); err != nil {
		return nil, fmt.Errorf("load exec tracer: set trace_host: %w", err)
	}
	if err := spec.Variables[execVarEnforce].Set(cfg.Enforce); err != nil {
		return nil, fmt.Errorf("load exec tracer: set enforce: %w", err)
	}
	if err := spec.Variables[execVarExecFailures].Set(cfg.ExecFailures); err != nil {
		return nil, fmt.Errorf("load exec tracer: set exec_failures: %w", err)
	}
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
		return nil, fmt.Errorf("load exec tracer: load programs (needs root with CAP_BPF and CAP_PERFMON%s): %w", lockdownHint(), err)
	}

	l, err := link.AttachTracing(link.TracingOptions{Program: t.objs.HandleExec})
	if err != nil {
		return nil, fmt.Errorf("load exec tracer: attach tp_btf/sched_process_exec: %w", err)
	}
	t.links = append(t.links, l)
	t.hooks = append(t.hooks, "tp_btf/sched_process_exec")
	l, err = link.AttachTracing(link.TracingOptions{Program: t.objs.HandleExit})
	if err != nil {
		return nil, fmt.Errorf("load exec tracer: attach tp_btf/sched_process_exit: %w", err)
	}
	t.links = append(t.links, l)
	t.hooks = append(t.hooks, "tp_btf/sched_process_exit")

	if cfg.ExecFailures {
		if err := ensureTracefs(); err != nil {
			return nil, fmt.Errorf("load exec tracer: %w", err)
		}
		var fp failurePrograms
		if err := spec.LoadAndAssign(&fp, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
			execMapEvents: t.objs.Events, execMapLost: t.objs.Lost,
			execMapTrackedCgroups: t.objs.TrackedCgroups, execMapTrackedMntns: t.objs.TrackedMntns,
			// shared with handle_exec, which clears the entry of a successful exec
			execMapInflight: t.objs.Inflight, execMapScratch: t.objs.Scratch,
		}}); err != nil {
			return nil, fmt.Errorf("load exec tracer: load syscall tracepoint programs: %w", err)
		}
		defer fp.close()
		for _, a := range []struct {
			name string
			prog *ebpf.Program
		}{
			{"sys_enter_execve", fp.EnterExecve}, {"sys_exit_execve", fp.ExitExecve},
			{"sys_enter_execveat", fp.EnterExecveat}, {"sys_exit_execveat", fp.ExitExecveat},
		} {
			l, err := link.Tracepoint("syscalls", a.name, a.prog, nil)
			if err != nil {
				return nil, fmt.Errorf("load exec tracer: attach tracepoint/syscalls/%s: %w", a.name, err)
			}
			t.links = append(t.links, l)
			t.hooks = append(t.hooks, "tracepoint/syscalls/"+a.name)
		}
	}
	if cfg.Enforce {
		t.hooks = append(t.hooks, "enforce:bpf_send_signal(SIGKILL)@sched_process_exec")
		if err := t.setShellNames(); err != nil {
			return nil, fmt.Errorf("load exec tracer: %w", err)
		}
	}

	t.rd, err = ringbuf.NewReader(t.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("load exec tracer: open ring buffer: %w", err)
	}
	t.bootOffset = bootTimeOffset()
	log.Info("exec tracer loaded", "hooks", t.hooks, "probes", probes,
		"ring_buffer_bytes", spec.Maps[execMapEvents].MaxEntries,
		"exec_failures", cfg.ExecFailures, "trace_host", cfg.TraceHost, "enforce", cfg.Enforce)
	return t, nil
}

func (f *failurePrograms) close() {
	for _, p := range []*ebpf.Program{f.EnterExecve, f.EnterExecveat, f.ExitExecve, f.ExitExecveat} {
		if p != nil {
			p.Close() // the links hold their own references
		}
	}
}

func (t *Tracer) setShellNames() error {
	names := t.cfg.ShellNames
	if names == nil {
		names = DefaultShellNames
	}
	put := func(name string, kind uint8) error {
		if len(name) == 0 || len(name) > 15 {
			return nil
		}
		var key [16]byte
		copy(key[:], name)
		if err := t.objs.ShellNames.Put(key, kind); err != nil {
			return fmt.Errorf("set shell name %q: %w", name, err)
		}
		return nil
	}
	for _, n := range names {
		if err := put(n, 1); err != nil {
			return err
		}
	}
	for _, n := range MultiCallNames {
		if err := put(n, 2); err != nil {
			return err
		}
	}
	return nil
}

// probeHooks reports which optional hook types this kernel permits. fentry
// and BPF LSM would allow cheaper failure tracing and in-kernel denial; where
// they are refused (as on kernels without them, or when the BPF LSM is not
// enabled) the tracer uses tracepoints and bpf_send_signal.
func probeHooks() map[string]string {
	res := map[string]string{}
	reason := func(err error) string {
		if errors.Is(err, unix.EPERM) {
			return "unavailable: operation not permitted"
		}
		return "unavailable: " + err.Error()
	}
	try := func(name string, spec *ebpf.ProgramSpec, attach func(*ebpf.Program) (link.Link, error)) {
		prog, err := ebpf.NewProgram(spec)
		if err != nil {
			res[name] = reason(err)
			return
		}
		defer prog.Close()
		l, err := attach(prog)
		if err != nil {
			res[name] = reason(err)
			return
		}
		l.Close()
		res[name] = "available"
	}
	insns := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	try("fentry", &ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry,
		AttachTo: "security_bprm_check", Instructions: insns, License: "GPL"},
		func(p *ebpf.Program) (link.Link, error) { return link.AttachTracing(link.TracingOptions{Program: p}) })
	try("lsm", &ebpf.ProgramSpec{Type: ebpf.LSM, AttachType: ebpf.AttachLSMMac,
		AttachTo: "bprm_check_security", Instructions: insns, License: "GPL"},
		func(p *ebpf.Program) (link.Link, error) { return link.AttachLSM(link.LSMOptions{Program: p}) })
	return res
}

// lockdownHint names an active kernel lockdown, which forbids reading kernel
// memory from BPF.
func lockdownHint() string {
	b, err := os.ReadFile("/sys/kernel/security/lockdown")
	if err != nil {
		return ", no kernel lockdown"
	}
	for _, mode := range []string{"integrity", "confidentiality"} {
		if strings.Contains(string(b), "["+mode+"]") {
			return "; kernel lockdown is in " + mode + " mode"
		}
	}
	return ""
}

// ensureTracefs mounts tracefs at /sys/kernel/tracing when no tracefs is
// mounted there or under debugfs (syscall tracepoints are found through it).
func ensureTracefs() error {
	for _, p := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount tracefs on /sys/kernel/tracing: %w", err)
	}
	return nil
}

// bootTimeOffset is the wall-clock time at which CLOCK_BOOTTIME was zero.
func bootTimeOffset() time.Time {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return now
	}
	return now.Add(-time.Duration(ts.Nano()))
}

// Hooks lists the attached hooks, e.g. "tp_btf/sched_process_exec".
func (t *Tracer) Hooks() []string { return append([]string(nil), t.hooks...) }

// TrackCgroup reports execs of tasks in the cgroup v2 with this id.
func (t *Tracer) TrackCgroup(id uint64) error {
	if err := t.objs.TrackedCgroups.Put(id, uint8(1)); err != nil {
		return fmt.Errorf("track cgroup %d: %w", id, err)
	}
	return nil
}

// UntrackCgroup stops reporting the cgroup; unknown ids are not an error.
func (t *Tracer) UntrackCgroup(id uint64) error {
	if err := t.objs.TrackedCgroups.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("untrack cgroup %d: %w", id, err)
	}
	return nil
}

// TrackMntNS reports execs in the mount namespace with this inode.
func (t *Tracer) TrackMntNS(ino uint64) error {
	if err := t.objs.TrackedMntns.Put(ino, uint8(1)); err != nil {
		return fmt.Errorf("track mount namespace %d: %w", ino, err)
	}
	return nil
}

// UntrackMntNS stops reporting the mount namespace.
func (t *Tracer) UntrackMntNS(ino uint64) error {
	if err := t.objs.TrackedMntns.Delete(ino); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("untrack mount namespace %d: %w", ino, err)
	}
	return nil
}

// KillShellsIn makes the kernel SIGKILL any shell exec'd in the cgroup,
// before the shell runs any of its own code (Event.Killed).
func (t *Tracer) KillShellsIn(cgroupID uint64) error {
	if !t.cfg.Enforce {
		return ErrEnforcementOff
	}
	if err := t.objs.KillCgroups.Put(cgroupID, uint8(1)); err != nil {
		return fmt.Errorf("enforce in cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// StopKillingIn removes the cgroup from enforcement.
func (t *Tracer) StopKillingIn(cgroupID uint64) error {
	if err := t.objs.KillCgroups.Delete(cgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("stop enforcing in cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// Lost returns the number of events lost so far: records the kernel could
// not write to a full ring buffer plus records that failed to decode.
func (t *Tracer) Lost() uint64 {
	var perCPU []uint64
	var n uint64
	if t.objs.Lost != nil {
		if err := t.objs.Lost.Lookup(uint32(0), &perCPU); err == nil {
			for _, v := range perCPU {
				n += v
			}
		}
	}
	return n + t.decodeErrs.Load()
}

// Count returns the number of events of this type read so far.
func (t *Tracer) Count(typ EventType) uint64 {
	if int(typ) >= len(t.counts) {
		return 0
	}
	return t.counts[typ].Load()
}

// Read decodes records and calls fn with each event until ctx is done or
// the tracer is closed; it returns nil then. Each Event is newly allocated
// and may be kept by fn. fn runs on the reading goroutine: a slow fn makes
// the ring buffer fill up and events be lost (counted by Lost).
func (t *Tracer) Read(ctx context.Context, fn func(*Event)) error {
	if t.closed.Load() {
		return ErrClosed
	}
	// The reader's lock is held while it waits, so the deadline is set from
	// this goroutine and renewed to notice ctx being done.
	const poll = 200 * time.Millisecond
	t.rd.SetDeadline(time.Now().Add(poll))
	var rec ringbuf.Record
	for {
		if err := t.rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if ctx.Err() != nil {
					return nil
				}
				t.rd.SetDeadline(time.Now().Add(poll))
				continue
			}
			return fmt.Errorf("read exec events: %w", err)
		}
		ev := new(Event)
		if err := DecodeEvent(rec.RawSample, t.bootOffset, ev); err != nil {
			if t.decodeErrs.Add(1) == 1 {
				t.log.Warn("exec tracer: bad record", "err", err)
			}
			continue
		}
		if int(ev.Type) < len(t.counts) {
			t.counts[ev.Type].Add(1)
		}
		fn(ev)
	}
}

// Close detaches the programs and frees the maps; a blocked Read returns.
func (t *Tracer) Close() error {
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		if t.rd != nil {
			t.rd.Close()
		}
		for _, l := range t.links {
			l.Close()
		}
		for _, c := range []interface{ Close() error }{t.objs.HandleExec, t.objs.HandleExit, t.objs.Events,
			t.objs.Lost, t.objs.TrackedCgroups, t.objs.TrackedMntns, t.objs.KillCgroups, t.objs.ShellNames,
			t.objs.Inflight, t.objs.Scratch} {
			if c != nil && !isNil(c) {
				c.Close()
			}
		}
	})
	return nil
}

func isNil(c interface{ Close() error }) bool {
	switch v := c.(type) {
	case *ebpf.Program:
		return v == nil
	case *ebpf.Map:
		return v == nil
	}
	return false
}

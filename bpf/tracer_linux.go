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
	"github.com/cilium/ebpf/features"
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
	maps       *ebpf.Collection // maps only; programs are in progs
	objs       tracerMaps
	progs      []*ebpf.Program
	stats      []ProgramStats
	links      []link.Link
	rd         *ringbuf.Reader
	hooks      []string
	mode       Mode
	bootOffset time.Time

	decodeErrs atomic.Uint64
	counts     [4]atomic.Uint64 // by EventType

	closeOnce sync.Once
	closed    atomic.Bool
}

// tracerMaps are the maps user space reads and writes (owned by Tracer.maps).
type tracerMaps struct {
	Events, Lost, TrackedCgroups, TrackedMntns, KillCgroups, ShellNames *ebpf.Map
}

// hook is one program of the tracer and where it attaches.
type hook struct {
	prog   string
	name   string // as listed by Hooks
	attach func(*ebpf.Program) (link.Link, error)
}

func tpBTF(prog, event string) hook {
	return hook{prog, "tp_btf/" + event, func(p *ebpf.Program) (link.Link, error) {
		return link.AttachTracing(link.TracingOptions{Program: p})
	}}
}

func syscallTP(prog, event string) hook {
	return hook{prog, "tracepoint/syscalls/" + event, func(p *ebpf.Program) (link.Link, error) {
		return link.Tracepoint("syscalls", event, p, nil)
	}}
}

// NewTracer removes the memlock limit, probes the kernel (BTF, ring buffer,
// bpf_loop, the arguments of sched_process_exit), loads the variant of each
// program this kernel supports and attaches it. The exec and exit programs
// are required; the failed-exec programs (Config.ExecFailures) are optional:
// when they cannot load or attach the tracer runs without them and Mode says
// why.
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
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("load exec tracer: kernel BTF is missing (needs CONFIG_DEBUG_INFO_BTF, /sys/kernel/btf/vmlinux): %w", err)
	}
	feat, err := probeFeatures(kernel)
	if err != nil {
		return nil, fmt.Errorf("load exec tracer: %w", err)
	}
	t.mode = chooseMode(feat, cfg)

	var spec *ebpf.CollectionSpec
	if t.mode.Object == ObjectBPFLoop {
		spec, err = loadExec()
	} else {
		spec, err = loadExecCompat()
	}
	if err != nil {
		return nil, fmt.Errorf("load exec tracer: %w", err)
	}
	spec.Maps[execMapEvents].MaxEntries = ringSize(cfg.RingBufferBytes)
	for name, v := range map[string]bool{execVarTraceHost: cfg.TraceHost, execVarEnforce: cfg.Enforce, execVarExecFailures: cfg.ExecFailures} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("load exec tracer: set %s: %w", name, err)
		}
	}

	// Maps first, shared by every program; then each program on its own,
	// so a refused optional program leaves the others loaded and each
	// program's load is timed.
	mapSpec := spec.Copy()
	mapSpec.Programs = nil
	if t.maps, err = ebpf.NewCollection(mapSpec); err != nil {
		return nil, fmt.Errorf("load exec tracer: create maps: %w", err)
	}
	m := t.maps.Maps // not Assign, which would take the maps out of the collection
	t.objs = tracerMaps{Events: m[execMapEvents], Lost: m[execMapLost], TrackedCgroups: m[execMapTrackedCgroups],
		TrackedMntns: m[execMapTrackedMntns], KillCgroups: m[execMapKillCgroups], ShellNames: m[execMapShellNames]}

	exit := execProgHandleExit
	if t.mode.Exit == ExitGroupDead {
		exit = execProgHandleExitGroupDead
	}
	for _, h := range []hook{tpBTF(execProgHandleExec, "sched_process_exec"), tpBTF(exit, "sched_process_exit")} {
		if err := t.load(spec, h); err != nil {
			return nil, fmt.Errorf("load exec tracer: %w%s", err, lockdownHint())
		}
	}
	if cfg.ExecFailures {
		if err := t.loadFailures(spec); err != nil {
			t.mode.ExecFailures = "unavailable: " + err.Error()
			log.Warn("exec tracer: failed exec attempts are not traced", "err", err)
		} else {
			t.mode.ExecFailures = "on"
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
	log.Info("exec tracer loaded", "mode", t.mode.String(), "hooks", t.hooks, "probes", probeHooks(),
		"ring_buffer_bytes", spec.Maps[execMapEvents].MaxEntries, "trace_host", cfg.TraceHost)
	return t, nil
}

// load loads one program against the tracer's maps, records its verifier
// statistics and attaches it.
func (t *Tracer) load(spec *ebpf.CollectionSpec, h hook) error {
	ps := spec.Copy()
	ps.Programs = map[string]*ebpf.ProgramSpec{h.prog: spec.Programs[h.prog]}
	start := time.Now()
	coll, err := ebpf.NewCollectionWithOptions(ps, ebpf.CollectionOptions{MapReplacements: t.maps.Maps})
	elapsed := time.Since(start)
	if err != nil {
		return fmt.Errorf("load program %s: %w", h.prog, oneLine(err))
	}
	prog := coll.DetachProgram(h.prog)
	coll.Close()
	t.progs = append(t.progs, prog)
	st := ProgramStats{Name: h.prog, Hook: h.name, LoadTime: elapsed}
	if info, err := prog.Info(); err == nil {
		if n, ok := info.VerifiedInstructions(); ok {
			st.VerifiedInstructions = int(n)
		}
	}
	t.stats = append(t.stats, st)
	l, err := h.attach(prog)
	if h.name == failHook && err == nil {
		l.Close()
		l, err = nil, errors.New("failure injected by a test")
	}
	if err != nil {
		return fmt.Errorf("attach %s: %w", h.name, err)
	}
	t.links = append(t.links, l)
	t.hooks = append(t.hooks, h.name)
	return nil
}

// failHook names a hook whose attachment fails, for tests of degraded modes.
var failHook string

// loadFailures loads and attaches the syscall tracepoint programs; on error
// it detaches those it attached, leaving the rest of the tracer as it was.
func (t *Tracer) loadFailures(spec *ebpf.CollectionSpec) error {
	if err := ensureTracefs(); err != nil {
		return err
	}
	nLinks, nProgs, nStats, nHooks := len(t.links), len(t.progs), len(t.stats), len(t.hooks)
	for _, h := range []hook{
		syscallTP(execProgTpEnterExecve, "sys_enter_execve"), syscallTP(execProgTpExitExecve, "sys_exit_execve"),
		syscallTP(execProgTpEnterExecveat, "sys_enter_execveat"), syscallTP(execProgTpExitExecveat, "sys_exit_execveat"),
	} {
		if err := t.load(spec, h); err != nil {
			for _, l := range t.links[nLinks:] {
				l.Close()
			}
			for _, p := range t.progs[nProgs:] {
				p.Close()
			}
			t.links, t.progs, t.stats, t.hooks = t.links[:nLinks], t.progs[:nProgs], t.stats[:nStats], t.hooks[:nHooks]
			return err
		}
	}
	return nil
}

// oneLine shortens a verifier error to its cause and last line: the full
// log (thousands of lines) is for a developer, not for the agent's log.
func oneLine(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%v", ve) // %v prints the cause and the last log line only
	}
	return err
}

// kernelFeatures are what the tracer's program variants depend on.
type kernelFeatures struct {
	bpfLoop   bool // the bpf_loop helper (5.17+)
	groupDead bool // sched_process_exit passes group_dead (6.16+)
}

// probeFeatures reads the running kernel's BTF and probes helpers and map
// types. A kernel without the BPF ring buffer (before 5.8) is refused.
func probeFeatures(kernel *btf.Spec) (kernelFeatures, error) {
	var f kernelFeatures
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return f, fmt.Errorf("the kernel has no BPF ring buffer (needs Linux 5.8 or later): %w", err)
	}
	switch err := features.HaveProgramHelper(ebpf.TracePoint, asm.FnLoop); {
	case err == nil:
		f.bpfLoop = true
	case errors.Is(err, ebpf.ErrNotSupported):
	default:
		return f, fmt.Errorf("probe bpf_loop: %w", err)
	}
	n, err := tracepointArgs(kernel, "sched_process_exit")
	if err != nil {
		return f, err
	}
	f.groupDead = n >= 2
	return f, nil
}

// tracepointArgs counts the arguments a BTF-enabled tracepoint passes, from
// its btf_trace_<name> typedef (a pointer to a function whose first
// parameter is the context).
func tracepointArgs(kernel *btf.Spec, name string) (int, error) {
	var td *btf.Typedef
	if err := kernel.TypeByName("btf_trace_"+name, &td); err != nil {
		return 0, fmt.Errorf("tracepoint %s is not in the kernel's BTF: %w", name, err)
	}
	ptr, ok := btf.UnderlyingType(td.Type).(*btf.Pointer)
	if !ok {
		return 0, fmt.Errorf("btf_trace_%s is a %s, not a function pointer", name, td.Type)
	}
	fp, ok := btf.UnderlyingType(ptr.Target).(*btf.FuncProto)
	if !ok || len(fp.Params) == 0 {
		return 0, fmt.Errorf("btf_trace_%s does not point to a function with a context", name)
	}
	return len(fp.Params) - 1, nil
}

func chooseMode(f kernelFeatures, cfg Config) Mode {
	m := Mode{Object: ObjectBPFLoop, Exit: ExitGroupDead, ExecFailures: "off", Enforce: cfg.Enforce}
	if !f.bpfLoop || cfg.NoBPFLoop {
		m.Object = ObjectBoundedLoop
	}
	if !f.groupDead || cfg.NoGroupDead {
		m.Exit = ExitSignalLive
	}
	return m
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
		// the name, and the usual paths, for argv[0] of a multi-call binary
		for _, key := range []string{n, "/bin/" + n, "/usr/bin/" + n, "/sbin/" + n} {
			if err := put(key, 1); err != nil {
				return err
			}
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
		for _, p := range t.progs {
			p.Close()
		}
		if t.maps != nil {
			t.maps.Close()
		}
	})
	return nil
}

// Mode says which program variants are loaded and what runs.
func (t *Tracer) Mode() Mode { return t.mode }

// Programs returns each loaded program's verifier statistics and load time.
func (t *Tracer) Programs() []ProgramStats { return append([]ProgramStats(nil), t.stats...) }

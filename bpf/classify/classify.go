// Package classify turns exec tracer events into findings: SHELL_EXEC
// (shells, busybox/toybox shell applets, python -c and the like, interactive
// or not), EXEC_FAILED, DRIFT_EXEC and EXEC, attributed to a container by
// cgroup id or mount namespace, with the parent chain from a process table.
// It is pure Go and needs no privileges.
package classify

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/bpf"
	"github.com/loupe-dev/loupe/internal/version"
)

// Container is what the classifier needs to know about a container.
type Container struct {
	// Ref identifies the container in findings.
	Ref *loupev1.ContainerRef
	// UpperDir is the host path of the container's writable overlay layer
	// ("" when unknown: no drift check).
	UpperDir string
	// Sandbox marks a pod sandbox ("pause") container; InitPID is its init
	// process (host PID namespace, 0 when unknown). The sandbox's own start
	// (the init's exec) is not reported; any other exec in a sandbox is
	// reported at high severity: nothing but the pause process belongs there,
	// and tools that hide in it are missed by those that look only at
	// workload containers.
	Sandbox bool
	InitPID int
}

// Containers finds the container a task belongs to. The runtime registry
// satisfies it through the agent's wiring.
type Containers interface {
	// ByCgroupID returns the container whose cgroup v2 id is id.
	ByCgroupID(id uint64) (Container, bool)
	// ByMntNS returns the container whose mount namespace inode is ino.
	ByMntNS(ino uint64) (Container, bool)
}

// DriftChecker decides whether an executed file comes from the container's
// upper (writable) layer rather than from its image.
type DriftChecker interface {
	// InUpperLayer reports whether path (inside the container, as resolved
	// by the kernel) with inode ino is a file of c's upper layer.
	InUpperLayer(c Container, path string, ino uint64) (bool, error)
}

// Options configures a Classifier.
type Options struct {
	// Node is the node name put in findings.
	Node string
	// Containers attributes events; nil attributes nothing.
	Containers Containers
	// Drift checks executed files against upper layers; nil disables DRIFT_EXEC.
	Drift DriftChecker
	// Procs provides parent chains; nil means a table on /proc, unseeded.
	Procs *ProcTable
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// PathSearchWindow, when > 0, holds failed execs (ENOENT, ENOTDIR,
	// EACCES) of absolute paths for up to this long: if the same thread
	// then execs the same command name successfully, the failures were a
	// PATH search (execvp, dash) and are dropped, and the exec's finding
	// counts them in details.path_search_misses. Held failures are
	// released by later Classify calls and by Flush, which the caller must
	// then call periodically (e.g. every window). 0 reports every failure
	// at once.
	PathSearchWindow time.Duration
}

// Classifier turns events into findings. It is safe for concurrent use.
type Classifier struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	pending map[uint32]*heldFailures // by thread id
}

// heldFailures are failed execs of one thread for one command name.
type heldFailures struct {
	name     string
	pid      uint32
	since    time.Time
	findings []*loupev1.Finding
}

// New returns a Classifier.
func New(opts Options) *Classifier {
	if opts.Procs == nil {
		opts.Procs = NewProcTable("/proc", 0)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Classifier{opts: opts, log: log, pending: map[uint32]*heldFailures{}}
}

// Flush returns the held failed-exec findings older than the
// PathSearchWindow at now (all of them when now is the zero time).
func (c *Classifier) Flush(now time.Time) []*loupev1.Finding {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked(func(h *heldFailures) bool { return now.IsZero() || now.Sub(h.since) >= c.opts.PathSearchWindow })
}

func (c *Classifier) flushLocked(pred func(*heldFailures) bool) []*loupev1.Finding {
	var out []*loupev1.Finding
	for tid, h := range c.pending {
		if pred(h) {
			out = append(out, h.findings...)
			delete(c.pending, tid)
		}
	}
	return out
}

// pathSearch applies PathSearchWindow to ev and its findings fs: it returns
// the findings to emit now.
func (c *Classifier) pathSearch(ev *bpf.Event, fs []*loupev1.Finding) []*loupev1.Finding {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	out := c.flushLocked(func(h *heldFailures) bool { return now.Sub(h.since) >= c.opts.PathSearchWindow })
	switch ev.Type {
	case bpf.EventExit:
		out = append(out, c.flushLocked(func(h *heldFailures) bool { return h.pid == ev.PID })...)
		return append(out, fs...)
	case bpf.EventExecFailed:
		if !strings.HasPrefix(ev.Filename, "/") || (ev.Errno != int32(syscall.ENOENT) && ev.Errno != int32(syscall.ENOTDIR) && ev.Errno != int32(syscall.EACCES)) {
			break
		}
		name := base(ev.Filename)
		h := c.pending[ev.TID]
		if h != nil && h.name != name {
			out = append(out, h.findings...)
			h = nil
		}
		if h == nil {
			h = &heldFailures{name: name, pid: ev.PID, since: now}
			c.pending[ev.TID] = h
		}
		h.findings = append(h.findings, fs...)
		return out
	case bpf.EventExec:
		if h := c.pending[ev.TID]; h != nil {
			delete(c.pending, ev.TID)
			if h.name == base(ev.Filename) {
				for _, f := range fs {
					f.Details["path_search_misses"] = strconv.Itoa(len(h.findings))
				}
				return append(out, fs...)
			}
			out = append(out, h.findings...)
		}
	}
	if h := c.pending[ev.TID]; h != nil && ev.Type == bpf.EventExecFailed {
		out = append(out, h.findings...)
		delete(c.pending, ev.TID)
	}
	return append(out, fs...)
}

// Rule names put in findings.
const (
	RuleShell       = "exec.shell"
	RuleShellTTY    = "exec.shell.interactive"
	RuleInline      = "exec.interpreter_inline"
	RuleShellKilled = "exec.shell.killed"
	RuleFailed      = "exec.failed"
	RuleDrift       = "exec.drift"
	RuleExec        = "exec"
)

// Classify returns the findings for ev (none for an exit, which only
// updates the process table). Events outside any known container become
// host-scope findings (details scope=host) at low severity.
//
// With Options.PathSearchWindow set, failed execs may be held back and
// returned by a later call or by Flush.
func (c *Classifier) Classify(ev *bpf.Event) []*loupev1.Finding {
	fs := c.classify(ev)
	if c.opts.PathSearchWindow <= 0 {
		return fs
	}
	return c.pathSearch(ev, fs)
}

func (c *Classifier) classify(ev *bpf.Event) []*loupev1.Finding {
	switch ev.Type {
	case bpf.EventExit:
		c.opts.Procs.Exit(ev.PID)
		return nil
	case bpf.EventExec, bpf.EventExecFailed:
	default:
		return nil
	}
	ctr, inContainer := c.attribute(ev)
	proc := c.process(ev)
	if ev.Type == bpf.EventExec {
		c.opts.Procs.Exec(ev.PID, ev.PPID, ev.Comm, proc.Filename)
		if inContainer && ctr.Sandbox && ctr.InitPID != 0 && int(ev.PID) == ctr.InitPID && !ev.NSEnter && !ev.Killed {
			if kind, _ := shellKind(ev); kind == "" {
				return nil // the sandbox starting its pause process
			}
		}
	}

	var out []*loupev1.Finding
	f := c.base(ev, ctr, inContainer, proc)
	out = append(out, f)
	where := "on the host"
	if inContainer {
		where = "in " + describe(ctr.Ref)
		if ctr.Sandbox {
			where += " sandbox"
		}
	}
	if ev.NSEnter {
		where += " (entered from the host with nsenter)"
	}
	cmd := commandLine(ev, proc.Filename)

	switch ev.Type {
	case bpf.EventExecFailed:
		f.Kind = loupev1.Kind_KIND_EXEC_FAILED
		f.Rule = RuleFailed
		f.Severity = loupev1.Severity_SEVERITY_MEDIUM
		if suspiciousTarget(ev.Filename) {
			f.Severity = loupev1.Severity_SEVERITY_HIGH
		}
		f.Summary = fmt.Sprintf("exec of %s failed with %s %s", ev.Filename, errnoName(ev.Errno), where)
	case bpf.EventExec:
		kind, name := shellKind(ev)
		switch {
		case kind != "":
			f.Kind = loupev1.Kind_KIND_SHELL_EXEC
			f.Rule = RuleShell
			f.Severity = loupev1.Severity_SEVERITY_MEDIUM
			f.Details["shell"] = name
			f.Details["shell_match"] = kind
			if kind == "inline" {
				f.Rule = RuleInline
			}
			if ev.TTY || ev.NSEnter {
				f.Rule = RuleShellTTY
				f.Severity = loupev1.Severity_SEVERITY_HIGH
			}
			mode := "non-interactive"
			if ev.TTY {
				mode = "interactive"
			}
			f.Summary = fmt.Sprintf("%s shell %s ran %s", mode, cmd, where)
		default:
			f.Kind = loupev1.Kind_KIND_EXEC
			f.Rule = RuleExec
			f.Severity = loupev1.Severity_SEVERITY_INFO
			f.Summary = fmt.Sprintf("%s ran %s", cmd, where)
		}
		if ev.Killed {
			f.Action = "killed"
			f.Rule = RuleShellKilled
			f.Severity = loupev1.Severity_SEVERITY_HIGH
			f.Summary += "; killed by policy before it ran"
		}
		if inContainer && c.opts.Drift != nil && ctr.UpperDir != "" {
			if p := c.drifted(ev, ctr); p != "" {
				d := c.base(ev, ctr, inContainer, proc)
				d.Kind = loupev1.Kind_KIND_DRIFT_EXEC
				d.Rule = RuleDrift
				d.Severity = loupev1.Severity_SEVERITY_HIGH
				d.File = &loupev1.File{Path: p, Layer: "upper"}
				d.Action = f.Action
				d.Summary = fmt.Sprintf("%s, which is not part of the image (upper layer), ran %s", p, where)
				out = append(out, d)
			}
		}
	}
	if inContainer && ctr.Sandbox {
		for _, f := range out {
			f.Details["sandbox"] = "true"
			if f.Severity < loupev1.Severity_SEVERITY_HIGH {
				f.Severity = loupev1.Severity_SEVERITY_HIGH
			}
			f.Summary += "; nothing but the pause process belongs in a pod sandbox"
		}
	}
	if !inContainer {
		for _, f := range out {
			f.Details["scope"] = "host"
			if f.Severity > loupev1.Severity_SEVERITY_LOW {
				f.Severity = loupev1.Severity_SEVERITY_LOW
			}
		}
	}
	return out
}

// drifted returns the executed file's path when it is in the upper layer:
// the resolved path of the binary, or for a script the script's absolute
// path as passed (the kernel reports the interpreter's inode).
func (c *Classifier) drifted(ev *bpf.Event, ctr Container) string {
	var cands []string
	if ev.Path != "" && !ev.PathTruncated {
		cands = append(cands, ev.Path)
	}
	if ev.Interpreter != "" && strings.HasPrefix(ev.Filename, "/") {
		cands = append(cands, ev.Filename)
	}
	for i, p := range cands {
		ino := ev.Ino
		if i > 0 {
			ino = 0
		}
		upper, err := c.opts.Drift.InUpperLayer(ctr, p, ino)
		if err != nil {
			c.log.Debug("drift check failed", "path", p, "err", err)
			continue
		}
		if upper {
			return p
		}
	}
	return ""
}

// attribute finds the container: by mount namespace for nsenter events
// (the cgroup is the host's), else by cgroup id, then mount namespace.
func (c *Classifier) attribute(ev *bpf.Event) (Container, bool) {
	if c.opts.Containers == nil {
		return Container{}, false
	}
	if !ev.NSEnter {
		if ctr, ok := c.opts.Containers.ByCgroupID(ev.CgroupID); ok && ctr.Ref != nil {
			return ctr, true
		}
	}
	if ctr, ok := c.opts.Containers.ByMntNS(ev.MntNS); ok && ctr.Ref != nil {
		return ctr, true
	}
	return Container{}, false
}

func (c *Classifier) process(ev *bpf.Event) *loupev1.Process {
	filename := ev.Path
	if filename == "" || ev.Type == bpf.EventExecFailed {
		filename = ev.Filename
	}
	p := &loupev1.Process{
		Pid:           int32(ev.PID),
		Ppid:          int32(ev.PPID),
		Uid:           ev.UID,
		Gid:           ev.GID,
		Euid:          ev.EUID,
		Comm:          ev.Comm,
		Filename:      filename,
		Argv:          ev.Argv,
		Errno:         ev.Errno,
		Tty:           ev.TTY,
		ArgvTruncated: ev.ArgvTruncated,
		Interpreter:   ev.Interpreter,
		CgroupId:      ev.CgroupID,
		MntNs:         ev.MntNS,
		Nsenter:       ev.NSEnter,
		Ancestors:     c.opts.Procs.Ancestors(ev.PPID, MaxAncestors),
	}
	if ev.TID != ev.PID {
		p.Tid = int32(ev.TID)
	}
	return p
}

func (c *Classifier) base(ev *bpf.Event, ctr Container, inContainer bool, proc *loupev1.Process) *loupev1.Finding {
	f := &loupev1.Finding{
		Id:           uuid.Must(uuid.NewV7()).String(),
		Time:         timestamppb.New(ev.Time),
		Node:         c.opts.Node,
		Process:      proc,
		AgentVersion: version.Version,
		Details:      map[string]string{},
	}
	if inContainer {
		f.Container = ctr.Ref
	}
	if ev.Filename != "" && ev.Filename != proc.Filename {
		f.Details["filename_passed"] = ev.Filename
	}
	if ev.FileDeleted {
		f.Details["file_deleted"] = "true"
	}
	if ev.Type == bpf.EventExec {
		f.Details["inode"] = fmt.Sprint(ev.Ino)
	}
	return f
}

func describe(r *loupev1.ContainerRef) string {
	switch {
	case r.GetPod() != "":
		s := fmt.Sprintf("pod %s/%s", r.GetNamespace(), r.GetPod())
		if r.GetName() != "" {
			s += " container " + r.GetName()
		}
		return s
	case r.GetName() != "":
		return "container " + r.GetName()
	}
	id := r.GetId()
	if len(id) > 12 {
		id = id[:12]
	}
	return "container " + id
}

// commandLine renders argv for a summary, bounded.
func commandLine(ev *bpf.Event, filename string) string {
	s := strings.Join(ev.Argv, " ")
	if s == "" {
		s = filename
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return fmt.Sprintf("%q", s)
}

func errnoName(e int32) string {
	switch syscall.Errno(e) {
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.EACCES:
		return "EACCES"
	case syscall.EPERM:
		return "EPERM"
	case syscall.ENOEXEC:
		return "ENOEXEC"
	case syscall.ENOTDIR:
		return "ENOTDIR"
	case syscall.E2BIG:
		return "E2BIG"
	case syscall.ETXTBSY:
		return "ETXTBSY"
	case syscall.ELOOP:
		return "ELOOP"
	}
	return fmt.Sprintf("errno %d", e)
}

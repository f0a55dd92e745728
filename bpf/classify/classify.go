// Package classify turns exec tracer events into findings: SHELL_EXEC
// (shells, busybox/toybox shell applets, python -c and the like, interactive
// or not), EXEC_FAILED, DRIFT_EXEC and EXEC, attributed to a container by
// cgroup id or mount namespace, with the parent chain from a process table.
// It is pure Go and needs no privileges.
package classify

import (
	"fmt"
	"log/slog"
	"strings"
	"syscall"

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
}

// Classifier turns events into findings. It is safe for concurrent use.
type Classifier struct {
	opts Options
	log  *slog.Logger
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
	return &Classifier{opts: opts, log: log}
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
func (c *Classifier) Classify(ev *bpf.Event) []*loupev1.Finding {
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
	}

	var out []*loupev1.Finding
	f := c.base(ev, ctr, inContainer, proc)
	out = append(out, f)
	where := "on the host"
	if inContainer {
		where = "in " + describe(ctr.Ref)
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
		if inContainer && c.opts.Drift != nil && ev.Path != "" && !ev.PathTruncated && ctr.UpperDir != "" {
			upper, err := c.opts.Drift.InUpperLayer(ctr, ev.Path, ev.Ino)
			if err != nil {
				c.log.Debug("drift check failed", "path", ev.Path, "err", err)
			} else if upper {
				d := c.base(ev, ctr, inContainer, proc)
				d.Kind = loupev1.Kind_KIND_DRIFT_EXEC
				d.Rule = RuleDrift
				d.Severity = loupev1.Severity_SEVERITY_HIGH
				d.File = &loupev1.File{Path: ev.Path, Layer: "upper"}
				d.Action = f.Action
				d.Summary = fmt.Sprintf("%s, which is not part of the image (upper layer), ran %s", ev.Path, where)
				out = append(out, d)
			}
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

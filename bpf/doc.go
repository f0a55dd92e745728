// Package bpf is Loupe's eBPF exec tracer: it loads the programs in
// exec.bpf.c, keeps the in-kernel filter maps (tracked cgroup ids and mount
// namespaces) current, reads the ring buffer and decodes its records into
// Events without reflection.
//
// Successful execs come from tp_btf/sched_process_exec; failed attempts from
// the execve/execveat syscall tracepoints, attached only when
// Config.ExecFailures is set because they add a small cost to every syscall on
// the host; thread-group exits from tp_btf/sched_process_exit.
package bpf

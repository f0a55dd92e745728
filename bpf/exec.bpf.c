//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/* Loupe's exec tracer.
 *
 * - tp_btf/sched_process_exec reports every successful exec with its resolved
 *   path, interpreter, argv, credentials, tty and the executed file's dev/ino;
 * - the execve/execveat syscall tracepoints (attached only in ExecFailures
 *   mode) report failed attempts: enter remembers the user pointers per
 *   thread, exit reads them when the call failed (the old image is intact);
 * - tp_btf/sched_process_exit reports thread-group exits of tracked tasks
 *   (two variants: with the group_dead argument of 6.16+ kernels, or from
 *   signal->live before that; the loader picks one from the kernel's BTF).
 *
 * Built twice (bpf/gen.go): as is, with bpf_loop (5.17+) walking the executed
 * file's path, and with -DLOUPE_NO_BPF_LOOP, a bounded loop for 5.8-5.16.
 * Every loop keeps its state in map memory so the verifier checks each step
 * once: no program comes near the verifier's limits (bpf/budget_test.go).
 *
 * Only tasks in a tracked cgroup (v2 id) or a tracked mount namespace are
 * reported unless trace_host is set. Records go to a ring buffer that never
 * blocks; a failed write is counted in a per-CPU counter.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "exec.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader before the programs are loaded. */
const volatile bool trace_host = false;
const volatile bool enforce = false;
const volatile bool exec_failures = false;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* replaced by the loader */
} events SEC(".maps");

/* lost[0] counts records that did not fit in the ring buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} tracked_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} tracked_mntns SEC(".maps");

/* Enforcement: cgroup ids in which shells are killed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} kill_cgroups SEC(".maps");

#define NAME_SHELL 1
#define NAME_MULTICALL 2

/* Names (comm-sized) of shells (1) and multi-call binaries (2). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, char[16]);
	__type(value, __u8);
} shell_names SEC(".maps");

struct pending {
	__u64 filename;
	__u64 argv;
	__u8 execveat;
};

/* execve/execveat in flight, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct pending);
} inflight SEC(".maps");

/* path_walk is read_path's state between steps. It lives in the scratch map
 * value, not on the stack: loads from a map value are unknown scalars to the
 * verifier, so every step starts from the same abstract state and the walk is
 * verified once, whatever the number of steps (state on the stack made the
 * verifier enumerate every offset and hit its 1M-instruction limit). */
struct path_walk {
	__u64 d;      /* struct dentry * */
	__u64 vm;     /* struct vfsmount * */
	__u64 m;      /* struct mount * */
	__u64 root_d; /* the task's root */
	__u64 root_m;
	__u32 off;
	__u32 start;
	__u32 complete;
	__u32 pad;
};

/* record is the per-CPU buffer a ring-buffer record is built in: the header
 * and data are submitted, walk is scratch space. */
struct record {
	struct event e;
	char data[DATA_SIZE];
	struct path_walk walk;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct record);
} scratch SEC(".maps");

/* Force BTF for the Go side (bpf2go -type event). */
const struct event *unused_event __attribute__((unused));

static __always_inline struct record *scratch_record(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);
	if (n)
		*n += 1;
}

/* tracked decides whether the current task is reported and sets flags. */
static __always_inline bool tracked(struct task_struct *task, __u64 *cg, __u64 *mntns, __u16 *flags)
{
	*cg = bpf_get_current_cgroup_id();
	*mntns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	if (bpf_map_lookup_elem(&tracked_cgroups, cg))
		return true;
	if (bpf_map_lookup_elem(&tracked_mntns, mntns)) {
		*flags |= FLAG_NSENTER;
		return true;
	}
	if (trace_host) {
		*flags |= FLAG_UNTRACKED;
		return true;
	}
	return false;
}

static __always_inline struct record *fill_header(struct task_struct *task, __u8 type, __u64 cg, __u64 mntns,
						  __u16 flags)
{
	struct record *r = scratch_record();
	if (!r)
		return NULL;
	struct event *e = &r->e;
	__u64 ugid = bpf_get_current_uid_gid();
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = cg;
	e->mnt_ns = mntns;
	e->ino = 0;
	e->dev = 0;
	e->pid = BPF_CORE_READ(task, tgid);
	e->tid = BPF_CORE_READ(task, pid);
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)ugid;
	e->gid = (__u32)(ugid >> 32);
	e->euid = BPF_CORE_READ(task, cred, euid.val);
	e->ret = 0;
	e->type = type;
	e->pad = 0;
	e->flags = flags;
	e->filename_len = 0;
	e->interp_len = 0;
	e->path_len = 0;
	e->argv_len = 0;
	e->argc = 0;
	e->pad2 = 0;
	if (BPF_CORE_READ(task, signal, tty))
		e->flags |= FLAG_TTY;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return r;
}

static __always_inline void submit(struct record *r, __u32 off)
{
	__u64 size = sizeof(struct event) + (off & DATA_MASK);
	if (bpf_ringbuf_output(&events, r, size, 0))
		count_lost();
}

/* path_step is one step of read_path: it writes one component or crosses one
 * mount. Returns 1 to stop. Its signature is bpf_loop's callback. */
static __noinline long path_step(__u32 i, void *unused)
{
	struct record *r = scratch_record();
	if (!r)
		return 1;
	struct path_walk *w = &r->walk;
	struct dentry *d = (struct dentry *)w->d;
	struct vfsmount *vm = (struct vfsmount *)w->vm;
	struct mount *m = (struct mount *)w->m;
	if (w->d == w->root_d && w->vm == w->root_m) {
		w->complete = 1;
		return 1;
	}
	struct dentry *mnt_root = BPF_CORE_READ(vm, mnt_root);
	if (d == mnt_root) {
		struct mount *parent = BPF_CORE_READ(m, mnt_parent);
		if (parent == m) {
			w->complete = 1; /* global root */
			return 1;
		}
		w->d = (__u64)BPF_CORE_READ(m, mnt_mountpoint);
		w->m = (__u64)parent;
		w->vm = (__u64)parent + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	struct dentry *up = BPF_CORE_READ(d, d_parent);
	if (up == d) {
		w->complete = 1;
		return 1;
	}
	__u32 off = w->off;
	if (off - w->start > PATH_MAX_BYTES - NAME_MAX_BYTES)
		return 1;
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	long n = bpf_probe_read_kernel_str(&r->data[off & DATA_MASK], NAME_MAX_BYTES, name);
	if (n > 0)
		w->off = off + n;
	w->d = (__u64)up;
	return 0;
}

/* read_path writes the components of f's path, leaf first, up to the task's
 * root directory, crossing mounts. Returns the new offset. */
static __always_inline __u32 read_path(struct record *r, __u32 off, struct file *f, struct task_struct *task)
{
	struct path_walk *w = &r->walk;
	w->root_d = (__u64)BPF_CORE_READ(task, fs, root.dentry);
	w->root_m = (__u64)BPF_CORE_READ(task, fs, root.mnt);
	w->d = (__u64)BPF_CORE_READ(f, f_path.dentry);
	struct vfsmount *vm = BPF_CORE_READ(f, f_path.mnt);
	w->vm = (__u64)vm;
	w->m = (__u64)vm - bpf_core_field_offset(struct mount, mnt);
	w->off = off;
	w->start = off;
	w->complete = 0;
#ifdef LOUPE_NO_BPF_LOOP
	/* Kernels before 5.17: a bounded loop (5.3+) calling the same step. */
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < PATH_MAX_DEPTH; i++)
		if (path_step(i, NULL))
			break;
#else
	bpf_loop(PATH_MAX_DEPTH, path_step, NULL, 0);
#endif
	/* the step may have moved r's pointer; re-read through the same r */
	if (!w->complete)
		r->e.flags |= FLAG_PATH_TRUNCATED;
	return w->off;
}

/* name_kind looks a (kernel) name up in shell_names. */
static __always_inline __u8 name_kind(const char *src)
{
	char key[16] = {};
	bpf_probe_read_kernel_str(key, sizeof(key), src);
	__u8 *v = bpf_map_lookup_elem(&shell_names, key);
	return v ? *v : 0;
}

/* is_shell decides, for enforcement, whether the new image is a shell: by
 * comm (basename of the file name), by the executed file's name (covers
 * scripts, whose file is the interpreter), or by the applet (argv[1]) of a
 * multi-call binary such as busybox. argv is at [argv_off, end). */
static __always_inline bool is_shell(struct record *r, struct file *f, __u32 argv_off, __u32 end)
{
	__u8 k = name_kind(r->e.comm);
	if (k == NAME_SHELL)
		return true;
	const unsigned char *fname = BPF_CORE_READ(f, f_path.dentry, d_name.name);
	__u8 fk = name_kind((const char *)fname);
	if (fk == NAME_SHELL)
		return true;
	if (k != NAME_MULTICALL && fk != NAME_MULTICALL)
		return false;
	if (r->e.argv_len == 0)
		return false;
	/* a multi-call binary run as a shell: argv[0] names the applet ("sh",
	 * or a path such as "/bin/sh" for a #!/bin/sh script; shell_names holds
	 * the usual paths too) */
	if (name_kind(&r->data[argv_off & DATA_MASK]) == NAME_SHELL)
		return true;
	/* argv[1] follows argv[0]: a string copy of argv[0] into the unused tail
	 * of the buffer returns its length, without a loop over its bytes. */
	long n = bpf_probe_read_kernel_str(&r->data[end & DATA_MASK], ARGV_MAX_BYTES, &r->data[argv_off & DATA_MASK]);
	if (n <= 0 || (__u32)n >= r->e.argv_len)
		return false;
	return name_kind(&r->data[(argv_off + n) & DATA_MASK]) == NAME_SHELL;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u64 cg, mntns;
	__u16 flags = 0;

	/* The syscall exit of this exec must not report it again. */
	if (exec_failures) {
		__u32 old = old_pid;
		bpf_map_delete_elem(&inflight, &old);
	}

	if (!tracked(task, &cg, &mntns, &flags))
		return 0;
	struct record *r = fill_header(task, EVENT_EXEC, cg, mntns, flags);
	if (!r)
		return 0;
	r->e.tid = old_pid;

	struct file *f = BPF_CORE_READ(bprm, file);
	r->e.ino = BPF_CORE_READ(f, f_inode, i_ino);
	r->e.dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
	if (BPF_CORE_READ(f, f_inode, __i_nlink) == 0)
		r->e.flags |= FLAG_FILE_DELETED;

	__u32 off = 0;
	const char *filename = BPF_CORE_READ(bprm, filename);
	const char *interp = BPF_CORE_READ(bprm, interp);
	long n = bpf_probe_read_kernel_str(&r->data[0], FILENAME_MAX_BYTES, filename);
	if (n > 0) {
		off += n;
		r->e.filename_len = n;
	}
	if (interp != filename) {
		n = bpf_probe_read_kernel_str(&r->data[off & DATA_MASK], FILENAME_MAX_BYTES, interp);
		if (n > 0) {
			off += n;
			r->e.interp_len = n;
		}
	}
	__u32 path_start = off;
	off = read_path(r, off, f, task);
	r->e.path_len = off - path_start;

	/* argv: the new image's argument area, NUL-separated. */
	unsigned long arg_start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(task, mm, arg_end);
	__u64 len = arg_end - arg_start;
	if (len > ARGV_MAX_BYTES) {
		len = ARGV_MAX_BYTES;
		r->e.flags |= FLAG_ARGV_TRUNCATED;
	}
	r->e.argc = BPF_CORE_READ(bprm, argc);
	__u32 argv_off = off;
	barrier_var(len);
	if (len > 0 && len <= ARGV_MAX_BYTES) {
		if (bpf_probe_read_user(&r->data[off & DATA_MASK], len, (void *)arg_start) == 0) {
			off += len;
			r->e.argv_len = len;
		}
	}

	if (enforce && bpf_map_lookup_elem(&kill_cgroups, &cg) && is_shell(r, f, argv_off, off)) {
		bpf_send_signal(9);
		r->e.flags |= FLAG_KILLED;
	}
	submit(r, off);
	return 0;
}

static __always_inline int enter_exec(struct trace_event_raw_sys_enter *ctx, __u64 filename, __u64 argv,
				      __u8 at)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 cg, mntns;
	__u16 flags = 0;
	if (!tracked(task, &cg, &mntns, &flags))
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending p = {.filename = filename, .argv = argv, .execveat = at};
	bpf_map_update_elem(&inflight, &tid, &p, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int tp_enter_execve(struct trace_event_raw_sys_enter *ctx)
{
	return enter_exec(ctx, ctx->args[0], ctx->args[1], 0);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int tp_enter_execveat(struct trace_event_raw_sys_enter *ctx)
{
	return enter_exec(ctx, ctx->args[1], ctx->args[2], 1);
}

static __always_inline int exit_exec(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending *pp = bpf_map_lookup_elem(&inflight, &tid);
	if (!pp)
		return 0;
	struct pending p = *pp;
	bpf_map_delete_elem(&inflight, &tid);
	long ret = ctx->ret;
	if (ret >= 0)
		return 0; /* reported by sched_process_exec */

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 cg, mntns;
	__u16 flags = 0;
	if (!tracked(task, &cg, &mntns, &flags))
		return 0;
	if (p.execveat)
		flags |= FLAG_EXECVEAT;
	struct record *r = fill_header(task, EVENT_EXEC_FAILED, cg, mntns, flags);
	if (!r)
		return 0;
	r->e.ret = ret;

	__u32 off = 0;
	long n = bpf_probe_read_user_str(&r->data[0], FILENAME_MAX_BYTES, (void *)p.filename);
	if (n > 0) {
		off += n;
		r->e.filename_len = n;
	}
	__u32 argv_start = off;
	for (int i = 0; i < ARGV_MAX_ARGS; i++) {
		__u64 ptr = 0;
		if (bpf_probe_read_user(&ptr, sizeof(ptr), (void *)(p.argv + i * sizeof(__u64))) || !ptr)
			goto done;
		if (off - argv_start >= ARGV_MAX_BYTES)
			break;
		n = bpf_probe_read_user_str(&r->data[off & DATA_MASK], ARGV_MAX_BYTES, (void *)ptr);
		if (n <= 0)
			goto done;
		if (off - argv_start + n > ARGV_MAX_BYTES) {
			off = argv_start + ARGV_MAX_BYTES;
			break;
		}
		off += n;
		r->e.argc++;
	}
	/* more than ARGV_MAX_ARGS arguments, or more than ARGV_MAX_BYTES */
	r->e.flags |= FLAG_ARGV_TRUNCATED;
done:
	r->e.argv_len = off - argv_start;
	submit(r, off);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int tp_exit_execve(struct trace_event_raw_sys_exit *ctx)
{
	return exit_exec(ctx);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int tp_exit_execveat(struct trace_event_raw_sys_exit *ctx)
{
	return exit_exec(ctx);
}

static __always_inline int report_exit(struct task_struct *task)
{
	__u64 cg, mntns;
	__u16 flags = 0;
	if (!tracked(task, &cg, &mntns, &flags))
		return 0;
	struct record *r = fill_header(task, EVENT_EXIT, cg, mntns, flags);
	if (!r)
		return 0;
	r->e.ret = BPF_CORE_READ(task, exit_code);
	submit(r, 0);
	return 0;
}

/* Kernels whose sched_process_exit passes group_dead (6.16+). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit_group_dead, struct task_struct *task, bool group_dead)
{
	if (!group_dead)
		return 0;
	return report_exit(task);
}

/* Older kernels: do_exit decrements signal->live before the tracepoint, so
 * the thread group is dead when it reads zero. Threads exiting at the same
 * moment may both see zero: user space treats a second exit as a no-op. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *task)
{
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	return report_exit(task);
}

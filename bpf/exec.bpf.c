//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/* Loupe's exec tracer.
 *
 * - tp_btf/sched_process_exec reports every successful exec with its resolved
 *   path, interpreter, argv, credentials, tty and the executed file's dev/ino;
 * - the execve/execveat syscall tracepoints (attached only in ExecFailures
 *   mode) report failed attempts: enter remembers the user pointers per
 *   thread, exit reads them when the call failed (the old image is intact);
 * - tp_btf/sched_process_exit reports thread-group exits of tracked tasks.
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

struct record {
	struct event e;
	char data[DATA_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct record);
} scratch SEC(".maps");

/* Force BTF for the Go side (bpf2go -type event). */
const struct event *unused_event __attribute__((unused));

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
	__u32 zero = 0;
	struct record *r = bpf_map_lookup_elem(&scratch, &zero);
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

struct path_walk {
	struct dentry *d;
	struct dentry *root_d;
	struct vfsmount *vm;
	struct vfsmount *root_m;
	struct mount *m;
	__u32 off;
	__u32 start;
	bool complete;
};

/* path_step is one bpf_loop step of read_path: it writes one component or
 * crosses one mount. Returns 1 to stop. */
static long path_step(__u32 i, struct path_walk *w)
{
	__u32 zero = 0;
	struct record *r = bpf_map_lookup_elem(&scratch, &zero);
	if (!r)
		return 1;
	/* locals: CO-RE relocations must not go through struct path_walk */
	struct dentry *d = w->d;
	struct vfsmount *vm = w->vm;
	struct mount *m = w->m;
	if (d == w->root_d && vm == w->root_m) {
		w->complete = true;
		return 1;
	}
	struct dentry *mnt_root = BPF_CORE_READ(vm, mnt_root);
	if (d == mnt_root) {
		struct mount *parent = BPF_CORE_READ(m, mnt_parent);
		if (parent == m) {
			w->complete = true; /* global root */
			return 1;
		}
		w->d = BPF_CORE_READ(m, mnt_mountpoint);
		w->m = parent;
		w->vm = (struct vfsmount *)((void *)parent + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	struct dentry *up = BPF_CORE_READ(d, d_parent);
	if (up == d) {
		w->complete = true;
		return 1;
	}
	if (w->off - w->start > PATH_MAX_BYTES - NAME_MAX_BYTES)
		return 1;
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	long n = bpf_probe_read_kernel_str(&r->data[w->off & DATA_MASK], NAME_MAX_BYTES, name);
	if (n > 0)
		w->off += n;
	w->d = up;
	return 0;
}

/* read_path writes the components of f's path, leaf first, up to the task's
 * root directory, crossing mounts. Returns the new offset. */
static __always_inline __u32 read_path(struct record *r, __u32 off, struct file *f, struct task_struct *task)
{
	struct path_walk w = {};
	w.root_d = BPF_CORE_READ(task, fs, root.dentry);
	w.root_m = BPF_CORE_READ(task, fs, root.mnt);
	w.d = BPF_CORE_READ(f, f_path.dentry);
	struct vfsmount *vm = BPF_CORE_READ(f, f_path.mnt);
	w.vm = vm;
	w.m = (struct mount *)((void *)vm - bpf_core_field_offset(struct mount, mnt));
	w.off = off;
	w.start = off;
	bpf_loop(PATH_MAX_DEPTH, path_step, &w, 0);
	if (!w.complete)
		r->e.flags |= FLAG_PATH_TRUNCATED;
	return w.off;
}

/* name_kind looks a (kernel) name up in shell_names. */
static __always_inline __u8 name_kind(const char *src)
{
	char key[16] = {};
	bpf_probe_read_kernel_str(key, sizeof(key), src);
	__u8 *v = bpf_map_lookup_elem(&shell_names, key);
	return v ? *v : 0;
}

struct nul_scan {
	__u32 base;
	__u32 len;
	__u32 found;
};

/* nul_step finds the first NUL of argv (the end of argv[0]). */
static long nul_step(__u32 i, struct nul_scan *sc)
{
	__u32 zero = 0;
	if (i >= sc->len)
		return 1;
	struct record *r = bpf_map_lookup_elem(&scratch, &zero);
	if (!r)
		return 1;
	if (r->data[(sc->base + i) & DATA_MASK] == 0) {
		sc->found = i;
		return 1;
	}
	return 0;
}

/* is_shell decides, for enforcement, whether the new image is a shell: by
 * comm (basename of the file name), by the executed file's name (covers
 * scripts, whose file is the interpreter), or by the applet (argv[1]) of a
 * multi-call binary such as busybox. */
static __always_inline bool is_shell(struct record *r, struct file *f, __u32 argv_off)
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
	/* argv[1]: skip argv[0]. */
	struct nul_scan sc = {.base = argv_off, .len = r->e.argv_len, .found = 0xffffffff};
	bpf_loop(256, nul_step, &sc, 0);
	if (sc.found == 0xffffffff || sc.found + 1 >= r->e.argv_len)
		return false;
	return name_kind(&r->data[(argv_off + sc.found + 1) & DATA_MASK]) == NAME_SHELL;
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

	if (enforce && bpf_map_lookup_elem(&kill_cgroups, &cg) && is_shell(r, f, argv_off)) {
		bpf_send_signal(9);
		r->e.flags |= FLAG_KILLED;
	}
	submit(r, off);
	return 0;
}

static __always_inline int enter_exec(struct trace_event_raw_sys_enter *ctx, __u64 filename, __u64 argv,
				      __u8 at)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
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

	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
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

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *task, bool group_dead)
{
	if (!group_dead)
		return 0;
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

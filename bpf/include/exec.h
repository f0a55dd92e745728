/* Shared definitions of Loupe's exec tracer: the record layout written to the
 * ring buffer. The Go decoder (bpf/decode.go) mirrors these offsets. */
#ifndef LOUPE_EXEC_H
#define LOUPE_EXEC_H

#define EVENT_EXEC 1        /* a successful exec (sched_process_exec) */
#define EVENT_EXEC_FAILED 2 /* execve/execveat returned an error */
#define EVENT_EXIT 3        /* a thread group exited (sched_process_exit) */

#define FLAG_TTY (1 << 0)            /* the process has a controlling terminal */
#define FLAG_ARGV_TRUNCATED (1 << 1) /* argv was cut at the bounds below */
#define FLAG_NSENTER (1 << 2)        /* untracked cgroup, tracked mount namespace */
#define FLAG_KILLED (1 << 3)         /* enforcement sent SIGKILL */
#define FLAG_UNTRACKED (1 << 4)      /* reported only because trace_host is on */
#define FLAG_PATH_TRUNCATED (1 << 5) /* the resolved path was cut */
#define FLAG_FILE_DELETED (1 << 6)   /* the executed file has no links (memfd, deleted) */
#define FLAG_EXECVEAT (1 << 7)       /* the failed call was execveat */

#define FILENAME_MAX_BYTES 512
#define PATH_MAX_BYTES 1024
#define NAME_MAX_BYTES 256
#define PATH_MAX_DEPTH 48
#define ARGV_MAX_BYTES 4096
#define ARGV_MAX_ARGS 32

#define DATA_MASK 8191
#define DATA_SIZE (DATA_MASK + 1 + ARGV_MAX_BYTES)

/* struct event is the fixed header of every record; filename, interpreter,
 * path components (leaf first) and argv follow it, each NUL-terminated, with
 * the byte counts (including the NULs) given by the *_len fields. */
struct event {
	__u64 ts_ns;     /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id; /* cgroup v2 id of the task */
	__u64 mnt_ns;    /* mount namespace inode */
	__u64 ino;       /* executed file's inode */
	__u32 dev;       /* executed file's device (kernel encoding) */
	__u32 pid;       /* tgid */
	__u32 tid;       /* thread that called exec (pre-exec tid) */
	__u32 ppid;      /* real parent's tgid */
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__s32 ret; /* 0 or -errno */
	__u8 type;
	__u8 pad;
	__u16 flags;
	__u16 filename_len;
	__u16 interp_len;
	__u16 path_len;
	__u16 argv_len;
	__u16 argc; /* arguments counted by the kernel (failed execs: read) */
	__u16 pad2;
	char comm[16];
};

#endif

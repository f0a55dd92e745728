package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// ProcMountNS returns the inode of a host process's mount namespace.
func ProcMountNS(hostRoot string, pid int) (uint64, error) {
	return inode(filepath.Join(hostRoot, "proc", strconv.Itoa(pid), "ns", "mnt"))
}

// ProcRoot is the path of a process's root directory view.
func ProcRoot(hostRoot string, pid int) string {
	return filepath.Join(hostRoot, "proc", strconv.Itoa(pid), "root")
}

func inode(p string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	return st.Ino, nil
}

// ErrNoCgroupV2 is returned when the host has no cgroup v2 hierarchy (pure v1).
var ErrNoCgroupV2 = errors.New("no cgroup v2 hierarchy mounted")

// CgroupV2Root finds the cgroup v2 hierarchy under the host root:
// /sys/fs/cgroup on pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones.
// v1 hierarchies are never returned: their inodes are not cgroup ids.
func CgroupV2Root(hostRoot string) (string, error) {
	for _, p := range []string{"sys/fs/cgroup", "sys/fs/cgroup/unified"} {
		full := filepath.Join(hostRoot, p)
		var fs unix.Statfs_t
		if err := unix.Statfs(full, &fs); err == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC {
			return full, nil
		}
	}
	return "", fmt.Errorf("find cgroup v2 under %s: %w", hostRoot, ErrNoCgroupV2)
}

// CgroupID returns the id of a cgroup v2 directory: its inode, which is what
// bpf_get_current_cgroup_id() returns for processes in it.
func CgroupID(v2root, path string) (uint64, error) {
	return inode(filepath.Join(v2root, path))
}

//go:build !linux

package runtime

import "errors"

var errNotLinux = errors.New("not supported on this OS")

// ErrNoCgroupV2 is returned when the host has no cgroup v2 hierarchy.
var ErrNoCgroupV2 = errors.New("no cgroup v2 hierarchy mounted")

// ProcMountNS is only supported on Linux.
func ProcMountNS(hostRoot string, pid int) (uint64, error) { return 0, errNotLinux }

// ProcRoot is only meaningful on Linux.
func ProcRoot(hostRoot string, pid int) string { return "" }

// CgroupV2Root is only supported on Linux.
func CgroupV2Root(hostRoot string) (string, error) { return "", errNotLinux }

// CgroupID is only supported on Linux.
func CgroupID(v2root, path string) (uint64, error) { return 0, errNotLinux }

package runtime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxProcCgroup caps how much of /proc/<pid>/cgroup is read.
const maxProcCgroup = 64 << 10

// ProcCgroup is /proc/<pid>/cgroup parsed.
type ProcCgroup struct {
	// Unified is the cgroup v2 path ("0::<path>" line), "" if there is none.
	Unified string
	// V1 maps each v1 controller (and "name=…" hierarchy) to its path.
	V1 map[string]string
}

// ParseProcCgroup parses the content of /proc/<pid>/cgroup
// ("hierarchy-ID:controller-list:cgroup-path" lines).
func ParseProcCgroup(data []byte) (ProcCgroup, error) {
	pc := ProcCgroup{V1: map[string]string{}}
	if len(data) > maxProcCgroup {
		return pc, fmt.Errorf("parse /proc/<pid>/cgroup: %d bytes is too long", len(data))
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxProcCgroup)
	seenUnified := false
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return pc, fmt.Errorf("parse /proc/<pid>/cgroup line %d: want 3 colon-separated fields", n)
		}
		if _, err := strconv.ParseUint(parts[0], 10, 32); err != nil {
			return pc, fmt.Errorf("parse /proc/<pid>/cgroup line %d: bad hierarchy id %q", n, parts[0])
		}
		path := parts[2]
		if !strings.HasPrefix(path, "/") {
			return pc, fmt.Errorf("parse /proc/<pid>/cgroup line %d: path %q is not absolute", n, path)
		}
		if parts[0] == "0" && parts[1] == "" {
			if seenUnified {
				return pc, fmt.Errorf("parse /proc/<pid>/cgroup line %d: second unified line", n)
			}
			seenUnified = true
			pc.Unified = path
			continue
		}
		for _, ctl := range strings.Split(parts[1], ",") {
			if ctl != "" {
				pc.V1[ctl] = path
			}
		}
	}
	if err := sc.Err(); err != nil {
		return pc, fmt.Errorf("parse /proc/<pid>/cgroup: %w", err)
	}
	return pc, nil
}

// ProcCgroupV2Path returns the cgroup v2 path of a host process, read from
// <hostRoot>/proc/<pid>/cgroup.
func ProcCgroupV2Path(hostRoot string, pid int) (string, error) {
	b, err := readCapped(filepath.Join(hostRoot, "proc", strconv.Itoa(pid), "cgroup"), maxProcCgroup)
	if err != nil {
		return "", err
	}
	pc, err := ParseProcCgroup(b)
	if err != nil {
		return "", err
	}
	if pc.Unified == "" {
		return "", errors.New("process has no cgroup v2 path")
	}
	return pc.Unified, nil
}

func readCapped(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: longer than %d bytes", p, limit)
	}
	return b, nil
}

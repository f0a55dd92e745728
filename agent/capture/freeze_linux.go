package capture

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/loupe-dev/loupe/runtime"
)

// freezeTimeout bounds the wait for the kernel to report the cgroup frozen.
const freezeTimeout = 5 * time.Second

// freeze freezes the container's cgroup v2 (cgroup.freeze) and sets col.thaw.
// A failure is recorded in the manifest and the capture goes on unfrozen.
func (col *collector) freeze() {
	fr := &col.m.Freeze
	fr.Requested = true
	col.thaw = func() {}
	v2, err := runtime.CgroupV2Root(col.env.HostRoot)
	if err != nil || col.c.CgroupPath == "" || col.c.CgroupPath == "/" {
		fr.Error = fmt.Sprintf("no cgroup v2 directory for the container: %v", err)
		col.warnf("--freeze: %s; captured unfrozen", fr.Error)
		return
	}
	dir := filepath.Join(v2, filepath.Clean("/"+col.c.CgroupPath))
	fr.Cgroup = col.c.CgroupPath
	ctl := filepath.Join(dir, "cgroup.freeze")
	if err := os.WriteFile(ctl, []byte("1"), 0); err != nil {
		fr.Error = fmt.Sprintf("write %s: %v", ctl, err)
		col.warnf("--freeze: %s; captured unfrozen", fr.Error)
		return
	}
	start := time.Now()
	col.thaw = func() {
		if err := os.WriteFile(ctl, []byte("0"), 0); err != nil {
			fr.Error = strings.TrimPrefix(fr.Error+"; ", "; ") + fmt.Sprintf("thaw: write %s: %v", ctl, err)
		}
		fr.ThawedAt = time.Now().UTC()
		fr.DurationMS = fr.ThawedAt.Sub(fr.FrozenAt).Milliseconds()
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err == nil && strings.Contains(string(b), "frozen 1") {
			fr.FrozenAt = time.Now().UTC()
			return
		}
		if time.Since(start) > freezeTimeout {
			fr.FrozenAt = start.UTC()
			fr.Error = fmt.Sprintf("cgroup not reported frozen within %s", freezeTimeout)
			col.warnf("--freeze: %s", fr.Error)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// thawNow thaws a frozen cgroup once; later calls do nothing.
func (col *collector) thawNow() {
	if col.thaw != nil {
		col.thaw()
		col.thaw = nil
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

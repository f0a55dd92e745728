package capture

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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
	record, err := journalFreeze(col.env.FreezeJournal, ctl)
	if err != nil {
		// Without the record a crash would leave the container frozen: do not freeze.
		fr.Error = err.Error()
		col.warnf("--freeze: %s; captured unfrozen", fr.Error)
		return
	}
	if err := os.WriteFile(ctl, []byte("1"), 0); err != nil {
		os.Remove(record)
		fr.Error = fmt.Sprintf("write %s: %v", ctl, err)
		col.warnf("--freeze: %s; captured unfrozen", fr.Error)
		return
	}
	start := time.Now()
	col.thaw = func() {
		if err := os.WriteFile(ctl, []byte("0"), 0); err != nil {
			fr.Error = strings.TrimPrefix(fr.Error+"; ", "; ") + fmt.Sprintf("thaw: write %s: %v", ctl, err)
		} else if record != "" {
			os.Remove(record)
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

// journalFreeze records, before the freeze, the cgroup.freeze file about to
// be written, in dir (created). It returns the record's path ("" when dir is
// empty).
func journalFreeze(dir, ctl string) (string, error) {
	if dir == "" {
		return "", nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("freeze journal: %w", err)
	}
	sum := sha256.Sum256([]byte(ctl))
	record := filepath.Join(dir, hex.EncodeToString(sum[:8])+".frozen")
	if err := writeFileSync(record, []byte(ctl+"\n")); err != nil {
		return "", fmt.Errorf("freeze journal: %w", err)
	}
	return record, nil
}

// writeFileSync writes a small file and syncs it, so the record survives a
// crash of the node as well as of the agent.
func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ThawLeftovers thaws the cgroups that a previous run of the agent froze for
// a capture and did not thaw (it was killed), as recorded in journal, and
// removes the records. Only cgroup.freeze files under the host's cgroup v2
// root are written; a cgroup that no longer exists is forgotten. It returns
// the cgroups thawed.
func ThawLeftovers(journal, hostRoot string) ([]string, error) {
	entries, err := os.ReadDir(journal)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("freeze journal: %w", err)
	}
	v2, v2err := runtime.CgroupV2Root(hostRoot)
	var thawed []string
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".frozen") {
			continue
		}
		record := filepath.Join(journal, e.Name())
		b, err := os.ReadFile(record)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ctl := strings.TrimSpace(string(b))
		if v2err != nil {
			errs = append(errs, fmt.Errorf("thaw %s: %w", ctl, v2err))
			continue
		}
		if filepath.Clean(ctl) != ctl || filepath.Base(ctl) != "cgroup.freeze" || !strings.HasPrefix(ctl, filepath.Clean(v2)+"/") {
			errs = append(errs, fmt.Errorf("freeze journal %s: %q is not a cgroup.freeze file under %s; record removed", record, ctl, v2))
			os.Remove(record)
			continue
		}
		switch err := os.WriteFile(ctl, []byte("0"), 0); {
		case errors.Is(err, fs.ErrNotExist): // the container is gone
		case err != nil:
			errs = append(errs, fmt.Errorf("thaw %s: %w", ctl, err))
			continue
		default:
			thawed = append(thawed, strings.TrimPrefix(filepath.Dir(ctl), filepath.Clean(v2)))
		}
		os.Remove(record)
	}
	return thawed, errors.Join(errs...)
}

// thawNow thaws a frozen cgroup once; later calls do nothing.
func (col *collector) thawNow() {
	if col.thaw != nil {
		col.thaw()
		col.thaw = nil
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

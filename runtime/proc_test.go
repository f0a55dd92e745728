package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hybridCgroup = `12:pids:/loupe-testenv/e1/podX/abc
11:memory:/loupe-testenv/e1/podX/abc
4:cpu,cpuacct:/loupe-testenv/e1/podX/abc
1:name=systemd:/loupe-testenv/e1/podX/abc
0::/loupe-testenv/e1/podX/abc
`

func TestParseProcCgroup(t *testing.T) {
	pc, err := ParseProcCgroup([]byte(hybridCgroup))
	if err != nil || pc.Unified != "/loupe-testenv/e1/podX/abc" || pc.V1["cpuacct"] != pc.Unified || pc.V1["name=systemd"] == "" {
		t.Fatalf("%+v %v", pc, err)
	}
	pc, err = ParseProcCgroup([]byte("0::/\n"))
	if err != nil || pc.Unified != "/" || len(pc.V1) != 0 {
		t.Fatalf("pure v2: %+v %v", pc, err)
	}
	// Paths may contain colons.
	pc, err = ParseProcCgroup([]byte("0::/a:b\n"))
	if err != nil || pc.Unified != "/a:b" {
		t.Fatalf("colon: %+v %v", pc, err)
	}
	for _, bad := range []string{"garbage", "x::/a", "0::relative", "0::/a\n0::/b", strings.Repeat("1:cpu:/a\n", 10000)} {
		if _, err := ParseProcCgroup([]byte(bad)); err == nil {
			t.Errorf("accepted %.40q", bad)
		}
	}
}

func FuzzParseProcCgroup(f *testing.F) {
	f.Add([]byte(hybridCgroup))
	f.Add([]byte("0::/\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pc, err := ParseProcCgroup(data)
		if err == nil && pc.Unified != "" && !strings.HasPrefix(pc.Unified, "/") {
			t.Fatalf("relative unified path %q", pc.Unified)
		}
	})
}

// fakeProc writes <root>/proc/<pid>/cgroup.
func fakeProc(t *testing.T, root, pid, content string) {
	t.Helper()
	d := filepath.Join(root, "proc", pid)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "cgroup"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestStoreLookupsAndEvents(t *testing.T) {
	root := t.TempDir()
	s := NewStore(root)
	a := &Container{ID: "a", State: StateRunning, PID: 100, CgroupPath: "/k/pod1/a", CgroupID: 11, MountNS: 21}
	b := &Container{ID: "b", State: StateCreated}
	s.Put(a)
	s.Put(b)
	if c, ok := s.ByCgroupID(11); !ok || c != a {
		t.Error("by cgroup id")
	}
	if c, ok := s.ByMountNS(21); !ok || c != a {
		t.Error("by mount ns")
	}
	if c, ok := s.ByPID(100); !ok || c != a {
		t.Error("by init pid")
	}
	// A child process: in the container's cgroup or a sub-cgroup of it.
	fakeProc(t, root, "200", "0::/k/pod1/a\n")
	fakeProc(t, root, "201", "0::/k/pod1/a/sub/deeper\n")
	fakeProc(t, root, "202", "0::/k/pod1\n")
	fakeProc(t, root, "203", "garbage")
	for pid, want := range map[int]bool{200: true, 201: true, 202: false, 203: false, 204: false, -1: false} {
		if _, ok := s.ByPID(pid); ok != want {
			t.Errorf("ByPID(%d) = %v, want %v", pid, ok, want)
		}
	}
	// Replacing an entry re-indexes it; a stopped one leaves the indexes.
	a2 := &Container{ID: "a", State: StateStopped, CgroupID: 11}
	if prev := s.Put(a2); prev != a {
		t.Error("Put should return the previous entry")
	}
	if _, ok := s.ByCgroupID(11); ok {
		t.Error("stopped container found by cgroup id")
	}
	if got := s.List(); len(got) != 2 || got[0].ID != "a" || got[1] != b {
		t.Errorf("list %v", got)
	}
	if s.Delete("a") != a2 || s.Delete("a") != nil || s.Len() != 1 {
		t.Error("delete")
	}

	ch, cancel := s.Subscribe(1)
	drops := 0
	s.OnDrop = func() { drops++ }
	s.Publish(Event{Type: EventStart, Container: b})
	s.Publish(Event{Type: EventStop, Container: b}) // buffer full: dropped
	if ev := <-ch; ev.Type != EventStart {
		t.Errorf("got %v", ev.Type)
	}
	if s.Dropped() != 1 || drops != 1 {
		t.Errorf("dropped %d (%d)", s.Dropped(), drops)
	}
	cancel()
	cancel()
	if _, ok := <-ch; ok {
		t.Error("channel open after cancel")
	}
	s.Publish(Event{Type: EventStart}) // no subscribers: no panic
}

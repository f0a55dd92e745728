package capture_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-dev/loupe/agent/capture"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/runtime"
	"github.com/loupe-dev/loupe/runtime/containerd"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// bundleFiles reads every entry of a bundle.
func bundleFiles(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = data
	}
}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("nothing listens on %s", addr)
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// ctxSwitches sums the context switches of every thread of pid: a Go
// program with a 100 ms ticker makes them grow several times a second.
func ctxSwitches(t *testing.T, pid int) int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				x, _ := strconv.Atoi(strings.TrimSpace(v))
				n += x
			}
		}
	}
	return n
}

func startRegistry(t *testing.T, env *testenv.Env) *containerd.Registry {
	t.Helper()
	reg := containerd.New(containerd.Config{Socket: env.Address(), Namespace: env.Namespace(), StateDir: env.State()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); reg.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	if err := reg.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	return reg
}

func runningContainer(t *testing.T, reg *containerd.Registry, id string) *runtime.Container {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, ok := reg.Get(id); ok && c.State == runtime.StateRunning && c.Rootfs.Upper != "" && c.CgroupPath != "" {
			return c
		}
	}
	t.Fatalf("container %s not registered as running", id)
	return nil
}

// waitPIDs waits until the container's cgroup holds n processes and returns them.
func waitPIDs(t *testing.T, c *runtime.Container, n int) []int {
	t.Helper()
	v2, err := runtime.CgroupV2Root("/")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(v2, c.CgroupPath, "cgroup.procs"))
		pids = pids[:0]
		for _, f := range strings.Fields(string(b)) {
			p, _ := strconv.Atoi(f)
			pids = append(pids, p)
		}
		if len(pids) >= n {
			return pids
		}
	}
	t.Fatalf("container has processes %v, want %d", pids, n)
	return nil
}

// TestCaptureDistroless captures a real CRI container of a distroless image
// after a binary was dropped into it and started as a second process, with
// hostile entries in its upper dir, frozen during collection.
func TestCaptureDistroless(t *testing.T) {
	env := testenv.StartContainerd(t)
	img := env.Image(t, testenv.Distroless)
	reg := startRegistry(t, env)
	addr := testenv.FreeAddr(t)
	pod := env.RunPod(t, testenv.PodConfig{Name: "api-7d9f", Namespace: "payments"})
	app := pod.Start(t, testenv.ContainerConfig{Name: "app", Image: img, Env: map[string]string{"LOUPE_TESTAPP_LISTEN": addr, "API_TOKEN": "s3cret"}})
	c := runningContainer(t, reg, app.ID())
	root := fmt.Sprintf("/proc/%d/root", app.PID(t))

	appBin, err := os.ReadFile(root + "/app")
	if err != nil {
		t.Fatal(err)
	}
	// Runtime changes, hostile ones included.
	must := func(err error) {
		if err != nil {
			panic(err) // also from subtests
		}
	}
	must(os.WriteFile(root+"/tmp/dropped", appBin, 0o755))
	must(os.Symlink("/etc/shadow", root+"/tmp/shadow-link"))    // absolute: must not resolve on the host
	must(os.Symlink("../../../../../etc", root+"/tmp/up-link")) // climbing
	must(syscall.Mkfifo(root+"/tmp/fifo", 0o644))               // opening it would block
	big := bytes.Repeat([]byte("x"), 6<<20)
	must(os.WriteFile(root+"/tmp/big", big, 0o644)) // over the per-file cap below
	must(os.WriteFile(root+"/etc/passwd", []byte("root:x:0:0::/root:/bin/sh\n"), 0o644))
	must(os.Remove(root + "/etc/os-release")) // a whiteout
	app.RequestStart(t, "/tmp/dropped")
	pids := waitPIDs(t, c, 2)
	waitTCP(t, addr)

	timeline := []*loupev1.Finding{{Id: "0190c0de-0000-7000-8000-000000000001", Time: timestamppb.Now(), Kind: loupev1.Kind_KIND_EXEC_FAILED,
		Summary: "execve /bin/sh failed", Process: &loupev1.Process{Filename: "/bin/sh", Errno: 2}}}
	req := capture.Request{ID: "0190c0de-0000-7000-8000-0000000000ca", RequestedBy: "CN=loupe-admin", Reason: "INC-1: shell attempt",
		RequestedAt: time.Now(), Options: capture.Options{Paths: []string{"/etc/*"}, Freeze: true}, MaxFileBytes: 4 << 20, Timeline: timeline}
	var frozenDelta = -1
	var buf bytes.Buffer
	journal := filepath.Join(t.TempDir(), "frozen")
	var recorded []os.DirEntry
	m, err := capture.Collect(context.Background(), c, req, capture.Env{HostRoot: "/", ContainerdState: env.State(), Node: "n1", AgentVersion: "test", FreezeJournal: journal}, &buf,
		func(stage string) {
			if stage == "processes" { // the cgroup is frozen now: nobody may run
				recorded, _ = os.ReadDir(journal)
				a := ctxSwitches(t, pids[0]) + ctxSwitches(t, pids[1])
				time.Sleep(400 * time.Millisecond)
				frozenDelta = ctxSwitches(t, pids[0]) + ctxSwitches(t, pids[1]) - a
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(journal); len(recorded) != 1 || len(left) != 0 {
		t.Errorf("freeze journal: %d records while frozen (want 1), %d after the thaw (want 0)", len(recorded), len(left))
	}
	after := ctxSwitches(t, pids[0])
	time.Sleep(400 * time.Millisecond)
	if ctxSwitches(t, pids[0]) == after {
		t.Error("the app made no progress after the capture: not thawed?")
	}
	if frozenDelta != 0 {
		t.Errorf("processes made %d context switches while frozen, want 0", frozenDelta)
	}
	if m.Freeze.Error != "" || m.Freeze.DurationMS < 400 {
		t.Errorf("freeze record %+v: want no error and ≥ 400 ms", m.Freeze)
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/fs/cgroup/unified%s/cgroup.freeze", c.CgroupPath))
	if err == nil && strings.TrimSpace(string(b)) != "0" {
		t.Errorf("cgroup.freeze is %q after the capture", b)
	}

	res, err := capture.Verify(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if res.Manifest.Requester.Reason != req.Reason || res.Manifest.Container.Pod != "api-7d9f" || res.Manifest.Node != "n1" {
		t.Errorf("manifest %+v", res.Manifest)
	}
	files := bundleFiles(t, buf.Bytes())

	var upper []capture.FileEntry
	must(json.Unmarshal(files["files.json"], &upper))
	byPath := map[string]capture.FileEntry{}
	for _, e := range upper {
		byPath[e.Path] = e
	}
	if e := byPath["/tmp/dropped"]; e.SHA256 != sha(appBin) || e.Change != "added" || e.Mode != 0o755 || string(files[e.Content]) != string(appBin) {
		t.Errorf("dropped binary: %+v", e)
	}
	if e := byPath["/tmp/shadow-link"]; e.Type != "symlink" || e.LinkTarget != "/etc/shadow" || e.Content != "" {
		t.Errorf("absolute symlink: %+v", e)
	}
	if e := byPath["/tmp/up-link"]; e.Type != "symlink" || e.Content != "" {
		t.Errorf("climbing symlink: %+v", e)
	}
	if e := byPath["/tmp/fifo"]; e.Type != "fifo" || e.Content != "" {
		t.Errorf("fifo: %+v", e)
	}
	if e := byPath["/tmp/big"]; e.SHA256 != sha(big) || e.Content != "" || !strings.Contains(e.ContentOmitted, "per-file cap") {
		t.Errorf("big file: %+v", e)
	}
	if e := byPath["/etc/passwd"]; e.Change != "modified" {
		t.Errorf("/etc/passwd: %+v", e)
	}
	if e := byPath["/etc/os-release"]; e.Type != "whiteout" || e.Change != "deleted" {
		t.Errorf("/etc/os-release: %+v", e)
	}
	var merged []capture.FileEntry
	must(json.Unmarshal(files["merged.json"], &merged))
	layers := map[string]string{}
	for _, e := range merged {
		layers[e.Path] = e.Layer
	}
	if layers["/etc/passwd"] != "upper" || !strings.HasPrefix(layers["/etc/group"], "sha256:") || layers["/etc/os-release"] != "" {
		t.Errorf("merged view layers: %v", layers)
	}

	var ps capture.Processes
	must(json.Unmarshal(files["processes.json"], &ps))
	var main, dropped *capture.Process
	for i := range ps.Processes {
		switch p := &ps.Processes[i]; p.Exe {
		case "/app":
			main = p
		case "/tmp/dropped":
			dropped = p
		}
	}
	if main == nil || dropped == nil {
		t.Fatalf("processes: %+v", ps.Processes)
	}
	if main.ExeSHA256 != sha(appBin) || main.ExeFromUpper || main.PID != app.PID(t) || main.Env != nil {
		t.Errorf("app process: exe %s sha %s from upper %v pid %d env %v", main.Exe, main.ExeSHA256, main.ExeFromUpper, main.PID, main.Env)
	}
	if dropped.ExeSHA256 != sha(appBin) || !dropped.ExeFromUpper || dropped.PPID != main.PID {
		t.Errorf("dropped process: sha %s from upper %v ppid %d", dropped.ExeSHA256, dropped.ExeFromUpper, dropped.PPID)
	}
	if len(main.Maps) == 0 || len(main.FDs) == 0 || main.CapEff == "" || main.StartTime.IsZero() || len(main.UID) != 4 {
		t.Errorf("app process record incomplete: %d maps, %d fds, capeff %q, start %s, uid %v", len(main.Maps), len(main.FDs), main.CapEff, main.StartTime, main.UID)
	}
	listening := false
	for _, s := range ps.Sockets {
		if s.Proto == "tcp" && s.Local == addr && s.State == "LISTEN" && len(s.PIDs) == 1 && s.PIDs[0] == main.PID {
			listening = true
		}
	}
	if !listening {
		t.Errorf("no LISTEN socket %s held by the app in %+v", addr, ps.Sockets)
	}
	if !strings.Contains(string(files["timeline.jsonl"]), "execve /bin/sh failed") {
		t.Errorf("timeline: %s", files["timeline.jsonl"])
	}
	var rec struct {
		Container runtime.Container              `json:"container"`
		Mounts    []struct{ Destination string } `json:"mounts"`
	}
	must(json.Unmarshal(files["container.json"], &rec))
	if rec.Container.Image != img || len(rec.Mounts) == 0 {
		t.Errorf("container record: image %q, %d mounts", rec.Container.Image, len(rec.Mounts))
	}
	if strings.Contains(buf.String(), "s3cret") {
		t.Error("the environment leaked into the bundle without --env")
	}

	t.Run("sha256sum -c on the extracted bundle", func(t *testing.T) {
		dir := t.TempDir()
		for name, data := range files {
			must(os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755))
			must(os.WriteFile(filepath.Join(dir, name), data, 0o644))
		}
		cmd := exec.Command("sha256sum", "--quiet", "-c", capture.ChecksumsName)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sha256sum -c: %v\n%s", err, out)
		}
		must(os.WriteFile(filepath.Join(dir, "upper/tmp/dropped"), []byte("tampered"), 0o644))
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("sha256sum -c passed after tampering:\n%s", out)
		}
	})

	t.Run("one changed byte fails verification", func(t *testing.T) {
		for _, off := range []int{buf.Len() / 3, buf.Len() / 2, buf.Len() - 20} {
			b := bytes.Clone(buf.Bytes())
			b[off] ^= 0x01
			if _, err := capture.Verify(bytes.NewReader(b)); !errors.Is(err, capture.ErrVerify) {
				t.Errorf("byte %d of %d changed: verify returned %v", off, len(b), err)
			}
		}
	})

	t.Run("environment with --env; a process gone mid-capture", func(t *testing.T) {
		req := req
		req.Options = capture.Options{IncludeEnv: true}
		var out bytes.Buffer
		_, err := capture.Collect(context.Background(), c, req, capture.Env{HostRoot: "/", ContainerdState: env.State()}, &out, nil)
		if err != nil {
			t.Fatal(err)
		}
		var ps capture.Processes
		must(json.Unmarshal(bundleFiles(t, out.Bytes())["processes.json"], &ps))
		found := false
		for _, p := range ps.Processes {
			for _, e := range p.Env {
				found = found || e == "API_TOKEN=s3cret"
			}
		}
		if !found {
			t.Error("--env: API_TOKEN not in any process's environment")
		}
	})

	t.Run("caps and refusals", func(t *testing.T) {
		for _, r := range []capture.Request{
			{Reason: ""},
			{Reason: "x", Options: capture.Options{Paths: []string{"etc/*"}}},
			{Reason: "x", Options: capture.Options{Paths: []string{"/../etc"}}},
			{Reason: "x", MaxFileBytes: capture.HardMaxFileBytes + 1},
		} {
			if _, err := capture.Collect(context.Background(), c, r, capture.Env{HostRoot: "/"}, io.Discard, nil); !errors.Is(err, capture.ErrInvalid) {
				t.Errorf("request %+v: %v, want ErrInvalid", r, err)
			}
		}
		small := req
		small.Options = capture.Options{}
		small.MaxTotalBytes = 1000
		var out bytes.Buffer
		m, err := capture.Collect(context.Background(), c, small, capture.Env{HostRoot: "/"}, &out, nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.Counts.ContentBytes > 1000 {
			t.Errorf("content %d bytes over the total cap 1000", m.Counts.ContentBytes)
		}
	})
}

// TestThawLeftovers is the restart of an agent that was killed while a
// container was frozen for a capture: the journal names the cgroup, the new
// agent thaws it. Hostile or stale records are dropped without a write.
func TestThawLeftovers(t *testing.T) {
	testenv.RequireRoot(t)
	v2, err := runtime.CgroupV2Root("/")
	if err != nil {
		testenv.Unavailable(t, "no cgroup v2: "+err.Error())
	}
	cg := filepath.Join(v2, fmt.Sprintf("loupe-thaw-test-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(cg, "cgroup.freeze"), []byte("0"), 0)
		sleeper.Process.Kill()
		sleeper.Wait()
		os.Remove(cg)
	})
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(sleeper.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	// What the killed agent left: the journal record and a frozen cgroup.
	journal := t.TempDir()
	ctl := filepath.Join(cg, "cgroup.freeze")
	if err := os.WriteFile(filepath.Join(journal, "a.frozen"), []byte(ctl+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ctl, []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	// A record pointing outside the cgroup tree, and one of a container gone since.
	outside := filepath.Join(t.TempDir(), "cgroup.freeze")
	os.WriteFile(outside, []byte("1"), 0o600)
	os.WriteFile(filepath.Join(journal, "b.frozen"), []byte(outside+"\n"), 0o600)
	os.WriteFile(filepath.Join(journal, "c.frozen"), []byte(filepath.Join(v2, "loupe-gone-xyz", "cgroup.freeze")+"\n"), 0o600)

	thawed, err := capture.ThawLeftovers(journal, "/")
	if err == nil || !strings.Contains(err.Error(), "not a cgroup.freeze file") {
		t.Errorf("hostile record: err %v, want it named", err)
	}
	if want := strings.TrimPrefix(cg, v2); len(thawed) != 1 || thawed[0] != want {
		t.Errorf("thawed %q, want [%s]", thawed, want)
	}
	if b, _ := os.ReadFile(ctl); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("cgroup.freeze is %q after ThawLeftovers", b)
	}
	if b, _ := os.ReadFile(outside); string(b) != "1" {
		t.Errorf("a file outside the cgroup tree was written: %q", b)
	}
	if left, _ := os.ReadDir(journal); len(left) != 0 {
		t.Errorf("journal records left: %v", left)
	}
	if thawed, err := capture.ThawLeftovers(filepath.Join(journal, "none"), "/"); err != nil || len(thawed) != 0 {
		t.Errorf("no journal: %v %v", thawed, err)
	}
}

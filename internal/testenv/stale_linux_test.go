package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStaleEnvironmentIsCleanedUp kills a test process that owns a running
// containerd with a pod (as a CI timeout or kill -9 would) and checks that
// the next start removes everything it left: daemon, shim, container
// process, mounts, cgroups and files.
func TestStaleEnvironmentIsCleanedUp(t *testing.T) {
	if os.Getenv("LOUPE_TESTENV_CHILD") == "1" {
		childOwner(t)
		return
	}
	RequireRoot(t)
	RequireCommand(t, "containerd")
	RequireCommand(t, "runc")
	cmd := exec.Command(os.Args[0], "-test.run=^TestStaleEnvironmentIsCleanedUp$", "-test.v")
	cmd.Env = append(os.Environ(), "LOUPE_TESTENV_CHILD=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var dir string
	var appPID int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "CHILD-READY %s %d", &dir, &appPID); err == nil {
			break
		}
	}
	if dir == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("child did not start its environment")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	daemon, _ := os.ReadFile(filepath.Join(dir, "containerd.pid"))
	daemonPID, _ := strconv.Atoi(strings.TrimSpace(string(daemon)))

	cleanupStale()

	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("stale dir %s still there: %v", dir, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range []int{daemonPID, appPID} {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("process %d of the stale environment still alive", pid)
		}
	}
	for _, h := range cgroupHierarchies() {
		if _, err := os.Stat(filepath.Join(h, cgroupRoot, filepath.Base(dir))); !os.IsNotExist(err) {
			t.Errorf("stale cgroup left in %s", h)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), dir) {
		t.Error("stale mounts left")
	}
}

// alive reports whether pid runs (zombies count as dead).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

func childOwner(t *testing.T) {
	env := StartContainerd(t)
	pod := env.RunPod(t, PodConfig{Name: "stale"})
	ctr := pod.Start(t, ContainerConfig{Name: "app", Image: env.Image(t, Distroless)})
	fmt.Printf("CHILD-READY %s %d\n", env.Dir(), ctr.PID(t))
	time.Sleep(time.Minute) // killed by the parent
}

package testenv_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/loupe-dev/loupe/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestDistrolessPodExec(t *testing.T) {
	env := testenv.StartContainerd(t)
	ref := env.Image(t, testenv.Distroless)
	pod := env.RunPod(t, testenv.PodConfig{Name: "api-1", Namespace: "payments"})
	ctr := pod.Start(t, testenv.ContainerConfig{Name: "app", Image: ref})
	if ctr.PID(t) <= 1 {
		t.Fatalf("bad pid %d", ctr.PID(t))
	}
	_, err := ctr.Exec(t, []string{"/bin/sh", "-c", "id"}, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), `"/bin/sh"`) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("ExecSync /bin/sh on distroless: want a missing-file error naming /bin/sh, got %v", err)
	}
	// The app exists, so running it (it exits at once with "exit 3") works.
	res, err := ctr.Exec(t, []string{"/app", "exit", "3"}, 5*time.Second)
	if err != nil || res.ExitCode != 3 {
		t.Fatalf("ExecSync /app exit 3: res %+v err %v", res, err)
	}
	// The app process itself tries execve("/bin/sh") on request and logs ENOENT.
	ctr.RequestExec(t, "/bin/sh", "-c", "id")
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(ctr.Logs(t), "errno=2") }, "app to log execve ENOENT")
}

func TestDebianLikeAndBusybox(t *testing.T) {
	env := testenv.StartContainerd(t)
	pod := env.RunPod(t, testenv.PodConfig{Name: "tools", Namespace: "ops"})
	deb := pod.Start(t, testenv.ContainerConfig{Name: "deb", Image: env.Image(t, testenv.DebianLike)})
	bb := pod.Start(t, testenv.ContainerConfig{Name: "bb", Image: env.Image(t, testenv.Busybox)})
	for _, c := range []*testenv.Container{deb, bb} {
		res, err := c.Exec(t, []string{"/bin/sh", "-c", "id -u; cat /etc/os-release >/dev/null && echo ok"}, 5*time.Second)
		if c == bb {
			res, err = c.Exec(t, []string{"/bin/sh", "-c", "id -u; echo ok"}, 5*time.Second)
		}
		if err != nil || res.ExitCode != 0 || string(res.Stdout) != "0\nok\n" {
			t.Fatalf("%s: exec sh: res %+v err %v", c.Name(), res, err)
		}
	}
	// The app in the debian-like container replaces itself with a shell that exits.
	deb.RequestSpawn(t, "/bin/sh", "-c", "echo spawned-$((40+2))")
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(deb.Logs(t), "spawned-42") }, "spawned shell output")
	bb.Stop(t)
	if st := bb.Status(t).Status; st.State.String() != "CONTAINER_EXITED" || st.ExitCode != 0 {
		t.Fatalf("busybox after stop: state %v exit %d (want a clean exit on SIGTERM)", st.State, st.ExitCode)
	}
}

func TestRestartKeepsContainers(t *testing.T) {
	env := testenv.StartContainerd(t)
	pod := env.RunPod(t, testenv.PodConfig{Name: "survivor"})
	ctr := pod.Start(t, testenv.ContainerConfig{Name: "app", Image: env.Image(t, testenv.Distroless)})
	pid := ctr.PID(t)
	env.Restart(t)
	if got := ctr.PID(t); got != pid {
		t.Fatalf("pid after restart %d, want %d", got, pid)
	}
	res, err := ctr.Exec(t, []string{"/app", "exit", "0"}, 5*time.Second)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec after restart: %+v %v", res, err)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

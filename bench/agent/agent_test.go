// Package agent benchmarks the node agent as deployed: its idle cost with 30
// running containers, and the latency from an exec in a container to the
// finding being queryable at the collector. Run with:
//
//	LOUPE_BENCH=1 go test -count=1 -v -run TestAgentBench ./bench/agent
//
// (as root; it starts a private containerd, a collector and an agent). The
// figures are printed as a table for docs/performance.md.
package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestAgentBench(t *testing.T) {
	if os.Getenv("LOUPE_BENCH") != "1" {
		t.Skip("benchmark: run with LOUPE_BENCH=1 (see bench/README.md)")
	}
	const containers, execs = 30, 100
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/loupe-agent", "./cmd/loupe-collector")
	build.Dir, build.Env = "../..", append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env := testenv.StartContainerd(t)
	distroless, debian := env.Image(t, testenv.Distroless), env.Image(t, testenv.DebianLike)
	var target *testenv.Container
	for i := 0; i < containers; i++ {
		pod := env.RunPod(t, testenv.PodConfig{Name: fmt.Sprintf("idle-%02d", i), Namespace: "bench"})
		img := distroless
		if i == 0 {
			img = debian
		}
		c := pod.Start(t, testenv.ContainerConfig{Name: "app", Image: img})
		if i == 0 {
			target = c
		}
	}

	grpcAddr, httpAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	col := startProc(t, filepath.Join(bin, "loupe-collector"), "--insecure", "--grpc-listen", grpcAddr, "--http-listen", "", "--db", "sqlite://"+filepath.Join(t.TempDir(), "c.db"))
	_ = col
	agent := startProc(t, filepath.Join(bin, "loupe-agent"), "--insecure", "--collector", grpcAddr, "--node-name", "bench",
		"--containerd-socket", env.Address(), "--containerd-state", env.State(), "--state-dir", t.TempDir(), "--http-listen", httpAddr)
	testenv.WaitHTTP200(t, "http://"+httpAddr+"/readyz", 60*time.Second, nil)
	// Let the start-up scans of the 30 containers finish.
	time.Sleep(10 * time.Second)

	// Idle cost: CPU time of the agent over a window, against containerd's own in the same window.
	ctrdPID := daemonPID(t, env.Address())
	window := 30 * time.Second
	a0, c0 := cpuTicks(t, agent.Process.Pid), cpuTicks(t, ctrdPID)
	time.Sleep(window)
	a1, c1 := cpuTicks(t, agent.Process.Pid), cpuTicks(t, ctrdPID)
	hz := 100.0 // USER_HZ on Linux
	agentCPU := float64(a1-a0) / hz / window.Seconds() * 100
	ctrdCPU := float64(c1-c0) / hz / window.Seconds() * 100
	rss := rssMiB(t, agent.Process.Pid)

	// Exec → queryable latency, against the ExecSync call itself.
	conn, err := collector.Dial(context.Background(), grpcAddr, tlsutil.ClientOptions{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := loupev1.NewCollectorClient(conn)
	var lat, execDur []time.Duration
	for i := 0; i < execs; i++ {
		marker := fmt.Sprintf("bench-%d-%d", i, time.Now().UnixNano())
		start := time.Now()
		if _, err := target.Exec(t, []string{"/bin/sh", "-c", "true " + marker}, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		execDur = append(execDur, time.Since(start))
		for {
			if found(t, client, marker) {
				lat = append(lat, time.Since(start))
				break
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("exec %d not queryable after 30s", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	p50, p99 := pct(lat, 50), pct(lat, 99)
	e50 := pct(execDur, 50)
	fmt.Printf("\n| measure | value | baseline (same run) | ratio |\n|---|---|---|---|\n")
	fmt.Printf("| agent CPU, idle, %d containers | %.2f %% of a core | containerd %.2f %% | %.2f |\n", containers, agentCPU, ctrdCPU, agentCPU/max(ctrdCPU, 0.01))
	fmt.Printf("| agent RSS, idle | %.1f MiB | | |\n", rss)
	fmt.Printf("| exec → queryable p50 | %s | ExecSync p50 %s | %.2f |\n", p50.Round(time.Millisecond), e50.Round(time.Millisecond), float64(p50)/float64(e50))
	fmt.Printf("| exec → queryable p99 | %s | | |\n", p99.Round(time.Millisecond))
	if lost := metric(t, "http://"+httpAddr+"/metrics", "loupe_agent_bpf_events_lost_total"); lost != "0" {
		t.Errorf("events lost: %s", lost)
	}
}

func found(t *testing.T, c loupev1.CollectorClient, marker string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.Query(ctx, &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_SHELL_EXEC}, Grep: marker, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	return err == nil && len(r.GetFindings()) > 0
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func cpuTicks(t *testing.T, pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return u + s
}

func rssMiB(t *testing.T, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// daemonPID finds the containerd serving sock.
func daemonPID(t *testing.T, sock string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.HasPrefix(string(b), "containerd\x00") && strings.Contains(string(b), filepath.Dir(sock)) {
			return pid
		}
	}
	t.Fatalf("containerd for %s not found", sock)
	return 0
}

func metric(t *testing.T, url, name string) string {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+" ") {
			return strings.TrimPrefix(l, name+" ")
		}
	}
	return ""
}

func startProc(t *testing.T, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	log, _ := os.Create(filepath.Join(t.TempDir(), filepath.Base(bin)+".log"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("%s:\n%s", bin, b)
		}
	})
	return cmd
}

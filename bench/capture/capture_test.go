// Package capture benchmarks `loupe capture` as deployed (CLI → collector →
// agent Control stream → bundle stored at the collector) on a container with
// 1,000 changed files (200 MB) in its upper dir and 50 processes, against
// `tar czf` of the same upper dir in the same run. Run with:
//
//	LOUPE_BENCH=1 go test -count=1 -v -timeout 20m -run TestCaptureBench ./bench/capture
//
// (as root; it starts a private containerd, a collector and an agent). The
// figures are printed as a table for docs/performance.md.
package capture

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/internal/tlsutil"
	"github.com/loupe-dev/loupe/runtime/containerd"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	files     = 1000
	fileBytes = 200_000 // 200 MB in all: half random, half text (compressible)
	processes = 50
	rounds    = 3
)

func TestCaptureBench(t *testing.T) {
	if os.Getenv("LOUPE_BENCH") != "1" {
		t.Skip("benchmark: run with LOUPE_BENCH=1")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/loupe-agent", "./cmd/loupe-collector", "./cmd/loupe")
	build.Dir, build.Env = "../..", append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env := testenv.StartContainerd(t)
	img := env.Image(t, testenv.Distroless)
	pod := env.RunPod(t, testenv.PodConfig{Name: "bench-0", Namespace: "bench"})
	app := pod.Start(t, testenv.ContainerConfig{Name: "app", Image: img})

	reg := containerd.New(containerd.Config{Socket: env.Address(), Namespace: env.Namespace(), StateDir: env.State()})
	rctx, rcancel := context.WithCancel(context.Background())
	defer rcancel()
	go reg.Run(rctx)
	var upper string
	for deadline := time.Now().Add(15 * time.Second); upper == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, ok := reg.Get(app.ID()); ok {
			upper = c.Rootfs.Upper
		}
	}
	if upper == "" {
		t.Fatal("no upper dir for the container")
	}

	grpcAddr, httpAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(rules, []byte("version: 1\nrules: []\ncapture:\n  enabled: true\n  namespaces: [bench]\n"), 0o644)
	startProc(t, filepath.Join(bin, "loupe-collector"), "--insecure", "--grpc-listen", grpcAddr, "--http-listen", "", "--db", "sqlite://"+filepath.Join(t.TempDir(), "c.db"))
	agent := startProc(t, filepath.Join(bin, "loupe-agent"), "--insecure", "--collector", grpcAddr, "--node-name", "bench", "--rules", rules,
		"--containerd-socket", env.Address(), "--containerd-state", env.State(), "--state-dir", t.TempDir(), "--http-listen", httpAddr)
	testenv.WaitHTTP200(t, "http://"+httpAddr+"/readyz", 60*time.Second, nil)
	waitFinding(t, grpcAddr, app.ID())

	// 1,000 changed files, 200 MB, written from the host into the container's root.
	root := fmt.Sprintf("/proc/%d/root", app.PID(t))
	if err := os.MkdirAll(root+"/data", 0o755); err != nil {
		t.Fatal(err)
	}
	line := "2026-12-05T12:00:00Z INFO request served path=/api/v1/pay status=200\n"
	text := []byte(strings.Repeat(line, fileBytes/2/len(line)+1))[:fileBytes/2]
	buf := make([]byte, fileBytes)
	for i := 0; i < files; i++ {
		rand.Read(buf[:fileBytes/2])
		copy(buf[fileBytes/2:], text)
		if err := os.WriteFile(fmt.Sprintf("%s/data/f%04d", root, i), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// 50 processes: the app and 49 more it starts.
	for n := 1; n < processes; n++ {
		app.RequestStart(t, "/app")
		for deadline := time.Now().Add(10 * time.Second); procsOf(t, app.PID(t)) < n+1; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("only %d processes", procsOf(t, app.PID(t)))
			}
		}
	}
	time.Sleep(2 * time.Second) // let the agent settle (exec findings of the 49 starts)

	out := t.TempDir()
	tarRun := func() time.Duration {
		start := time.Now()
		cmd := exec.Command("tar", "czf", filepath.Join(out, "baseline.tar.gz"), "-C", upper, ".")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tar: %v\n%s", err, b)
		}
		return time.Since(start)
	}
	tarRun() // warm the page cache for both
	var tars, caps []time.Duration
	var growth []float64
	var bundle int64
	for r := 0; r < rounds; r++ {
		tars = append(tars, tarRun())
		os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", agent.Process.Pid), []byte("5"), 0) // reset the peak RSS
		before := status(t, agent.Process.Pid, "VmRSS")
		start := time.Now()
		cmd := exec.Command(filepath.Join(bin, "loupe"), "capture", "--collector", grpcAddr, "--insecure", "--container", app.ID(),
			"--reason", "bench", "--max-total-bytes", "1073741824", "-o", "json")
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("capture: %v\n%s", err, b)
		}
		caps = append(caps, time.Since(start))
		growth = append(growth, status(t, agent.Process.Pid, "VmHWM")-before)
		var info loupev1.CaptureInfo
		if err := protojson.Unmarshal([]byte(strings.Trim(strings.TrimSpace(string(b)), "[]")), &info); err != nil {
			t.Fatalf("capture output: %v\n%s", err, b)
		}
		bundle = info.GetSize()
		if info.GetProcesses() != processes {
			t.Errorf("capture saw %d processes, want %d", info.GetProcesses(), processes)
		}
	}
	fi, _ := os.Stat(filepath.Join(out, "baseline.tar.gz"))
	mt, mc := median(tars), median(caps)
	fmt.Printf("\n| measure (median of %d) | value |\n|---|---|\n", rounds)
	fmt.Printf("| upper dir | %d files, %d MB; %d processes |\n", files, files*fileBytes/1_000_000, processes)
	fmt.Printf("| `tar czf` of the upper dir (baseline) | %.2f s, %.1f MB |\n", mt.Seconds(), float64(fi.Size())/1e6)
	fmt.Printf("| `loupe capture` (request → bundle stored at the collector) | %.2f s, %.1f MB |\n", mc.Seconds(), float64(bundle)/1e6)
	fmt.Printf("| ratio capture / tar | %.2f× |\n", mc.Seconds()/mt.Seconds())
	fmt.Printf("| agent peak RSS growth during a capture | %.1f MiB (max of rounds %.1f) |\n", medianF(growth), slices.Max(growth))
	if r := mc.Seconds() / mt.Seconds(); r > 1.5 {
		t.Logf("over target: capture takes %.2f× the tar baseline (target ≤ 1.5×)", r)
	}
	if g := slices.Max(growth); g > 64 {
		t.Logf("over target: agent RSS grew %.1f MiB (target ≤ 64 MiB)", g)
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianF(d []float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// procsOf counts the processes of the container of pid (its cgroup).
func procsOf(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			procs, _ := os.ReadFile("/sys/fs/cgroup/unified" + p + "/cgroup.procs")
			if len(procs) == 0 {
				procs, _ = os.ReadFile("/sys/fs/cgroup" + p + "/cgroup.procs")
			}
			return len(strings.Fields(string(procs)))
		}
	}
	return 0
}

// status reads a /proc/PID/status field in MiB.
func status(t *testing.T, pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func waitFinding(t *testing.T, addr, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := collector.Dial(ctx, addr, tlsutil.ClientOptions{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for ctx.Err() == nil {
		if st, err := loupev1.NewCollectorClient(conn).Query(ctx, &loupev1.QueryRequest{ContainerId: id, Limit: 1}); err == nil {
			if r, err := st.Recv(); err == nil && len(r.GetFindings()) > 0 {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("no finding for the container")
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

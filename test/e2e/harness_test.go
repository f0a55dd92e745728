package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds loupe-agent and loupe-collector once per test run.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "loupe-e2e-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/loupe-agent", "./cmd/loupe-collector", "./cmd/loupe")
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// proc is a daemon started by a test, with its output kept for failures.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  strings.Builder
	done chan struct{}
}

func start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() { p.cmd.Wait(); w.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("---- %s output ----\n%s", name, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// stack is a collector and an agent watching the harness's containerd.
type stack struct {
	env               *testenv.Env
	pki               *tlsutil.PKIFiles
	collectorAddr     string
	collectorHTTP     string
	agentHTTP         string
	dbDir, agentState string
	collector, agent  *proc
	node              string
	collectorExtra    []string // more loupe-collector flags
}

func newStack(t *testing.T, env *testenv.Env) *stack {
	t.Helper()
	s := &stack{env: env, node: "e2e-node", dbDir: t.TempDir(), agentState: t.TempDir()}
	s.init(t)
	s.startCollector(t)
	s.startAgent(t)
	return s
}

// init makes the PKI and picks the ports.
func (s *stack) init(t *testing.T) {
	t.Helper()
	var err error
	if s.pki, err = tlsutil.GeneratePKI(t.TempDir(), "loupe-admin", s.node); err != nil {
		t.Fatal(err)
	}
	s.collectorAddr, s.collectorHTTP, s.agentHTTP = testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
}

func (s *stack) startCollector(t *testing.T) {
	t.Helper()
	args := []string{"--grpc-listen", s.collectorAddr, "--http-listen", s.collectorHTTP, "--db", "sqlite://" + filepath.Join(s.dbDir, "c.db"),
		"--tls-cert", s.pki.ServerCert, "--tls-key", s.pki.ServerKey, "--client-ca", s.pki.CAFile}
	s.collector = start(t, "loupe-collector", filepath.Join(binaries(t), "loupe-collector"), append(args, s.collectorExtra...)...)
	waitHTTP(t, s.collector, "http://"+s.collectorHTTP+"/readyz", 20*time.Second)
}

func (s *stack) startAgent(t *testing.T, extra ...string) {
	t.Helper()
	c := s.pki.Clients[s.node]
	args := []string{"--collector", s.collectorAddr, "--ca", s.pki.CAFile, "--tls-cert", c[0], "--tls-key", c[1],
		"--collector-server-name", "localhost",
		"--containerd-socket", s.env.Address(), "--containerd-namespace", s.env.Namespace(), "--containerd-state", s.env.State(),
		"--state-dir", s.agentState, "--http-listen", s.agentHTTP, "--node-name", s.node}
	s.agent = start(t, "loupe-agent", filepath.Join(binaries(t), "loupe-agent"), append(args, extra...)...)
	waitHTTP(t, s.agent, "http://"+s.agentHTTP+"/readyz", 30*time.Second)
}

func waitHTTP(t *testing.T, p *proc, url string, d time.Duration) {
	t.Helper()
	testenv.WaitHTTP200(t, url, d, func() error {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready:\n%s", p.name, p.output())
		default:
			return nil
		}
	})
}

func httpGet(t *testing.T, url string) string { return testenv.HTTPGet(t, url) }

// query asks the collector with the admin certificate.
func (s *stack) query(t *testing.T, req *loupev1.QueryRequest) []*loupev1.Finding {
	t.Helper()
	admin := s.pki.Clients["loupe-admin"]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := collector.Dial(ctx, s.collectorAddr, tlsutil.ClientOptions{CertFile: admin[0], KeyFile: admin[1], CAFile: s.pki.CAFile, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if req.Limit == 0 {
		req.Limit = 100000
	}
	stream, err := loupev1.NewCollectorClient(conn).Query(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var out []*loupev1.Finding
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r.GetFindings()...)
	}
}

// waitFinding polls the collector until match holds for some finding.
func (s *stack) waitFinding(t *testing.T, what string, d time.Duration, req *loupev1.QueryRequest, match func(*loupev1.Finding) bool) *loupev1.Finding {
	t.Helper()
	deadline := time.Now().Add(d)
	var seen []*loupev1.Finding
	for time.Now().Before(deadline) {
		seen = s.query(t, req)
		for _, f := range seen {
			if match(f) {
				return f
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	var b strings.Builder
	for _, f := range seen {
		fmt.Fprintf(&b, "  %s %s %s/%s %s\n", f.GetKind().ShortName(), f.GetSeverity().ShortName(), f.GetContainer().GetNamespace(), f.GetContainer().GetPod(), f.GetSummary())
	}
	t.Fatalf("no finding for %s after %s; the collector has %d matching the query:\n%s", what, d, len(seen), b.String())
	return nil
}

func kinds(ks ...loupev1.Kind) *loupev1.QueryRequest { return &loupev1.QueryRequest{Kinds: ks} }

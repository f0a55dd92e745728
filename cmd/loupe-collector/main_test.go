package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/collector/store/storetest"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// TestBinary builds loupe-collector, runs it with mTLS, ingests through it,
// and stops it with SIGTERM: the exit must be clean and the data kept.
func TestBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "loupe-collector")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "loupe-collector ") {
		t.Fatalf("--version: %v %q", err, out)
	}
	// A database that does not answer: one line naming where and why.
	out, err := exec.Command(bin, "--db", "postgres://loupe@127.0.0.1:1/fleet", "--insecure", "--grpc-listen", "127.0.0.1:0", "--http-listen", "").CombinedOutput()
	if err == nil || !regexp.MustCompile(`(?m)^loupe-collector: open store: postgres store: cannot connect to 127.0.0.1:1/fleet as user "loupe": connection refused.*$`).Match(out) {
		t.Fatalf("unreachable postgres DSN: %v %q", err, out)
	}
	pki, err := tlsutil.GeneratePKI(filepath.Join(dir, "pki"), "node-a", collector.DefaultAdminCN)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "data", "collector.db")
	cmd := exec.Command(bin, "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--db", "sqlite://"+db,
		"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--client-ca", pki.CAFile, "--retention", "48h")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	addrRe := regexp.MustCompile(`msg="collector ready" grpc=(\S+)`)
	var addr string
	deadline := time.After(20 * time.Second)
	for addr == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("collector exited before it was ready")
			}
			if m := addrRe.FindStringSubmatch(l); m != nil {
				addr = m[1]
			}
		case <-deadline:
			t.Fatal("collector not ready after 20s")
		}
	}
	ctx := context.Background()
	conn, err := collector.Dial(ctx, addr, tlsutil.ClientOptions{CAFile: pki.CAFile, CertFile: pki.Clients["node-a"][0], KeyFile: pki.Clients["node-a"][1]})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := loupev1.NewCollectorClient(conn).Ingest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f := storetest.Finding(time.Now(), "node-a", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH)
	if err := stream.Send(&loupev1.IngestRequest{Sequence: 1, Node: "node-a", Findings: []*loupev1.Finding{f}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || resp.GetStored() != 1 {
		t.Fatalf("ack = %v, %v", resp, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("open stream on SIGTERM: %v", err)
	}
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, strings.Join(rest, "\n"))
	}
	if !strings.Contains(strings.Join(rest, "\n"), "collector stopped") {
		t.Fatalf("no clean stop in the log:\n%s", strings.Join(rest, "\n"))
	}
	if _, err := os.Stat(db); err != nil {
		t.Fatalf("database file: %v", err)
	}
}

package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/audit/audittest"
	"github.com/loupe-dev/loupe/internal/testenv"
)

// TestWhoRanAShell: a real CRI ExecSync of /bin/sh on a distroless pod
// fails on the node (RUNTIME_EXEC_FAILED from the agent); the API server's
// audit event of that kubectl exec reaches the collector's audit webhook
// afterwards; `loupe query --user` shows both, and the node finding names
// the user.
func TestWhoRanAShell(t *testing.T) {
	env := testenv.StartContainerd(t)
	distroless := env.Image(t, testenv.Distroless)
	s := &stack{env: env, node: "e2e-node", dbDir: t.TempDir(), agentState: t.TempDir()}
	s.init(t)
	const token = "e2e-apiserver-token"
	tokens := filepath.Join(t.TempDir(), "audit-tokens")
	if err := os.WriteFile(tokens, []byte(fmt.Sprintf("%x  kube-apiserver\n", sha256.Sum256([]byte(token)))), 0o600); err != nil {
		t.Fatal(err)
	}
	auditAddr := testenv.FreeAddr(t)
	s.collectorExtra = []string{"--audit-listen", auditAddr, "--audit-token-file", tokens}
	s.startCollector(t)
	s.startAgent(t)

	api := env.RunPod(t, testenv.PodConfig{Name: "api-7d9f", Namespace: "payments"})
	app := api.Start(t, testenv.ContainerConfig{Name: "app", Image: distroless})

	// kubectl exec -it api-7d9f -c app -- /bin/sh: the API server logs the request, the kubelet runs ExecSync.
	asked := time.Now()
	if _, err := app.Exec(t, []string{"/bin/sh"}, 10*time.Second); err == nil {
		t.Fatal("exec of /bin/sh succeeded in the distroless container")
	}
	failed := s.waitFinding(t, "RUNTIME_EXEC_FAILED", 30*time.Second, kinds(loupev1.Kind_KIND_RUNTIME_EXEC_FAILED), func(f *loupev1.Finding) bool {
		return f.GetContainer().GetId() == app.ID()
	})

	// The audit batch arrives after the node finding (the webhook batches events).
	pem, err := os.ReadFile(s.pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := audittest.Client(&tls.Config{RootCAs: roots, ServerName: "localhost"})
	ev := audittest.Exec(audittest.Alice, asked, "payments", "api-7d9f", "app", "/bin/sh")
	code, msg, err := audittest.Post(client, "https://"+auditAddr+"/audit", token, audittest.List(audittest.Stages(ev)...))
	if err != nil || code != http.StatusOK {
		t.Fatalf("audit webhook: %d %s %v", code, msg, err)
	}

	out, errOut, err := s.loupeCLI(t, "loupe-admin", "query", "--user", "alice@corp.example", "-o", "jsonl")
	if err != nil {
		t.Fatalf("loupe query --user: %v\n%s", err, errOut)
	}
	got := map[loupev1.Kind]*loupev1.Finding{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := &loupev1.Finding{}
		if err := protojson.Unmarshal([]byte(line), f); err != nil {
			t.Fatalf("jsonl line %q: %v", line, err)
		}
		got[f.GetKind()] = f
	}
	k8s, node := got[loupev1.Kind_KIND_K8S_EXEC], got[loupev1.Kind_KIND_RUNTIME_EXEC_FAILED]
	if len(got) != 2 || k8s == nil || node == nil {
		t.Fatalf("loupe query --user alice: want the K8S_EXEC and the RUNTIME_EXEC_FAILED, got:\n%s", out)
	}
	if node.GetId() != failed.GetId() || node.GetK8SUser() != "alice@corp.example" || len(node.GetLinks()) != 1 || node.GetLinks()[0].GetFindingId() != k8s.GetId() {
		t.Errorf("node finding not joined: %v", node)
	}
	if a := k8s.GetAudit(); a.GetUser() != "alice@corp.example" || a.GetSourceIps()[0] != "10.1.2.3" || a.GetCommand()[0] != "/bin/sh" ||
		len(k8s.GetLinks()) != 1 || k8s.GetLinks()[0].GetFindingId() != failed.GetId() {
		t.Errorf("audit finding: %v", k8s)
	}

	// The table names the user of the node finding too.
	table, errOut, err := s.loupeCLI(t, "loupe-admin", "query", "--kind", "runtime_exec_failed")
	if err != nil || !strings.Contains(table, "USER") || !strings.Contains(table, "alice@corp.example") {
		t.Errorf("loupe query table: %v\n%s%s", err, table, errOut)
	}
}

package collector

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/audit/audittest"
	"github.com/loupe-dev/loupe/collector/output"
	"github.com/loupe-dev/loupe/collector/store/storetest"
)

// receiver is a webhook on loopback that records the finding ids it got.
type receiver struct {
	mu  sync.Mutex
	ids []string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	f := &loupev1.Finding{}
	if err := protojson.Unmarshal(b, f); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.ids = append(r.ids, f.GetId())
	r.mu.Unlock()
}

func (r *receiver) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.ids)
	slices.Sort(out)
	return slices.Compact(out)
}

// TestOutputsFromBothIngestPaths: findings at or above the output's
// severity, from agents (gRPC) and from the audit webhook, reach a webhook
// receiver; the others do not.
func TestOutputsFromBothIngestPaths(t *testing.T) {
	p := newAuditPKI(t)
	rec := &receiver{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	cfg := p.config("")
	cfg.Outputs = []output.Config{{Type: output.TypeWebhook, URL: srv.URL, MinSeverity: loupev1.Severity_SEVERITY_HIGH}}
	s := start(t, cfg)

	high := storetest.Finding(time.Now(), "node-a", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH)
	crit := storetest.Finding(time.Now(), "node-a", loupev1.Kind_KIND_DRIFT_EXEC, loupev1.Severity_SEVERITY_CRITICAL)
	low := storetest.Finding(time.Now(), "node-a", loupev1.Kind_KIND_PACKAGE, loupev1.Severity_SEVERITY_INFO)
	ingestAs(t, p.grpc(t, s, "node-a"), high, crit, low)
	ev := audittest.Exec(audittest.Alice, time.Now(), "payments", "api-7d9f", "app", "/bin/sh") // a shell: HIGH
	postAudit(t, p.httpClient(t, DefaultAuditClientCN), s, "", audittest.List(ev))
	stored, err := query(t, p.grpc(t, s, DefaultAdminCN), &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_K8S_EXEC}})
	if err != nil || len(stored) != 1 {
		t.Fatalf("audit finding: %v %v", stored, err)
	}
	want := []string{high.GetId(), crit.GetId(), stored[0].GetId()}
	slices.Sort(want)
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Equal(rec.got(), want) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := rec.got(); !slices.Equal(got, want) {
		t.Fatalf("webhook got %v, want %v (the INFO finding must not be pushed)", got, want)
	}
}

func TestOutputsNeedADirectory(t *testing.T) {
	cfg := Config{DB: "postgres://loupe@db.example:5432/loupe"}
	if dir, why := besideDB(cfg, "", "outputs", "--output needs --output-dir"); dir != "" || why != "--output needs --output-dir when the store is not SQLite" {
		t.Errorf("besideDB on PostgreSQL: %q %q", dir, why)
	}
	cfg.DB = "sqlite:///var/lib/loupe/collector.db"
	if dir, _ := besideDB(cfg, "", "outputs", ""); dir != "/var/lib/loupe/outputs" {
		t.Errorf("besideDB on SQLite: %q", dir)
	}
}

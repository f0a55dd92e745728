package collector

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthAndReadiness(t *testing.T) {
	cfg := Config{Insecure: true, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", DB: "sqlite://" + t.TempDir() + "/c.db"}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.HTTPAddr().String()
	// Before Serve: the listeners are bound but not served; /readyz says no.
	rec := httptest.NewRecorder()
	s.http.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before Serve = %d", rec.Code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	code, body := get(t, base+"/healthz")
	if code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	for i := 0; !s.ready.Load() && i < 500; i++ {
		time.Sleep(10 * time.Millisecond) // Serve sets readiness after starting the servers
	}
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	s.http.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after shutdown = %d", rec.Code)
	}
}

func TestMetricsPromtool(t *testing.T) {
	promtool := testenv.RequireCommand(t, "promtool")
	s := start(t, Config{Insecure: true})
	c := dial(t, s, tlsutil.ClientOptions{Insecure: true})
	batch := findings("n1", 30)
	batch[0].Id = ""
	if _, err := send(t, c, &loupev1.IngestRequest{Sequence: 1, Node: "n1", Findings: batch}); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, "http://"+s.HTTPAddr().String()+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`loupe_collector_findings_ingested_total{kind=`,
		`loupe_collector_rejected_total{reason="missing_id"} 1`,
		`loupe_collector_rejected_total{reason="too_large"} 0`,
		`loupe_collector_store_commit_seconds_bucket{le=`,
		`loupe_collector_store_commit_seconds_count 1`,
		`loupe_collector_agents_connected 0`,
		`loupe_collector_duplicates_total 0`,
		`loupe_build_info{commit=`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	var total float64
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "loupe_collector_findings_ingested_total{") {
			var v float64
			if _, err := fmtSscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				total += v
			}
		}
	}
	if total != 29 {
		t.Errorf("sum of findings_ingested_total = %v, want 29", total)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

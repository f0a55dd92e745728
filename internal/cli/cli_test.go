package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/collector/store/storetest"
	"github.com/loupe-dev/loupe/internal/humanize"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// startCollector runs a real collector (gRPC on loopback, SQLite on disk).
func startCollector(t *testing.T, tlsOpts *tlsutil.ServerOptions) string {
	t.Helper()
	return startCollectorServer(t, tlsOpts).GRPCAddr().String()
}

// startCollectorServer is startCollector returning the server.
func startCollectorServer(t *testing.T, tlsOpts *tlsutil.ServerOptions) *collector.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := collector.Config{GRPCListen: "127.0.0.1:0", DB: "sqlite://" + filepath.Join(t.TempDir(), "c.db")}
	if tlsOpts != nil {
		cfg.TLS = *tlsOpts
	} else {
		cfg.Insecure = true
	}
	srv, err := collector.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("collector did not stop")
		}
	})
	return srv
}

// run executes the loupe command with args and returns stdout, stderr and the error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := NewRootCommand()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

const examples = "../../docs/examples/findings.jsonl"

func TestIngestQueryNodesAgainstARealCollector(t *testing.T) {
	addr := startCollector(t, nil)
	conn := []string{"--collector", addr, "--insecure"}

	_, stderr, err := run(t, append([]string{"ingest", examples, "--node", "replay"}, conn...)...)
	if err != nil {
		t.Fatalf("ingest: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "11 stored, 0 already present, 0 rejected") {
		t.Fatalf("ingest summary: %s", stderr)
	}
	// Replaying is idempotent.
	_, stderr, err = run(t, append([]string{"ingest", examples}, conn...)...)
	if err != nil || !strings.Contains(stderr, "0 stored, 11 already present") {
		t.Fatalf("second ingest: %v %s", err, stderr)
	}

	out, _, err := run(t, append([]string{"query", "--since", "", "-o", "jsonl"}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 11 {
		t.Fatalf("query returned %d findings, want 11:\n%s", len(lines), out)
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first["kind"] != "KIND_RUNS_AS_ROOT" {
		t.Errorf("newest first: got %v", first["kind"])
	}

	out, _, err = run(t, append([]string{"query", "--since", "", "--kind", "exec_failed", "--kind", "RUNTIME_EXEC_FAILED", "--severity", "high", "-o", "json"}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	var arr []map[string]any
	if err := json.Unmarshal([]byte(out), &arr); err != nil || len(arr) != 2 {
		t.Fatalf("kind filter: %v, %d results\n%s", err, len(arr), out)
	}

	out, _, err = run(t, append([]string{"query", "--since", "", "--pod", "api-*", "--grep", "WGET", "--oldest-first"}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	if rows := strings.Count(strings.TrimSpace(out), "\n"); rows != 1 || !strings.Contains(out, "EXEC_FAILED") {
		t.Fatalf("pod+grep table:\n%s", out)
	}

	// The default --since 24h excludes the two-day-old examples.
	out, stderr, err = run(t, append([]string{"query"}, conn...)...)
	if err != nil || strings.Count(out, "\n") != 1 || !strings.Contains(stderr, "0 finding(s)") {
		t.Fatalf("default window: %v\n%s%s", err, out, stderr)
	}

	out, _, err = run(t, append([]string{"nodes"}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	// node-a was last seen at its newest finding, rendered relative to now.
	lastSeenA := humanize.Ago(newestFinding(t, examples, "node-a"), time.Now())
	for _, want := range []string{"NODE", "node-a", "node-b", "DRIFT_EXEC=1 DRIFT_FILE=1 EXEC_FAILED=1", lastSeenA} {
		if !strings.Contains(out, want) {
			t.Errorf("nodes table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "replay") || strings.Contains(out, "loupe-ingest") {
		t.Errorf("the replaying client is listed as a node:\n%s", out)
	}
	out, _, err = run(t, append([]string{"nodes", "-o", "json"}, conn...)...)
	if err != nil || !strings.Contains(out, `"findings_by_kind"`) {
		t.Fatalf("nodes json: %v\n%s", err, out)
	}
}

func TestIngestReportsBadLinesAndKeepsTheRest(t *testing.T) {
	addr := startCollector(t, nil)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	good := `{"id":"0190a000-0000-7000-8000-00000000000a","time":"2026-11-20T10:00:00Z","kind":"KIND_EXEC","severity":"SEVERITY_INFO","node":"n1"}`
	noID := `{"time":"2026-11-20T10:00:00Z","kind":"KIND_EXEC","severity":"SEVERITY_INFO"}`
	writeFile(t, bad, good+"\n{oops\n"+noID+"\n")
	_, stderr, err := run(t, "ingest", bad, "--collector", addr, "--insecure")
	if err == nil || ExitCode(err) != 1 {
		t.Fatalf("want exit 1, got %v", err)
	}
	for _, want := range []string{"bad.jsonl:2:", "bad.jsonl:3:", "1 stored", "1 rejected", "1 malformed"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

func TestClearErrors(t *testing.T) {
	_, _, err := run(t, "query", "--collector", "127.0.0.1:1", "--insecure")
	if err == nil || !strings.Contains(err.Error(), "cannot reach collector at 127.0.0.1:1") || !strings.Contains(err.Error(), "is loupe-collector running") {
		t.Errorf("unreachable collector: %v", err)
	}
	for args, want := range map[string]string{
		"query --kind shel_exec": `unknown kind "shel_exec"`,
		"query --severity bad":   `unknown severity "bad"`,
		"query --since 3 days":   `"days"`,
		"query -o yaml":          "table, json or jsonl",
		"query --since soon":     "--since",
		"ingest /nonexistent":    "no such file",
	} {
		_, _, err := run(t, append(strings.Fields(args), "--insecure", "--collector", "127.0.0.1:1")...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", args, err, want)
		}
	}
}

func TestMTLSFlags(t *testing.T) {
	dir := t.TempDir()
	pki, err := tlsutil.GeneratePKI(dir, "loupe-admin", "node-x")
	if err != nil {
		t.Fatal(err)
	}
	addr := startCollector(t, &tlsutil.ServerOptions{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CAFile})
	admin := pki.Clients["loupe-admin"]
	tlsArgs := []string{"--collector", addr, "--ca", pki.CAFile, "--tls-cert", admin[0], "--tls-key", admin[1]}
	if _, stderr, err := run(t, append([]string{"ingest", examples}, tlsArgs...)...); err != nil {
		t.Fatalf("admin ingest over mTLS: %v\n%s", err, stderr)
	}
	out, _, err := run(t, append([]string{"query", "--since", "", "-o", "jsonl"}, tlsArgs...)...)
	if err != nil || strings.Count(out, "\n") != 11 {
		t.Fatalf("admin query over mTLS: %v\n%s", err, out)
	}
	// Without a client certificate the collector refuses.
	_, _, err = run(t, "query", "--collector", addr, "--ca", pki.CAFile)
	if err == nil {
		t.Fatal("query without a client certificate succeeded")
	}
	// Plaintext against a TLS collector fails with a hint.
	_, _, err = run(t, "query", "--collector", addr, "--insecure")
	if err == nil || !strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("plaintext against TLS: %v", err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newestFinding is the time of the newest finding of node in a JSONL file.
func newestFinding(t *testing.T, file, node string) time.Time {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var newest time.Time
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var f struct {
			Node string    `json:"node"`
			Time time.Time `json:"time"`
		}
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatal(err)
		}
		if f.Node == node && f.Time.After(newest) {
			newest = f.Time
		}
	}
	return newest
}

// TestQueryAllPages: --all pages through more findings than one page holds,
// with several findings per instant across page boundaries, and writes each
// exactly once, oldest first; an instant with more findings than a page is
// refused with a clear error.
func TestQueryAllPages(t *testing.T) {
	defer func(n uint32) { allPageSize = n }(allPageSize)
	allPageSize = 7
	addr := startCollector(t, nil)
	conn := []string{"--collector", addr, "--insecure"}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	var (
		lines []string
		want  []string
	)
	for i := range 40 {
		// 3 findings per instant: page boundaries fall inside instants.
		f := storetest.Finding(t0.Add(time.Duration(i/3)*time.Second), "node-a", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
		b, err := protojson.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
		want = append(want, f.GetId())
	}
	file := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := run(t, append([]string{"ingest", file}, conn...)...); err != nil {
		t.Fatalf("ingest: %v\n%s", err, stderr)
	}
	out, stderr, err := run(t, append([]string{"query", "--since", "", "--all", "-o", "jsonl"}, conn...)...)
	if err != nil {
		t.Fatalf("query --all: %v\n%s", err, stderr)
	}
	var got []string
	seen := map[string]bool{}
	var prev time.Time
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := &loupev1.Finding{}
		if err := protojson.Unmarshal([]byte(l), f); err != nil {
			t.Fatal(err)
		}
		if seen[f.GetId()] {
			t.Fatalf("finding %s written twice", f.GetId())
		}
		if f.GetTime().AsTime().Before(prev) {
			t.Fatalf("not oldest first at %s", f.GetId())
		}
		seen[f.GetId()], prev = true, f.GetTime().AsTime()
		got = append(got, f.GetId())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("--all wrote %d findings, want all %d", len(got), len(want))
	}
	if !strings.Contains(stderr, "40 finding(s)") {
		t.Errorf("progress/summary on stderr: %q", stderr)
	}
	if _, _, err := run(t, append([]string{"query", "--all"}, conn...)...); err == nil || !strings.Contains(err.Error(), "-o jsonl") {
		t.Errorf("--all without -o jsonl: %v", err)
	}
	// 3 findings in one instant do not fit a page of 2.
	allPageSize = 2
	if _, _, err := run(t, append([]string{"query", "--since", "", "--all", "-o", "jsonl"}, conn...)...); err == nil || !strings.Contains(err.Error(), "share the instant") {
		t.Errorf("instant larger than a page: %v", err)
	}
}

// TestNodesSilences: an agent that sent nothing for 25 minutes (its batches
// stored with their arrival times) shows one silence in `loupe nodes --since`,
// and its two sessions in -o jsonl, through the real gRPC API.
func TestNodesSilences(t *testing.T) {
	srv := startCollectorServer(t, nil)
	conn := []string{"--collector", srv.GRPCAddr().String(), "--insecure"}
	now := time.Now().Truncate(time.Second)
	for _, ago := range []time.Duration{60 * time.Minute, 59 * time.Minute, 34 * time.Minute, 33 * time.Minute} {
		if _, err := srv.Store().Ingest(context.Background(), store.NodeInfo{Name: "node-q", AgentVersion: "v9", Seen: now.Add(-ago)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	out, _, err := run(t, append([]string{"nodes", "--since", "2h"}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	want := "1         25m0s from " + now.Add(-59*time.Minute).UTC().Format(time.RFC3339)
	if !strings.Contains(out, "SILENCES  LONGEST SILENCE") || !strings.Contains(out, want) {
		t.Errorf("nodes --since table lacks the silence %q:\n%s", want, out)
	}
	// A range after the silence has none.
	out, _, err = run(t, append([]string{"nodes", "--since", "30m"}, conn...)...)
	if err != nil || !strings.Contains(out, "0         -") {
		t.Errorf("nodes --since 30m: %v\n%s", err, out)
	}
	out, _, err = run(t, append([]string{"nodes", "--since", "2h", "-o", "jsonl"}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	var n struct {
		Sessions []struct{ Start, End time.Time }
	}
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(n.Sessions) != 2 || !n.Sessions[0].Start.Equal(now.Add(-60*time.Minute)) || !n.Sessions[1].End.Equal(now.Add(-33*time.Minute)) {
		t.Errorf("sessions %+v", n.Sessions)
	}
	// Without --since, no sessions are read or shown.
	if out, _, err = run(t, append([]string{"nodes"}, conn...)...); err != nil || strings.Contains(out, "SILENCES") {
		t.Errorf("plain nodes: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"--until", "1h"}, {"--since", "1h", "--until", "2h"}, {"--since", "yesterday"}} {
		_, _, err := run(t, append(append([]string{"nodes"}, bad...), conn...)...)
		if err == nil {
			t.Errorf("nodes %v: no error", bad)
		}
	}
}

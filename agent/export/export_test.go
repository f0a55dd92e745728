package export

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-dev/loupe/agent/spool"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// runCollector starts a real collector on addr with its SQLite file in dbDir;
// the returned stop function shuts it down and waits.
func runCollector(t *testing.T, addr, dbDir string, o tlsutil.ServerOptions) (*collector.Server, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := collector.Config{GRPCListen: addr, DB: "sqlite://" + filepath.Join(dbDir, "c.db"), TLS: o, Logger: quiet}
	cfg.Insecure = o.CertFile == ""
	srv, err := collector.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return srv, stop
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func fill(t *testing.T, sp *spool.Spool, n int) map[string]bool {
	ids := map[string]bool{}
	var batch []*loupev1.Finding
	for i := 0; i < n; i++ {
		id := uuid.Must(uuid.NewV7()).String()
		ids[id] = true
		batch = append(batch, &loupev1.Finding{Id: id, Time: timestamppb.Now(), Node: "node-1",
			Kind: loupev1.Kind_KIND_EXEC, Severity: loupev1.Severity(1 + i%5), Summary: fmt.Sprint("exec ", i)})
	}
	if err := sp.Append(batch); err != nil {
		t.Fatal(err)
	}
	return ids
}

func stored(t *testing.T, srv *collector.Server) map[string]int {
	got := map[string]int{}
	err := srv.Store().Query(context.Background(), &loupev1.QueryRequest{Limit: 100000}, func(f *loupev1.Finding) error {
		got[f.GetId()]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startExporter(t *testing.T, cfg Config, sp *spool.Spool) (*Exporter, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	cfg.Logger = quiet
	cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 200*time.Millisecond
	e := New(cfg, sp, reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e, reg
}

func TestDeliversEverythingOnceThroughACollectorOutage(t *testing.T) {
	addr, dbDir := freeAddr(t), t.TempDir()
	sp, err := spool.Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	ids := fill(t, sp, 1200)

	// The collector is down when the agent starts: nothing is lost, the agent says it is not connected.
	e, reg := startExporter(t, Config{Addr: addr, TLS: tlsutil.ClientOptions{Insecure: true}, Node: "node-1", BatchSize: 500}, sp)
	time.Sleep(300 * time.Millisecond)
	if e.Connected() || testutil.ToFloat64(e.connGauge) != 0 {
		t.Fatal("connected without a collector")
	}
	if sp.Stats().Findings != 1200 {
		t.Fatalf("spool lost findings while the collector was down: %d", sp.Stats().Findings)
	}

	srv, stop := runCollector(t, addr, dbDir, tlsutil.ServerOptions{})
	waitFor(t, "spool drained", 15*time.Second, func() bool { return sp.Stats().Findings == 0 })
	if !e.Connected() {
		t.Error("not connected after delivery")
	}
	// Kill the collector, add more, restart it on the same store: everything arrives, once.
	stop()
	for k, v := range fill(t, sp, 700) {
		ids[k] = v
	}
	waitFor(t, "disconnect noticed", 10*time.Second, func() bool { return !e.Connected() || sp.Stats().Findings == 0 })
	srv, _ = runCollector(t, addr, dbDir, tlsutil.ServerOptions{})
	waitFor(t, "spool drained after restart", 20*time.Second, func() bool { return sp.Stats().Findings == 0 })
	got := stored(t, srv)
	if len(got) != len(ids) {
		t.Fatalf("collector has %d findings, want %d", len(got), len(ids))
	}
	for id := range ids {
		if got[id] != 1 {
			t.Fatalf("finding %s stored %d times", id, got[id])
		}
	}
	if acked := testutil.ToFloat64(e.acked); acked < float64(len(ids)) {
		t.Errorf("export_acked_total = %v, want >= %d", acked, len(ids))
	}
	if n, err := testutil.GatherAndCount(reg, "loupe_agent_export_acked_total", "loupe_agent_collector_connected"); err != nil || n != 2 {
		t.Errorf("metrics not registered: %d %v", n, err)
	}
}

func TestForeignCAKeepsSpoolingThenDeliversToTheRightCollector(t *testing.T) {
	right, err := tlsutil.GeneratePKI(t.TempDir(), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := tlsutil.GeneratePKI(t.TempDir(), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	_, stopForeign := runCollector(t, addr, t.TempDir(), tlsutil.ServerOptions{CertFile: foreign.ServerCert, KeyFile: foreign.ServerKey, ClientCAFile: foreign.CAFile})

	sp, err := spool.Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	ids := fill(t, sp, 300)
	client := right.Clients["node-1"]
	e, _ := startExporter(t, Config{Addr: addr, Node: "node-1",
		TLS: tlsutil.ClientOptions{CertFile: client[0], KeyFile: client[1], CAFile: right.CAFile, ServerName: "localhost"}}, sp)
	time.Sleep(time.Second)
	if e.Connected() {
		t.Fatal("connected to a collector with a foreign CA")
	}
	if testutil.ToFloat64(e.errors) == 0 {
		t.Error("no export error counted against the foreign collector")
	}
	if sp.Stats().Findings != 300 {
		t.Fatalf("spool changed: %d", sp.Stats().Findings)
	}
	stopForeign()
	srv, _ := runCollector(t, addr, t.TempDir(), tlsutil.ServerOptions{CertFile: right.ServerCert, KeyFile: right.ServerKey, ClientCAFile: right.CAFile})
	waitFor(t, "delivery to the right collector", 20*time.Second, func() bool { return sp.Stats().Findings == 0 })
	if got := stored(t, srv); len(got) != len(ids) {
		t.Fatalf("stored %d, want %d", len(got), len(ids))
	}
	waitFor(t, "connected", 5*time.Second, e.Connected)
}

func TestNodeMismatchIsRefused(t *testing.T) {
	pki, err := tlsutil.GeneratePKI(t.TempDir(), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	runCollector(t, addr, t.TempDir(), tlsutil.ServerOptions{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CAFile})
	sp, err := spool.Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	fill(t, sp, 10)
	client := pki.Clients["node-1"]
	e, _ := startExporter(t, Config{Addr: addr, Node: "node-2", // claims another node than its certificate
		TLS: tlsutil.ClientOptions{CertFile: client[0], KeyFile: client[1], CAFile: pki.CAFile, ServerName: "localhost"}}, sp)
	time.Sleep(time.Second)
	if e.Connected() || sp.Stats().Findings != 10 {
		t.Fatalf("node mismatch: connected=%v spool=%d", e.Connected(), sp.Stats().Findings)
	}
}

func TestFailsOverToAnotherReplica(t *testing.T) {
	dead, addrB := freeAddr(t), freeAddr(t)
	srvB, _ := runCollector(t, addrB, t.TempDir(), tlsutil.ServerOptions{})
	sp, err := spool.Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	ids := fill(t, sp, 900)
	// One replica is down: whichever the agent tries first, it ends up on the live one.
	startExporter(t, Config{Addr: dead + ", " + addrB, TLS: tlsutil.ClientOptions{Insecure: true}, Node: "node-1", BatchSize: 300}, sp)
	waitFor(t, "spool drained through the live replica", 15*time.Second, func() bool { return sp.Stats().Findings == 0 })
	got := stored(t, srvB)
	if len(got) != len(ids) {
		t.Fatalf("live replica has %d findings, want %d", len(got), len(ids))
	}
	for id := range ids {
		if got[id] != 1 {
			t.Fatalf("finding %s stored %d times", id, got[id])
		}
	}
}

func TestSplitAddrs(t *testing.T) {
	for in, want := range map[string]string{
		"a:1":           "[a:1]",
		"a:1, b:2,,c:3": "[a:1 b:2 c:3]",
		" ":             "[ ]",
	} {
		if got := fmt.Sprint(splitAddrs(in)); got != want {
			t.Errorf("splitAddrs(%q) = %s, want %s", in, got, want)
		}
	}
}

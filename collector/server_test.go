package collector

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store/storetest"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// pki is a test PKI: the collector's CA with server, agent and admin
// certificates, plus a second, untrusted CA.
type pki struct {
	dir                string
	ca, server         [2]string // ca: cert only in [0]
	nodeA, admin, sanB [2]string // client cert/key pairs
	rogue              [2]string // signed by another CA, CN node-a
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	files, err := tlsutil.GeneratePKI(dir, "node-a", DefaultAdminCN)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{dir: dir, ca: [2]string{files.CAFile}, server: [2]string{files.ServerCert, files.ServerKey},
		nodeA: files.Clients["node-a"], admin: files.Clients[DefaultAdminCN]}
	// A second certificate from the same CA: CN agent-7 with DNS SAN node-b.
	ca, err := tlsutil.NewCA("second CA")
	if err != nil {
		t.Fatal(err)
	}
	rogue, _ := ca.IssueClient("node-a")
	c, k, err := rogue.WriteFiles(dir, "rogue")
	if err != nil {
		t.Fatal(err)
	}
	p.rogue = [2]string{c, k}
	return p
}

type testServer struct {
	*Server
	cfg  Config
	stop func() error
}

// start runs a collector on loopback with cfg's DB (a temp file if empty).
func start(t *testing.T, cfg Config) *testServer {
	t.Helper()
	if cfg.DB == "" {
		cfg.DB = "sqlite://" + filepath.Join(t.TempDir(), "collector.db")
	}
	cfg.GRPCListen = "127.0.0.1:0"
	if cfg.HTTPListen == "" {
		cfg.HTTPListen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	stopped := false
	var serveErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			serveErr = <-errc
		}
		return serveErr
	}
	t.Cleanup(func() { stop() })
	return &testServer{Server: s, cfg: cfg, stop: stop}
}

func mtlsConfig(p *pki) Config {
	return Config{TLS: tlsutil.ServerOptions{CertFile: p.server[0], KeyFile: p.server[1], ClientCAFile: p.ca[0]}}
}

func dial(t *testing.T, s *testServer, o tlsutil.ClientOptions) loupev1.CollectorClient {
	t.Helper()
	conn, err := Dial(context.Background(), s.GRPCAddr().String(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return loupev1.NewCollectorClient(conn)
}

func client(p *pki, pair [2]string) tlsutil.ClientOptions {
	return tlsutil.ClientOptions{CAFile: p.ca[0], CertFile: pair[0], KeyFile: pair[1]}
}

func findings(node string, n int) []*loupev1.Finding {
	rng := storetest.NewRand(uint64(n))
	out := make([]*loupev1.Finding, n)
	for i := range out {
		out[i] = storetest.Realistic(rng, time.Now().Add(-time.Duration(i)*time.Second), node)
	}
	return out
}

// send sends one batch on a new stream and returns the ack (or the error
// that ended the stream).
func send(t *testing.T, c loupev1.CollectorClient, req *loupev1.IngestRequest) (*loupev1.IngestResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := c.Ingest(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := stream.Recv()
	stream.CloseSend()
	return resp, err
}

func query(t *testing.T, c loupev1.CollectorClient, q *loupev1.QueryRequest) ([]*loupev1.Finding, error) {
	t.Helper()
	stream, err := c.Query(context.Background(), q)
	if err != nil {
		return nil, err
	}
	var out []*loupev1.Finding
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, r.GetFindings()...)
	}
}

func wantCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(err.Error(), substr) {
		t.Fatalf("err = %v; want %s containing %q", err, code, substr)
	}
}

func TestMTLSIngestAndQuery(t *testing.T) {
	p := newPKI(t)
	s := start(t, mtlsConfig(p))
	agent := dial(t, s, client(p, p.nodeA))
	batch := findings("node-a", 20)
	batch[0].Node = "" // filled in with the stream's node
	resp, err := send(t, agent, &loupev1.IngestRequest{Sequence: 41, Node: "node-a", AgentVersion: "v0.9", Findings: batch})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAckedSequence() != 41 || resp.GetStored() != 20 || len(resp.GetRejected()) != 0 {
		t.Fatalf("ack = %v", resp)
	}
	admin := dial(t, s, client(p, p.admin))
	got, err := query(t, admin, &loupev1.QueryRequest{Nodes: []string{"node-a"}})
	if err != nil || len(got) != 20 {
		t.Fatalf("query: %d findings, %v", len(got), err)
	}
	// Agents may ingest but not read the fleet's findings.
	_, err = query(t, agent, &loupev1.QueryRequest{})
	wantCode(t, err, codes.PermissionDenied, "admin certificate")
	_, err = agent.ListNodes(context.Background(), &loupev1.ListNodesRequest{})
	wantCode(t, err, codes.PermissionDenied, "admin certificate")
	nodes, err := admin.ListNodes(context.Background(), &loupev1.ListNodesRequest{})
	if err != nil || len(nodes.GetNodes()) != 1 || nodes.GetNodes()[0].GetFindings() != 20 || nodes.GetNodes()[0].GetAgentVersion() != "v0.9" {
		t.Fatalf("nodes = %v, %v", nodes, err)
	}
	if testutil.ToFloat64(s.m.connected) != 0 {
		t.Fatalf("agents_connected = %v after the stream ended", testutil.ToFloat64(s.m.connected))
	}
}

func TestConnectedWhileStreamOpen(t *testing.T) {
	p := newPKI(t)
	s := start(t, mtlsConfig(p))
	agent := dial(t, s, client(p, p.nodeA))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := agent.Ingest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&loupev1.IngestRequest{Sequence: 1, Node: "node-a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	nodes, err := dial(t, s, client(p, p.admin)).ListNodes(context.Background(), &loupev1.ListNodesRequest{})
	if err != nil || len(nodes.GetNodes()) != 1 || !nodes.GetNodes()[0].GetConnected() {
		t.Fatalf("nodes = %v, %v; want node-a connected", nodes, err)
	}
	if got := testutil.ToFloat64(s.m.connected); got != 1 {
		t.Fatalf("agents_connected = %v, want 1", got)
	}
	// A second batch on the same stream for another node is refused.
	if err := stream.Send(&loupev1.IngestRequest{Sequence: 2, Node: "node-b"}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.InvalidArgument, "stream started for node")
}

func TestMTLSRejections(t *testing.T) {
	p := newPKI(t)
	s := start(t, mtlsConfig(p))
	req := func(node string) *loupev1.IngestRequest {
		return &loupev1.IngestRequest{Sequence: 1, Node: node, Findings: findings(node, 3)}
	}
	t.Run("no client certificate", func(t *testing.T) {
		_, err := send(t, dial(t, s, tlsutil.ClientOptions{CAFile: p.ca[0]}), req("node-a"))
		if err == nil || status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v, want the TLS handshake to fail (Unavailable)", err)
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		_, err := send(t, dial(t, s, client(p, p.rogue)), req("node-a"))
		if err == nil || status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v, want the TLS handshake to fail (Unavailable)", err)
		}
	})
	t.Run("node name mismatch", func(t *testing.T) {
		_, err := send(t, dial(t, s, client(p, p.nodeA)), req("node-b"))
		wantCode(t, err, codes.PermissionDenied, `may not send findings for node "node-b"`)
	})
	t.Run("node missing", func(t *testing.T) {
		_, err := send(t, dial(t, s, client(p, p.nodeA)), &loupev1.IngestRequest{Sequence: 1})
		wantCode(t, err, codes.InvalidArgument, "node is required")
	})
	t.Run("finding for another node", func(t *testing.T) {
		batch := findings("node-a", 2)
		batch[1].Node = "node-b"
		resp, err := send(t, dial(t, s, client(p, p.nodeA)), &loupev1.IngestRequest{Sequence: 3, Node: "node-a", Findings: batch})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStored() != 1 || len(resp.GetRejected()) != 1 || resp.GetRejected()[0].GetReason() != ReasonNodeMismatch || resp.GetRejected()[0].GetIndex() != 1 {
			t.Fatalf("ack = %v", resp)
		}
	})
	t.Run("admin ingests for any node", func(t *testing.T) {
		batch := append(findings("node-x", 2), findings("node-y", 2)...)
		resp, err := send(t, dial(t, s, client(p, p.admin)), &loupev1.IngestRequest{Sequence: 9, Node: "node-x", Findings: batch})
		if err != nil || resp.GetStored() != 4 || len(resp.GetRejected()) != 0 {
			t.Fatalf("ack = %v, %v", resp, err)
		}
	})
	if got := testutil.ToFloat64(s.m.rejected.WithLabelValues(ReasonNodeMismatch)); got != 1 {
		t.Fatalf("rejected_total{reason=node_mismatch} = %v, want 1", got)
	}
}

func TestIdentityFromDNSSAN(t *testing.T) {
	dir := t.TempDir()
	ca, err := tlsutil.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	caFile, _, _ := ca.WriteFiles(dir, "ca")
	srv, _ := ca.IssueServer("collector")
	sc, sk, _ := srv.WriteFiles(dir, "server")
	cl, _ := ca.IssueClient("agent-7", "node-b.example", "node-b")
	cc, ck, _ := cl.WriteFiles(dir, "agent")
	s := start(t, Config{TLS: tlsutil.ServerOptions{CertFile: sc, KeyFile: sk, ClientCAFile: caFile}})
	c := dial(t, s, tlsutil.ClientOptions{CAFile: caFile, CertFile: cc, KeyFile: ck})
	for _, node := range []string{"agent-7", "node-b"} {
		if _, err := send(t, c, &loupev1.IngestRequest{Sequence: 1, Node: node, Findings: findings(node, 1)}); err != nil {
			t.Fatalf("claim %s: %v", node, err)
		}
	}
	_, err = send(t, c, &loupev1.IngestRequest{Sequence: 1, Node: "node-c"})
	wantCode(t, err, codes.PermissionDenied, "node-c")
}

func TestServerAuthOnlyTLS(t *testing.T) {
	p := newPKI(t)
	s := start(t, Config{TLS: tlsutil.ServerOptions{CertFile: p.server[0], KeyFile: p.server[1]}})
	c := dial(t, s, tlsutil.ClientOptions{CAFile: p.ca[0]})
	if resp, err := send(t, c, &loupev1.IngestRequest{Sequence: 1, Node: "any", Findings: findings("any", 5)}); err != nil || resp.GetStored() != 5 {
		t.Fatalf("ack = %v, %v", resp, err)
	}
	// A client that does not trust the server's CA fails the handshake.
	_, err := send(t, dial(t, s, tlsutil.ClientOptions{CAFile: p.rogue[0]}), &loupev1.IngestRequest{Sequence: 1, Node: "any"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("untrusted server: err = %v", err)
	}
}

func TestBadInput(t *testing.T) {
	s := start(t, Config{Insecure: true})
	c := dial(t, s, tlsutil.ClientOptions{Insecure: true})
	batch := findings("n1", 8)
	batch[1].Id = ""
	batch[2].Kind = 0
	batch[3].Time = nil
	batch[4].Id = "not-a-uuid"
	batch[5].Severity = 0
	batch[6].Process = &loupev1.Process{Argv: make([]string, MaxArgv+1)}
	upper := strings.ToUpper(batch[7].Id)
	batch[7].Id = "{" + upper + "}" // accepted, stored in canonical form
	resp, err := send(t, c, &loupev1.IngestRequest{Sequence: 5, Node: "n1", Findings: batch})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]string{1: ReasonMissingID, 2: ReasonMissingKind, 3: ReasonMissingTime, 4: ReasonInvalidID, 5: ReasonMissingSeverity, 6: ReasonTooLarge}
	if resp.GetAckedSequence() != 5 || resp.GetStored() != 2 || len(resp.GetRejected()) != len(want) {
		t.Fatalf("ack = %v", resp)
	}
	for _, r := range resp.GetRejected() {
		if want[r.GetIndex()] != r.GetReason() || r.GetMessage() == "" {
			t.Errorf("rejection %v, want reason %q", r, want[r.GetIndex()])
		}
		if got := testutil.ToFloat64(s.m.rejected.WithLabelValues(r.GetReason())); got != 1 {
			t.Errorf("rejected_total{reason=%s} = %v, want 1", r.GetReason(), got)
		}
	}
	got, err := query(t, c, &loupev1.QueryRequest{})
	if err != nil || len(got) != 2 {
		t.Fatalf("stored %d findings, %v; want the 2 valid ones", len(got), err)
	}
	ids := map[string]bool{got[0].GetId(): true, got[1].GetId(): true}
	if !ids[batch[0].GetId()] || !ids[strings.ToLower(strings.Trim(upper, "{}"))] {
		t.Fatalf("stored ids %v", ids)
	}
}

func TestOversizedMessage(t *testing.T) {
	s := start(t, Config{Insecure: true, MaxMsgBytes: 64 << 10})
	c := dial(t, s, tlsutil.ClientOptions{Insecure: true})
	big := findings("n1", 300) // ~300 KiB
	_, err := send(t, c, &loupev1.IngestRequest{Sequence: 1, Node: "n1", Findings: big})
	// grpc-go itself writes this status, before the handler sees the error.
	wantCode(t, err, codes.ResourceExhausted, "larger than max")
	if got := testutil.ToFloat64(s.m.rejected.WithLabelValues(ReasonTooLarge)); got != 1 {
		t.Fatalf("rejected_total{reason=too_large} = %v, want 1", got)
	}
	// Nothing of it was stored, and the collector still serves.
	if resp, err := send(t, c, &loupev1.IngestRequest{Sequence: 2, Node: "n1", Findings: big[:10]}); err != nil || resp.GetStored() != 10 {
		t.Fatalf("after the oversized batch: %v, %v", resp, err)
	}
	if got, _ := query(t, c, &loupev1.QueryRequest{}); len(got) != 10 {
		t.Fatalf("store holds %d findings, want 10", len(got))
	}
}

// TestAckAfterCommit checks, for every ack, that the batch is visible to an
// independent reader of the database file, and that a failing commit is not
// acknowledged and leaves nothing behind.
func TestAckAfterCommit(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "c.db")
	s := start(t, Config{Insecure: true, DB: "sqlite://" + dbPath})
	c := dial(t, s, tlsutil.ClientOptions{Insecure: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := c.Ingest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reader := openReader(t, dbPath)
	var total int
	for seq := uint64(1); seq <= 5; seq++ {
		batch := findings("n1", 100)
		for _, f := range batch {
			f.Id = storetest.NewID()
		}
		if err := stream.Send(&loupev1.IngestRequest{Sequence: seq, Node: "n1", Findings: batch}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		total += 100
		if resp.GetAckedSequence() != seq {
			t.Fatalf("acked %d, want %d", resp.GetAckedSequence(), seq)
		}
		if n := countRows(t, reader); n != total {
			t.Fatalf("after ack %d an independent reader sees %d findings, want %d", seq, n, total)
		}
	}
	// Make the next commit fail inside the store (as a full disk would).
	if _, err := reader.Exec(`CREATE TRIGGER boom BEFORE INSERT ON findings WHEN NEW.node = 'n1' AND NEW.kind = 4 BEGIN SELECT RAISE(ABORT, 'simulated disk failure'); END`); err != nil {
		t.Fatal(err)
	}
	batch := findings("n1", 50)
	batch[len(batch)-1].Kind = loupev1.Kind_KIND_RUNTIME_EXEC_FAILED // kind 4: the last insert fails
	if err := stream.Send(&loupev1.IngestRequest{Sequence: 6, Node: "n1", Findings: batch}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if resp != nil {
		t.Fatalf("a failed commit was acknowledged: %v", resp)
	}
	wantCode(t, err, codes.Unavailable, "not acknowledged")
	if n := countRows(t, reader); n != total {
		t.Fatalf("a failed batch left %d findings behind", n-total)
	}
	if got := testutil.ToFloat64(s.m.storeErrs); got != 1 {
		t.Fatalf("store_errors_total = %v, want 1", got)
	}
}

func TestRestartKeepsData(t *testing.T) {
	p := newPKI(t)
	cfg := mtlsConfig(p)
	cfg.DB = "sqlite://" + filepath.Join(t.TempDir(), "c.db")
	s := start(t, cfg)
	batch := findings("node-a", 50)
	if _, err := send(t, dial(t, s, client(p, p.nodeA)), &loupev1.IngestRequest{Sequence: 1, Node: "node-a", Findings: batch}); err != nil {
		t.Fatal(err)
	}
	if err := s.stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	s2 := start(t, cfg)
	got, err := query(t, dial(t, s2, client(p, p.admin)), &loupev1.QueryRequest{})
	if err != nil || len(got) != 50 {
		t.Fatalf("after restart: %d findings, %v", len(got), err)
	}
	// The agent re-sends the batch whose ack it never saw: no duplicates.
	resp, err := send(t, dial(t, s2, client(p, p.nodeA)), &loupev1.IngestRequest{Sequence: 1, Node: "node-a", Findings: batch})
	if err != nil || resp.GetStored() != 0 || resp.GetDuplicates() != 50 {
		t.Fatalf("re-send = %v, %v", resp, err)
	}
	if got := testutil.ToFloat64(s2.m.duplicates); got != 50 {
		t.Fatalf("duplicates_total = %v", got)
	}
}

func TestGracefulShutdown(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "c.db")
	s := start(t, Config{Insecure: true, DB: "sqlite://" + dbPath})
	c := dial(t, s, tlsutil.ClientOptions{Insecure: true})
	stream, err := c.Ingest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&loupev1.IngestRequest{Sequence: 1, Node: "n1", Findings: findings("n1", 10)}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	// A batch racing the shutdown: if it is acked it must be stored.
	second := findings("n1", 500)
	for _, f := range second {
		f.Id = storetest.NewID()
	}
	if err := stream.Send(&loupev1.IngestRequest{Sequence: 2, Node: "n1", Findings: second}); err != nil {
		t.Fatal(err)
	}
	stopErr := make(chan error, 1)
	go func() { stopErr <- s.stop() }()
	acked := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			wantCode(t, err, codes.Unavailable, "shutting down")
			break
		}
		acked = resp.GetAckedSequence() == 2
	}
	if err := <-stopErr; err != nil {
		t.Fatal(err)
	}
	n := countRows(t, openReader(t, dbPath))
	if acked && n != 510 || n != 10 && n != 510 {
		t.Fatalf("after shutdown: %d findings stored (batch 2 acked: %v)", n, acked)
	}
	if _, err := net.DialTimeout("tcp", s.GRPCAddr().String(), time.Second); err == nil {
		t.Fatal("gRPC port still accepts connections after shutdown")
	}
}

func TestQueryOverGRPC(t *testing.T) {
	s := start(t, Config{Insecure: true})
	c := dial(t, s, tlsutil.ClientOptions{Insecure: true})
	for seq := range 3 {
		batch := findings("n1", 500)
		for _, f := range batch {
			f.Id = storetest.NewID()
		}
		if _, err := send(t, c, &loupev1.IngestRequest{Sequence: uint64(seq), Node: "n1", Findings: batch}); err != nil {
			t.Fatal(err)
		}
	}
	// More than one chunk, in order.
	got, err := query(t, c, &loupev1.QueryRequest{Limit: 1400, Order: loupev1.Order_ORDER_OLDEST_FIRST})
	if err != nil || len(got) != 1400 {
		t.Fatalf("query: %d, %v", len(got), err)
	}
	for i := 1; i < len(got); i++ {
		if got[i].GetTime().AsTime().Before(got[i-1].GetTime().AsTime()) {
			t.Fatalf("result %d out of order", i)
		}
	}
	_, err = query(t, c, &loupev1.QueryRequest{ContainerId: "ab"})
	wantCode(t, err, codes.InvalidArgument, "shorter than 4")
	_, err = query(t, c, &loupev1.QueryRequest{Limit: 1 << 30})
	wantCode(t, err, codes.InvalidArgument, "maximum")
}

func TestDialErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = Dial(context.Background(), addr, tlsutil.ClientOptions{Insecure: true})
	want := "cannot reach collector at " + addr + ": connection refused — is loupe-collector running?"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	if _, err := Dial(context.Background(), "no-port", tlsutil.ClientOptions{Insecure: true}); err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
		t.Fatalf("bad address: %v", err)
	}
	if _, err := Dial(context.Background(), addr, tlsutil.ClientOptions{CAFile: "/nonexistent/ca.crt"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/ca.crt") {
		t.Fatalf("missing CA file: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for name, cfg := range map[string]Config{
		"no TLS material":   {},
		"insecure plus TLS": {Insecure: true, TLS: tlsutil.ServerOptions{CertFile: "x"}},
		"postgres":          {Insecure: true, DB: "postgres://db/loupe"},
	} {
		cfg.GRPCListen = "127.0.0.1:0"
		if cfg.DB == "" {
			cfg.DB = "sqlite://" + filepath.Join(dir, name+".db")
		}
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		if s, err := New(context.Background(), cfg); err == nil {
			s.store.Close()
			t.Errorf("%s: New accepted the config", name)
		}
	}
	// The port is taken: the error names the flag.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	_, err := New(context.Background(), Config{Insecure: true, GRPCListen: l.Addr().String(), DB: "sqlite://" + filepath.Join(dir, "p.db"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "--grpc-listen") {
		t.Fatalf("port in use: %v", err)
	}
}

var _ grpc.ClientConnInterface = (*grpc.ClientConn)(nil)

func TestRetentionPrunesInBackground(t *testing.T) {
	s := start(t, Config{Insecure: true, Retention: time.Hour, PruneInterval: 50 * time.Millisecond})
	c := dial(t, s, tlsutil.ClientOptions{Insecure: true})
	old := storetest.Finding(time.Now().Add(-3*time.Hour), "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
	fresh := storetest.Finding(time.Now(), "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
	if resp, err := send(t, c, &loupev1.IngestRequest{Sequence: 1, Node: "n1", Findings: []*loupev1.Finding{old, fresh}}); err != nil || resp.GetStored() != 2 {
		t.Fatalf("ack = %v, %v", resp, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := query(t, c, &loupev1.QueryRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 1 && got[0].GetId() == fresh.GetId() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old finding not pruned after 10s: %d findings left", len(got))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := testutil.ToFloat64(s.m.pruned); got != 1 {
		t.Fatalf("pruned_total = %v, want 1", got)
	}
}

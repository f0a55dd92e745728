package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/collector/store/storetest"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "sub", "collector.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

func TestOpenThroughRegistry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s, err := store.Open(context.Background(), "sqlite://"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.(*Store).Path(); got != path {
		t.Fatalf("path = %q, want %q", got, path)
	}
	if _, err := store.Open(context.Background(), "mysql://x"); !errors.Is(err, store.ErrUnknownScheme) || !strings.Contains(err.Error(), "sqlite://") {
		t.Fatalf("unknown scheme: %v", err)
	}
}

func TestParseDSN(t *testing.T) {
	for dsn, want := range map[string]Options{
		"sqlite:///var/lib/loupe/collector.db":  {Path: "/var/lib/loupe/collector.db", Synchronous: "full"},
		"sqlite://rel/c.db":                     {Path: "rel/c.db", Synchronous: "full"},
		"sqlite:///tmp/c.db?synchronous=NORMAL": {Path: "/tmp/c.db", Synchronous: "normal"},
	} {
		got, err := ParseDSN(dsn)
		if err != nil || got != want {
			t.Errorf("ParseDSN(%q) = %+v, %v; want %+v", dsn, got, err, want)
		}
	}
	for _, bad := range []string{"sqlite://", "file:/x.db", "sqlite:///x.db?synchronous=off", "sqlite:///x.db?cache=shared"} {
		if _, err := ParseDSN(bad); err == nil {
			t.Errorf("ParseDSN(%q) accepted", bad)
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "c.db")
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	rng := storetest.NewRand(7)
	var in []*loupev1.Finding
	for i := range 100 {
		in = append(in, storetest.Realistic(rng, time.Now().Add(-time.Duration(i)*time.Minute), "node-a"))
	}
	if _, err := s.Ingest(ctx, store.NodeInfo{Name: "node-a", AgentVersion: "v9"}, in); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got := storetest.QueryAll(t, s2, &loupev1.QueryRequest{})
	if len(got) != 100 || !proto.Equal(got[0], in[0]) {
		t.Fatalf("after reopen: %d findings (first equal: %v)", len(got), len(got) > 0 && proto.Equal(got[0], in[0]))
	}
	nodes, err := s2.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].GetFindings() != 100 || nodes[0].GetAgentVersion() != "v9" {
		t.Fatalf("nodes after reopen = %v, %v", nodes, err)
	}
	// Re-sending after the restart is still idempotent.
	res, err := s2.Ingest(ctx, store.NodeInfo{Name: "node-a"}, in[:10])
	if err != nil || res.Duplicates != 10 || res.Stored != 0 {
		t.Fatalf("re-ingest after reopen = %+v, %v", res, err)
	}
}

func TestMigrateFromEmpty(t *testing.T) {
	s := openTemp(t)
	v, err := schemaVersion(context.Background(), s.w)
	if err != nil || v != SchemaVersion || SchemaVersion < 2 {
		t.Fatalf("schema version = %d (%v), want %d (>= 2)", v, err, SchemaVersion)
	}
	for _, idx := range []string{"findings_id", "findings_kind_time", "findings_pod_time", "findings_image"} {
		var n int
		if err := s.r.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?`, idx).Scan(&n); err != nil || n != 1 {
			t.Errorf("index %s missing (%v)", idx, err)
		}
	}
}

// TestMigrateFromPreviousVersion builds a database at schema v(N-1) with
// data written the way that version wrote it, then opens it with the
// current code: the migration must run and keep the data queryable.
func TestMigrateFromPreviousVersion(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	old, err := open(ctx, Options{Path: path, Synchronous: "full"}, SchemaVersion-1)
	if err != nil {
		t.Fatal(err)
	}
	f := storetest.Finding(time.Now().Add(-time.Hour), "old-node", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH)
	f.Container = &loupev1.ContainerRef{Pod: "api-1", Namespace: "payments", Image: "x/api:v1"}
	body, _ := proto.Marshal(f)
	// The v1 insert: no received_ns column yet.
	if _, err := old.w.Exec(`INSERT INTO findings (id, time_ns, node, kind, severity, namespace, pod, container_id, image, sha256, search, body)
		VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, '', ?, ?)`, f.Id, f.Time.AsTime().UnixNano(), f.Node, int32(f.Kind), int32(f.Severity),
		"payments", "api-1", "x/api:v1", store.SearchText(f), body); err != nil {
		t.Fatal(err)
	}
	if _, err := old.w.Exec(`INSERT INTO nodes (name, agent_version, first_seen_ns, last_seen_ns, findings) VALUES ('old-node', 'v0', 1, 2, 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Ingest(ctx, store.NodeInfo{Name: "x"}, nil); err == nil {
		t.Fatal("ingest on an old schema should refuse")
	}
	if v, _ := schemaVersion(ctx, old.w); v != SchemaVersion-1 {
		t.Fatalf("old db at version %d", v)
	}
	old.Close()

	s, err := Open(ctx, "sqlite://"+path)
	if err != nil {
		t.Fatalf("open and migrate: %v", err)
	}
	defer s.Close()
	if v, _ := schemaVersion(ctx, s.w); v != SchemaVersion {
		t.Fatalf("after migration: version %d, want %d", v, SchemaVersion)
	}
	got := storetest.QueryAll(t, s, &loupev1.QueryRequest{Pod: "api-*"})
	if len(got) != 1 || !proto.Equal(got[0], f) {
		t.Fatalf("migrated data: %v", got)
	}
	var recv int64
	if err := s.r.QueryRow(`SELECT received_ns FROM findings WHERE id = ?`, f.Id).Scan(&recv); err != nil || recv != 0 {
		t.Fatalf("received_ns of a pre-v2 row = %d, %v; want 0", recv, err)
	}
	// New writes use the new column.
	g := storetest.Finding(time.Now(), "old-node", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
	if _, err := s.Ingest(ctx, store.NodeInfo{Name: "old-node", Seen: time.Unix(1700000000, 0)}, []*loupev1.Finding{g}); err != nil {
		t.Fatal(err)
	}
	if err := s.r.QueryRow(`SELECT received_ns FROM findings WHERE id = ?`, g.Id).Scan(&recv); err != nil || recv != time.Unix(1700000000, 0).UnixNano() {
		t.Fatalf("received_ns = %d, %v", recv, err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "new.db")
	s, err := Open(ctx, "sqlite://"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.Exec(`UPDATE schema_version SET version = ?`, SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(ctx, "sqlite://"+path)
	if err == nil || !strings.Contains(err.Error(), "newer than this collector supports") {
		t.Fatalf("err = %v", err)
	}
}

func TestWALAndSynchronous(t *testing.T) {
	s := openTemp(t)
	var mode string
	var sync int
	if err := s.w.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
	if err := s.w.QueryRow(`PRAGMA synchronous`).Scan(&sync); err != nil || sync != 2 {
		t.Fatalf("synchronous = %d, %v; want 2 (FULL)", sync, err)
	}
}

// TestFailedIngestCommitsNothing: a batch that fails halfway leaves no trace.
func TestFailedIngestCommitsNothing(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	a := storetest.Finding(time.Now(), "n", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
	// A trigger makes the second insert fail, as a full disk would.
	if _, err := s.w.Exec(`CREATE TRIGGER boom BEFORE INSERT ON findings WHEN NEW.node = 'boom' BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END`); err != nil {
		t.Fatal(err)
	}
	b := storetest.Finding(time.Now(), "boom", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
	if _, err := s.Ingest(ctx, store.NodeInfo{Name: "n"}, []*loupev1.Finding{a, b}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v", err)
	}
	if got := storetest.QueryAll(t, s, &loupev1.QueryRequest{}); len(got) != 0 {
		t.Fatalf("a failed batch left %d findings", len(got))
	}
	if nodes, _ := s.Nodes(ctx); len(nodes) != 0 {
		t.Fatalf("a failed batch left nodes %v", nodes)
	}
}

// TestGroupCommitIsolation: concurrent batches are committed together, but
// a batch that fails does not take the others down with it.
func TestGroupCommitIsolation(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	if _, err := s.w.Exec(`CREATE TRIGGER boom BEFORE INSERT ON findings WHEN NEW.node = 'boom' BEGIN SELECT RAISE(ABORT, 'simulated failure'); END`); err != nil {
		t.Fatal(err)
	}
	const batches = 16
	errs := make(chan error, batches)
	results := make(chan store.IngestResult, batches)
	for i := range batches {
		node := "n" + string(rune('a'+i))
		if i == 5 {
			node = "boom"
		}
		go func() {
			var fs []*loupev1.Finding
			for range 200 {
				fs = append(fs, storetest.Finding(time.Now(), node, loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO))
			}
			res, err := s.Ingest(ctx, store.NodeInfo{Name: node}, fs)
			errs <- err
			results <- res
		}()
	}
	failed, stored := 0, 0
	for range batches {
		if err := <-errs; err != nil {
			if !strings.Contains(err.Error(), "simulated failure") {
				t.Fatalf("unexpected error: %v", err)
			}
			failed++
		}
		stored += (<-results).Stored
	}
	if failed != 1 || stored != (batches-1)*200 {
		t.Fatalf("%d batches failed, %d findings stored; want 1 and %d", failed, stored, (batches-1)*200)
	}
	if got := storetest.QueryAll(t, s, &loupev1.QueryRequest{Limit: store.MaxLimit}); len(got) != stored {
		t.Fatalf("store holds %d findings, want %d", len(got), stored)
	}
	nodes, _ := s.Nodes(ctx)
	if len(nodes) != batches-1 {
		t.Fatalf("%d nodes, want %d (the failed batch leaves none)", len(nodes), batches-1)
	}
}

func TestPrefixRange(t *testing.T) {
	for p, want := range map[string][3]string{
		"api-*":      {"api-", "api.", "true"},
		"*-7d4f":     {"", "", "false"},
		"a\xff*":     {"a\xff", "b", "true"},
		"web[1]?*x*": {"web[1]?", "web[1]@", "true"},
	} {
		lo, hi, ok := prefixRange(p)
		if got := [3]string{lo, hi, fmt.Sprint(ok)}; got != want {
			t.Errorf("prefixRange(%q) = %q, want %q", p, got, want)
		}
	}
}

// TestBroadPrefixesScanByTime: a container prefix, pod glob or image glob
// that matches more than broadRows findings is kept out of index selection,
// so the query walks the time index and stops at its limit (the plan says
// so); a narrow one still uses its own index. The results are the same
// either way.
func TestBroadPrefixesScanByTime(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var all []*loupev1.Finding
	for i := range broadRows + 500 {
		f := storetest.Finding(t0.Add(time.Duration(i)*time.Second), "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
		f.Container = &loupev1.ContainerRef{Id: fmt.Sprintf("c0ffee%058d", i%5000), Pod: fmt.Sprintf("api-%d", i%50), Namespace: "shop",
			Image: fmt.Sprintf("registry.example/api:%d", i%2000)}
		if i%500 == 0 { // a few of another workload
			f.Container = &loupev1.ContainerRef{Id: fmt.Sprintf("beef%060d", i), Pod: "web-0", Namespace: "shop", Image: "other.example/web:1"}
		}
		all = append(all, f)
	}
	for b := range slices.Chunk(all, 5000) {
		if _, err := s.Ingest(ctx, store.NodeInfo{Name: "n1"}, b); err != nil {
			t.Fatal(err)
		}
	}
	// The planner statistics of a 10M-finding store (bench/ingest's query
	// database): there, a prefix range on the container or image index
	// looks cheaper than the time index, whatever its true size. Creating
	// and dropping a table makes every connection reload them.
	for _, q := range []string{`ANALYZE`, `DELETE FROM sqlite_stat1 WHERE tbl = 'findings'`,
		`INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
			('findings', 'findings_image', '10000000 2001'), ('findings', 'findings_pod_time', '10000000 2001 1'),
			('findings', 'findings_sha256', '4000049 1001'), ('findings', 'findings_container', '10000000 501'),
			('findings', 'findings_namespace_time', '10000000 2001 1'), ('findings', 'findings_node_time', '10000000 2001 1'),
			('findings', 'findings_kind_time', '10000000 2001 1'), ('findings', 'findings_time', '10000000 1'),
			('findings', 'findings_id', '10000000 1'), ('findings', 'findings_user_time', '0 0 0')`,
		`CREATE TABLE reload_stats (x)`, `DROP TABLE reload_stats`} {
		if _, err := s.w.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, c := range []struct {
		name  string
		q     *loupev1.QueryRequest
		index string // what the plan must use
		match func(*loupev1.ContainerRef) bool
	}{
		{"broad container prefix", &loupev1.QueryRequest{Since: timestamppb.New(t0), ContainerId: "c0ffee", Limit: 100, Order: loupev1.Order_ORDER_OLDEST_FIRST}, "findings_time",
			func(r *loupev1.ContainerRef) bool { return strings.HasPrefix(r.GetId(), "c0ffee") }},
		{"broad pod glob", &loupev1.QueryRequest{Namespace: "shop", Pod: "api-*", Limit: 100}, "findings_namespace_time",
			func(r *loupev1.ContainerRef) bool { return strings.HasPrefix(r.GetPod(), "api-") }},
		{"broad image glob", &loupev1.QueryRequest{Since: timestamppb.New(t0), Image: "registry.example/*", Limit: 100}, "findings_time",
			func(r *loupev1.ContainerRef) bool { return strings.HasPrefix(r.GetImage(), "registry.example/") }},
		{"narrow container prefix", &loupev1.QueryRequest{ContainerId: "beef", Limit: 100}, "findings_container",
			func(r *loupev1.ContainerRef) bool { return strings.HasPrefix(r.GetId(), "beef") }},
		{"narrow pod glob", &loupev1.QueryRequest{Namespace: "shop", Pod: "web-*", Limit: 100}, "findings_pod_time",
			func(r *loupev1.ContainerRef) bool { return r.GetPod() == "web-0" }},
		{"narrow image glob", &loupev1.QueryRequest{Image: "other.example/*", Limit: 100}, "findings_image",
			func(r *loupev1.ContainerRef) bool { return strings.HasPrefix(r.GetImage(), "other.example/") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			sqlText, args := s.querySQL(ctx, c.q)
			var plan []string
			rows, err := s.r.QueryContext(ctx, "EXPLAIN QUERY PLAN "+sqlText, args...)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail+" ")
			}
			rows.Close()
			if !strings.Contains(strings.Join(plan, "; "), "INDEX "+c.index+" ") {
				t.Errorf("plan %q does not use %s", plan, c.index)
			}
			var want []string
			for _, f := range all {
				if c.match(f.GetContainer()) {
					want = append(want, f.GetId())
				}
			}
			if c.q.GetOrder() != loupev1.Order_ORDER_OLDEST_FIRST {
				slices.Reverse(want)
			}
			want = want[:min(len(want), 100)]
			got := storetest.QueryAll(t, s, c.q)
			if gotIDs := ids(got); !slices.Equal(gotIDs, want) {
				t.Errorf("%d results, want %d; first %v, want %v", len(gotIDs), len(want), gotIDs[:min(3, len(gotIDs))], want[:min(3, len(want))])
			}
		})
	}
}

func ids(fs []*loupev1.Finding) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.GetId()
	}
	return out
}

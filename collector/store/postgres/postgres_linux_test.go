package postgres

import (
	"context"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/collector/store/storetest"
	"github.com/loupe-dev/loupe/internal/testenv"
)

// openNew opens a store on a fresh database of pg, closed when t ends.
func openNew(t *testing.T, pg *testenv.Postgres) *Store {
	t.Helper()
	s, err := Open(context.Background(), pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	pg := testenv.StartPostgres(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openNew(t, pg) })
}

func ingest(t *testing.T, s *Store, node string, fs ...*loupev1.Finding) store.IngestResult {
	t.Helper()
	res, err := s.Ingest(context.Background(), store.NodeInfo{Name: node, AgentVersion: "v1", Seen: time.Now()}, fs)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func count(t *testing.T, pg *testenv.Postgres, db, sql string) int {
	t.Helper()
	n, err := strconv.Atoi(pg.SQL(t, db, sql))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func dbName(dsn string) string {
	u, _ := url.Parse(dsn)
	return strings.TrimPrefix(u.Path, "/")
}

// TestReplicasShareOneDatabase opens several stores on one database at once,
// as collector replicas starting together do: the schema is migrated once,
// and the same findings sent to every replica at the same time are stored once.
func TestReplicasShareOneDatabase(t *testing.T) {
	pg := testenv.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	const replicas = 4
	stores := make([]*Store, replicas)
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = Open(context.Background(), dsn)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	db := dbName(dsn)
	if v := pg.SQL(t, db, "SELECT version FROM loupe_schema_version"); v != strconv.Itoa(SchemaVersion()) {
		t.Fatalf("schema version %s, want %d", v, SchemaVersion())
	}
	if n := count(t, pg, db, "SELECT count(*) FROM loupe_schema_version"); n != 1 {
		t.Fatalf("%d schema version rows", n)
	}
	now := time.Now()
	var batch []*loupev1.Finding
	for i := range 2000 {
		// Today and yesterday: both replicas race to create the same partitions too.
		batch = append(batch, storetest.Finding(now.Add(-time.Duration(i)*time.Minute), "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO))
	}
	stored := make([]int, replicas)
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Ingest(context.Background(), store.NodeInfo{Name: "n1", Seen: now}, batch)
			errs[i], stored[i] = err, res.Stored
		}()
	}
	wg.Wait()
	total := 0
	for i := range stores {
		if errs[i] != nil {
			t.Fatalf("replica %d ingest: %v", i, errs[i])
		}
		total += stored[i]
	}
	if total != len(batch) {
		t.Fatalf("replicas stored %v (sum %d), want %d in all", stored, total, len(batch))
	}
	if n := count(t, pg, db, "SELECT count(DISTINCT id) FROM findings"); n != len(batch) {
		t.Fatalf("%d distinct ids stored, want %d", n, len(batch))
	}
	if n := count(t, pg, db, "SELECT count(*) FROM findings"); n != len(batch) {
		t.Fatalf("%d rows stored, want %d", n, len(batch))
	}
	// Every replica answers the same.
	for i, s := range stores {
		nodes, err := s.Nodes(context.Background())
		if err != nil || len(nodes) != 1 || nodes[0].GetFindings() != int64(len(batch)) {
			t.Fatalf("replica %d nodes = %v, %v", i, nodes, err)
		}
		if got := storetest.QueryAll(t, s, &loupev1.QueryRequest{Limit: 10}); len(got) != 10 || got[0].GetId() != batch[0].GetId() {
			t.Fatalf("replica %d newest finding differs", i)
		}
	}
}

// TestPartitions checks where rows go: one partition per day in the window,
// the default partition outside it, and rows moved out of the default
// partition when their day gets a partition.
func TestPartitions(t *testing.T) {
	pg := testenv.StartPostgres(t)
	s := openNew(t, pg)
	db := s.target[strings.LastIndex(s.target, "/")+1:]
	day := func(d int) time.Time {
		return time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, d).Add(13 * time.Hour)
	}
	mk := func(at time.Time) *loupev1.Finding {
		return storetest.Finding(at, "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
	}
	ingest(t, s, "n1", mk(day(0)), mk(day(0)), mk(day(-1)), mk(day(-3000)), mk(day(10)), mk(time.Date(2261, 6, 1, 0, 0, 0, 0, time.UTC)))
	parts, err := s.Partitions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{partitionName(dayOf(day(-1).UnixNano())), partitionName(dayOf(day(0).UnixNano()))}
	if !slices.Equal(parts, want) {
		t.Fatalf("partitions = %v, want %v", parts, want)
	}
	if n := count(t, pg, db, "SELECT count(*) FROM findings_default"); n != 3 {
		t.Fatalf("default partition holds %d rows, want 3 (outside the window)", n)
	}
	// Ten days later, day 10 is in the window: its row moves to its new partition.
	s.now = func() time.Time { return time.Now().AddDate(0, 0, 10) }
	ingest(t, s, "n1", mk(day(10).Add(time.Minute)))
	if n := count(t, pg, db, "SELECT count(*) FROM "+partitionName(dayOf(day(10).UnixNano()))); n != 2 {
		t.Fatalf("day 10 partition holds %d rows, want 2 (one moved from default)", n)
	}
	if n := count(t, pg, db, "SELECT count(*) FROM findings_default"); n != 2 {
		t.Fatalf("default partition holds %d rows, want 2", n)
	}
	if got := storetest.QueryAll(t, s, &loupev1.QueryRequest{}); len(got) != 7 {
		t.Fatalf("query returns %d findings, want 7", len(got))
	}
	// A second store (another replica) with a stale cache creates nothing twice.
	s2, err := Open(context.Background(), pg.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	s2.now = s.now
	if res := ingest(t, s2, "n1", mk(day(10).Add(2*time.Minute))); res.Stored != 1 {
		t.Fatalf("second replica stored %d", res.Stored)
	}
}

// TestRetentionDropsPartitions: pruning at a day boundary drops the old day
// partitions (no row deletes in them) and keeps the node counts exact.
func TestRetentionDropsPartitions(t *testing.T) {
	pg := testenv.StartPostgres(t)
	s := openNew(t, pg)
	midnight := time.Now().UTC().Truncate(24 * time.Hour)
	var fs []*loupev1.Finding
	for d := -4; d <= 0; d++ {
		for i := range 100 {
			k := loupev1.Kind_KIND_EXEC
			if i%4 == 0 {
				k = loupev1.Kind_KIND_SHELL_EXEC
			}
			fs = append(fs, storetest.Finding(midnight.AddDate(0, 0, d).Add(time.Duration(i)*time.Minute), "n1", k, loupev1.Severity_SEVERITY_HIGH))
		}
	}
	fs = append(fs, storetest.Finding(midnight.AddDate(-20, 0, 0), "n2", loupev1.Kind_KIND_SUID, loupev1.Severity_SEVERITY_LOW)) // default partition
	ingest(t, s, "n1", fs...)
	cut := midnight.AddDate(0, 0, -2)
	n, err := s.Prune(context.Background(), cut)
	if err != nil {
		t.Fatal(err)
	}
	if n != 201 {
		t.Fatalf("pruned %d, want 201 (two days and one old finding)", n)
	}
	parts, _ := s.Partitions(context.Background())
	if len(parts) != 3 || parts[0] != partitionName(dayOf(cut.UnixNano())) {
		t.Fatalf("partitions after prune = %v", parts)
	}
	nodes, err := s.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].GetFindings() != 300 || nodes[0].GetFindingsByKind()["SHELL_EXEC"] != 75 || nodes[0].GetFindingsByKind()["EXEC"] != 225 {
		t.Fatalf("n1 after prune = %v", nodes[0])
	}
	if nodes[1].GetFindings() != 0 || len(nodes[1].GetFindingsByKind()) != 0 {
		t.Fatalf("n2 after prune = %v", nodes[1])
	}
	if got := storetest.QueryAll(t, s, &loupev1.QueryRequest{Limit: store.MaxLimit}); len(got) != 300 {
		t.Fatalf("%d findings left, want 300", len(got))
	}
	if n, err := s.Prune(context.Background(), cut); err != nil || n != 0 {
		t.Fatalf("second prune = %d, %v", n, err)
	}
}

// TestDatabaseGoesAway: while PostgreSQL is down, ingest and ping fail with
// an error (nothing half-stored); when it is back, the same store recovers
// by itself.
func TestDatabaseGoesAway(t *testing.T) {
	pg := testenv.StartPostgres(t)
	s := openNew(t, pg)
	a := storetest.Finding(time.Now(), "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
	ingest(t, s, "n1", a)
	pg.Stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := storetest.Finding(time.Now(), "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
	if _, err := s.Ingest(ctx, store.NodeInfo{Name: "n1"}, []*loupev1.Finding{b}); err == nil || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("ingest with the database down: %v", err)
	}
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("ping with the database down: %v", err)
	}
	pg.Start(t)
	if res := ingest(t, s, "n1", a, b); res.Stored != 1 || res.Duplicates != 1 {
		t.Fatalf("after restart: %+v", res)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestOpenErrors(t *testing.T) {
	pg := testenv.StartPostgres(t)
	ctx := context.Background()
	for dsn, want := range map[string]string{
		"postgres://loupe@127.0.0.1:1/fleet":                   `cannot connect to 127.0.0.1:1/fleet as user "loupe": connection refused`,
		pg.DSN("nosuchdb"):                                     `database "nosuchdb" does not exist (SQLSTATE 3D000)`,
		"postgres://postgres:s3cret@127.0.0.1:1/x?sslmode=bad": "postgres DSN:",
	} {
		_, err := Open(ctx, dsn)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "\n") {
			t.Errorf("Open(%s) = %v\nwant one line with %q and no password", dsn, err, want)
		}
	}
	// Every connection has a statement timeout (default, or the DSN's).
	s := openNew(t, pg)
	var v string
	if err := s.pool.QueryRow(ctx, "SHOW statement_timeout").Scan(&v); err != nil || v != DefaultStatementTimeout {
		t.Fatalf("statement_timeout = %q, %v", v, err)
	}
	s2, err := Open(ctx, pg.DSN(s.target[strings.LastIndex(s.target, "/")+1:])+"&statement_timeout=50ms")
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.pool.Exec(ctx, "SELECT pg_sleep(2)"); err == nil || !strings.Contains(err.Error(), "statement timeout") {
		t.Fatalf("a query past statement_timeout: %v", err)
	}
}

// TestConcurrentRetention: every replica runs retention; two at once drop
// each partition once and count each finding once.
func TestConcurrentRetention(t *testing.T) {
	pg := testenv.StartPostgres(t)
	a := openNew(t, pg)
	b, err := Open(context.Background(), pg.DSN(a.target[strings.LastIndex(a.target, "/")+1:]))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	midnight := time.Now().UTC().Truncate(24 * time.Hour)
	var fs []*loupev1.Finding
	for d := -6; d <= 0; d++ {
		for i := range 50 {
			fs = append(fs, storetest.Finding(midnight.AddDate(0, 0, d).Add(time.Duration(i)*time.Minute), "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO))
		}
	}
	ingest(t, a, "n1", fs...)
	cut := midnight.AddDate(0, 0, -3).Add(10 * time.Minute) // 3 whole days and 10 findings of the next
	var (
		wg sync.WaitGroup
		n  [2]int64
		e  [2]error
	)
	for i, s := range []*Store{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); n[i], e[i] = s.Prune(context.Background(), cut) }()
	}
	wg.Wait()
	if e[0] != nil || e[1] != nil {
		t.Fatalf("prune errors: %v, %v", e[0], e[1])
	}
	if n[0]+n[1] != 160 {
		t.Fatalf("pruned %d + %d, want 160 in all", n[0], n[1])
	}
	nodes, err := b.Nodes(context.Background())
	if err != nil || nodes[0].GetFindings() != 190 || nodes[0].GetFindingsByKind()["EXEC"] != 190 {
		t.Fatalf("nodes after prune = %v, %v; want 190 findings", nodes, err)
	}
	if got := storetest.QueryAll(t, b, &loupev1.QueryRequest{Limit: store.MaxLimit}); len(got) != 190 {
		t.Fatalf("%d findings left, want 190", len(got))
	}
}

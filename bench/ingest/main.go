// Command ingest benchmarks the collector: findings/s ingested end to end
// (agent streams over loopback gRPC with mTLS into SQLite) with 1, 4 and 16
// concurrent streams, against a baseline of raw store.Ingest calls in the
// same run; then query latency (p50/p99 of five typical SOC queries, run
// through gRPC as `loupe query` does) over a database of 1,000,000 findings.
//
//	go run ./bench/ingest                  # everything, prints a Markdown report
//	go run ./bench/ingest -skip-query      # ingest only
//
// The 1M-finding database is built once in -dir and reused by later runs.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	_ "modernc.org/sqlite"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/collector/store/sqlite"
	"github.com/loupe-dev/loupe/collector/store/storetest"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

func main() {
	var (
		dir        = flag.String("dir", "/var/tmp/loupe-bench", "work directory (the 1M-finding query database is kept here)")
		n          = flag.Int("n", 200000, "findings per ingest run")
		batch      = flag.Int("batch", 500, "findings per batch")
		sync       = flag.String("synchronous", "full", "SQLite synchronous mode for the ingest runs: full or normal")
		queryRows  = flag.Int("query-rows", 1000000, "findings in the query database")
		reps       = flag.Int("reps", 50, "repetitions of each query")
		skipQuery  = flag.Bool("skip-query", false, "skip the query benchmark")
		skipIngest = flag.Bool("skip-ingest", false, "skip the ingest benchmark")
	)
	flag.Parse()
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fail(err)
	}
	fmt.Printf("# collector benchmark — %s, %d CPUs, %s, %s, load average at start %s\n\n", time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), runtime.Version(), runtime.GOARCH, loadavg())
	if !*skipIngest {
		if err := benchIngest(*dir, *n, *batch, *sync); err != nil {
			fail(err)
		}
	}
	if !*skipQuery {
		if err := benchQuery(*dir, *queryRows, *reps); err != nil {
			fail(err)
		}
	}
}

// loadavg is the 1-minute load average: other work on the machine skews
// the figures, so the report says how busy it was.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "unknown"
	}
	return f[0]
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/ingest:", err)
	os.Exit(1)
}

// makeBatches pre-generates the findings so generation is not measured.
func makeBatches(nodes, perNode, batch int, seed uint64) [][]*loupev1.Finding {
	var out [][]*loupev1.Finding
	now := time.Now()
	for node := range nodes {
		rng := storetest.NewRand(seed + uint64(node))
		name := fmt.Sprintf("bench-node-%02d", node)
		for i := 0; i < perNode; i += batch {
			b := make([]*loupev1.Finding, 0, batch)
			for j := i; j < min(i+batch, perNode); j++ {
				b = append(b, storetest.Realistic(rng, now.Add(-time.Duration(j)*time.Millisecond), name))
			}
			out = append(out, b)
		}
	}
	return out
}

func benchIngest(dir string, n, batch int, syncMode string) error {
	ctx := context.Background()
	sample := makeBatches(1, 1000, 1000, 99)[0]
	size := 0
	for _, f := range sample {
		size += proto.Size(f)
	}
	fmt.Printf("## Ingest: %d findings per run, batches of %d, mean finding %d bytes, SQLite synchronous=%s\n\n", n, batch, size/len(sample), syncMode)
	fmt.Println("| run | streams | findings/s | vs. baseline | commit p50 / p99 per batch |")
	fmt.Println("|---|---:|---:|---:|---|")
	pkiDir := filepath.Join(dir, "pki")
	pki, err := tlsutil.GeneratePKI(pkiDir, collector.DefaultAdminCN)
	if err != nil {
		return err
	}
	// Baseline: the store alone, one writer, no gRPC.
	dbPath := filepath.Join(dir, "ingest-baseline.db")
	removeDB(dbPath)
	st, err := sqlite.Open(ctx, "sqlite://"+dbPath+"?synchronous="+syncMode)
	if err != nil {
		return err
	}
	batches := makeBatches(1, n, batch, 1)
	var lat []time.Duration
	start := time.Now()
	for _, b := range batches {
		t := time.Now()
		if _, err := st.Ingest(ctx, store.NodeInfo{Name: b[0].Node, AgentVersion: "bench"}, b); err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	base := float64(n) / time.Since(start).Seconds()
	st.Close()
	fmt.Printf("| baseline: store.Ingest, no gRPC | 1 | %.0f | 1.00 | %s / %s |\n", base, pct(lat, 50), pct(lat, 99))
	removeDB(dbPath)

	for _, streams := range []int{1, 4, 16} {
		dbPath := filepath.Join(dir, fmt.Sprintf("ingest-%d.db", streams))
		removeDB(dbPath)
		ctx, cancel := context.WithCancel(ctx)
		srv, err := collector.New(ctx, collector.Config{
			GRPCListen: "127.0.0.1:0",
			DB:         "sqlite://" + dbPath + "?synchronous=" + syncMode,
			TLS:        tlsutil.ServerOptions{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CAFile},
			Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			cancel()
			return err
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		perStream := n / streams
		all := makeBatches(streams, perStream, batch, uint64(streams)*1000)
		per := len(all) / streams
		admin := pki.Clients[collector.DefaultAdminCN]
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			lats    []time.Duration
			firstEr error
		)
		start := time.Now()
		for s := range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := runStream(ctx, srv.GRPCAddr().String(), tlsutil.ClientOptions{CAFile: pki.CAFile, CertFile: admin[0], KeyFile: admin[1]}, all[s*per:(s+1)*per])
				mu.Lock()
				defer mu.Unlock()
				lats = append(lats, l...)
				if err != nil && firstEr == nil {
					firstEr = err
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		cancel()
		<-done
		if firstEr != nil {
			return firstEr
		}
		rate := float64(perStream*streams) / elapsed.Seconds()
		fmt.Printf("| gRPC + mTLS, send batch → wait for ack | %d | %.0f | %.2f | %s / %s (round trip) |\n", streams, rate, rate/base, pct(lats, 50), pct(lats, 99))
		removeDB(dbPath)
	}
	fmt.Printf("\nLoad average after the ingest runs: %s.\n\n", loadavg())
	return nil
}

// runStream is one agent: it sends each batch and waits for its ack.
func runStream(ctx context.Context, addr string, o tlsutil.ClientOptions, batches [][]*loupev1.Finding) ([]time.Duration, error) {
	conn, err := collector.Dial(ctx, addr, o)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stream, err := loupev1.NewCollectorClient(conn).Ingest(ctx)
	if err != nil {
		return nil, err
	}
	var lats []time.Duration
	for i, b := range batches {
		t := time.Now()
		if err := stream.Send(&loupev1.IngestRequest{Sequence: uint64(i + 1), Node: b[0].Node, AgentVersion: "bench", Findings: b}); err != nil {
			return lats, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return lats, err
		}
		if resp.GetStored() != uint32(len(b)) {
			return lats, fmt.Errorf("batch %d: stored %d of %d", i, resp.GetStored(), len(b))
		}
		lats = append(lats, time.Since(t))
	}
	return lats, stream.CloseSend()
}

func removeDB(path string) {
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(path + suffix)
	}
}

func pct(d []time.Duration, p int) string {
	if len(d) == 0 {
		return "-"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = min(max(i-1, 0), len(s)-1)
	return fmtDur(s[i])
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(time.Millisecond).String()
}

// The query database: findings spread over the 30 days before its build time
// (the default retention), from 50 nodes.
const (
	queryDays  = 30
	queryNodes = 50
)

func benchQuery(dir string, rows, reps int) error {
	ctx := context.Background()
	dbPath := filepath.Join(dir, fmt.Sprintf("query-%d.db", rows))
	have, built, err := countFindings(dbPath)
	if err != nil {
		return err
	}
	if have < rows {
		removeDB(dbPath)
		t := time.Now()
		if err := buildQueryDB(ctx, dbPath, rows); err != nil {
			return err
		}
		fi, _ := os.Stat(dbPath)
		fmt.Printf("Built the query database (%d findings, %d MiB) in %s.\n\n", rows, fi.Size()>>20, time.Since(t).Round(time.Second))
		if have, built, err = countFindings(dbPath); err != nil {
			return err
		}
	} else {
		fmt.Printf("Reusing the query database %s (%d findings).\n\n", dbPath, have)
	}
	// "Now" for the queries is the newest finding's time, so a reused
	// database answers the same as a fresh one.
	now := built
	srv, err := collector.New(ctx, collector.Config{
		GRPCListen: "127.0.0.1:0", DB: "sqlite://" + dbPath, Insecure: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	defer func() { cancel(); <-done }()
	conn, err := collector.Dial(ctx, srv.GRPCAddr().String(), tlsutil.ClientOptions{Insecure: true})
	if err != nil {
		return err
	}
	defer conn.Close()
	c := loupev1.NewCollectorClient(conn)
	since := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(-d)) }
	// Pick real values from the data.
	sample := storetest.Realistic(storetest.NewRand(uint64(rows)+7), now, "bench-node-00")
	var sha string
	for i := uint64(0); sha == ""; i++ {
		f := storetest.Realistic(storetest.NewRand(i), now, "x")
		sha = f.GetFile().GetSha256()
	}
	queries := []struct {
		name, cli string
		q         *loupev1.QueryRequest
	}{
		{"last 24h SHELL_EXEC", "--since 24h --kind shell_exec",
			&loupev1.QueryRequest{Since: since(24 * time.Hour), Kinds: []loupev1.Kind{loupev1.Kind_KIND_SHELL_EXEC}}},
		{"one pod's timeline, 7 days", "--since 7d --namespace NS --pod POD --oldest-first",
			&loupev1.QueryRequest{Since: since(7 * 24 * time.Hour), Namespace: sample.GetContainer().GetNamespace(), Pod: sample.GetContainer().GetPod(), Order: loupev1.Order_ORDER_OLDEST_FIRST}},
		{"by file sha256, all time", "--since '' --sha256 H",
			&loupev1.QueryRequest{Sha256: sha}},
		{"namespace + min severity high, 24h", "--since 24h --namespace payments --severity high",
			&loupev1.QueryRequest{Since: since(24 * time.Hour), Namespace: "payments", MinSeverity: loupev1.Severity_SEVERITY_HIGH}},
		{"grep argv 'wget', 24h", "--since 24h --grep wget",
			&loupev1.QueryRequest{Since: since(24 * time.Hour), Grep: "wget"}},
		{"(worst case) grep argv, all 30 days, rare match", "--since '' --grep 'python3 -m http'  --pod 'cache-*'",
			&loupev1.QueryRequest{Grep: "python3 -m http", Pod: "cache-*"}},
	}
	fmt.Printf("## Query latency over %d findings (%d days, %d nodes), through gRPC, %d runs each\n\n", have, queryDays, queryNodes, reps)
	fmt.Println("| query | loupe query flags | results | p50 | p99 |")
	fmt.Println("|---|---|---:|---:|---:|")
	for _, q := range queries {
		var lats []time.Duration
		results := 0
		for range reps {
			t := time.Now()
			n, err := runQuery(ctx, c, q.q)
			if err != nil {
				return fmt.Errorf("%s: %w", q.name, err)
			}
			lats = append(lats, time.Since(t))
			results = n
		}
		fmt.Printf("| %s | `%s` | %d | %s | %s |\n", q.name, q.cli, results, pct(lats, 50), pct(lats, 99))
	}
	fmt.Println()
	return nil
}

func runQuery(ctx context.Context, c loupev1.CollectorClient, q *loupev1.QueryRequest) (int, error) {
	stream, err := c.Query(ctx, q)
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n += len(r.GetFindings())
	}
}

func countFindings(path string) (int, time.Time, error) {
	if _, err := os.Stat(path); err != nil {
		return 0, time.Time{}, nil
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return 0, time.Time{}, err
	}
	defer db.Close()
	var (
		n      int
		newest sql.NullInt64
	)
	if err := db.QueryRow(`SELECT count(*), max(time_ns) FROM findings`).Scan(&n, &newest); err != nil {
		return 0, time.Time{}, nil
	}
	return n, time.Unix(0, newest.Int64), nil
}

func buildQueryDB(ctx context.Context, path string, rows int) error {
	st, err := sqlite.Open(ctx, "sqlite://"+path+"?synchronous=normal")
	if err != nil {
		return err
	}
	defer st.Close()
	now := time.Now()
	span := time.Duration(queryDays) * 24 * time.Hour
	step := span / time.Duration(rows)
	rngs := make([]*randNode, queryNodes)
	for i := range rngs {
		rngs[i] = &randNode{name: fmt.Sprintf("bench-node-%02d", i), rng: storetest.NewRand(uint64(i))}
	}
	const chunk = 5000
	for i := 0; i < rows; i += chunk {
		b := make([]*loupev1.Finding, 0, chunk)
		for j := i; j < min(i+chunk, rows); j++ {
			rn := rngs[j%queryNodes]
			b = append(b, storetest.Realistic(rn.rng, now.Add(-span+time.Duration(j)*step), rn.name))
		}
		if _, err := st.Ingest(ctx, store.NodeInfo{Name: "bench-loader"}, b); err != nil {
			return err
		}
	}
	return st.Optimize(ctx)
}

type randNode struct {
	name string
	rng  *rand.Rand
}

// Command ingest benchmarks the collector on both stores.
//
// Ingest: findings/s end to end (agent-like streams over loopback gRPC with
// mTLS, each sending a batch and waiting for its ack) with 1, 4 and 16
// streams. SQLite: one collector, baseline = raw store.Ingest of the same
// batches. PostgreSQL (a private cluster): 1 and 2 collector replicas on one
// database, baseline = a plain pgx COPY of the same rows into the same
// table in the same run.
//
// Queries: p50/p99 of the cookbook's queries (docs/queries.md), through gRPC
// as `loupe query` runs them, over -query-rows findings per store, built
// once in -dir and reused by later runs.
//
//	go run ./bench/ingest                                # both stores, ingest + queries over 1M
//	go run ./bench/ingest -store postgres -skip-query    # PostgreSQL ingest only
//	go run ./bench/ingest -skip-ingest -query-rows 10000000
//	go run ./bench/ingest -move 1000000                  # SQLite → PostgreSQL with loupe query --all | loupe ingest
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/collector/store/sqlite"
	"github.com/loupe-dev/loupe/collector/store/storetest"
	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

type options struct {
	dir, stores, syncMode string
	n, batch              int
	queryRows, reps       int
	skipQuery, skipIngest bool
}

func main() {
	var o options
	flag.StringVar(&o.dir, "dir", "/var/tmp/loupe-bench", "work directory (the query databases are kept here)")
	flag.StringVar(&o.stores, "store", "sqlite,postgres", "stores to measure: sqlite, postgres or both (comma-separated)")
	flag.IntVar(&o.n, "n", 200000, "findings per ingest run")
	flag.IntVar(&o.batch, "batch", 500, "findings per batch")
	flag.StringVar(&o.syncMode, "synchronous", "full", "SQLite synchronous mode for the ingest runs: full or normal")
	flag.IntVar(&o.queryRows, "query-rows", 1000000, "findings in each query database")
	flag.IntVar(&o.reps, "reps", 50, "repetitions of each query")
	flag.BoolVar(&o.skipQuery, "skip-query", false, "skip the query benchmark")
	flag.BoolVar(&o.skipIngest, "skip-ingest", false, "skip the ingest benchmark")
	move := flag.Int("move", 0, "instead of the benchmarks: move this many findings SQLite → PostgreSQL with loupe query --all | loupe ingest, and time it")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the benchmark process (collectors included) to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		fail(err)
	}
	fmt.Printf("# collector benchmark — %s, %d CPUs, %s, %s, load average at start %s\n\n", time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), runtime.Version(), runtime.GOARCH, loadavg())
	if *move > 0 {
		if err := benchMove(o, *move); err != nil {
			fail(err)
		}
		return
	}
	for _, st := range strings.Split(o.stores, ",") {
		var err error
		switch strings.TrimSpace(st) {
		case "sqlite":
			err = benchSQLite(o)
		case "postgres":
			err = benchPostgres(o)
		default:
			err = fmt.Errorf("-store %q: want sqlite or postgres", st)
		}
		if err != nil {
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
	pprof.StopCPUProfile()
	fmt.Fprintln(os.Stderr, "bench/ingest:", err)
	os.Exit(1)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

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

func meanSize(fs []*loupev1.Finding) int {
	size := 0
	for _, f := range fs {
		size += proto.Size(f)
	}
	return size / len(fs)
}

func benchSQLite(o options) error {
	ctx := context.Background()
	if !o.skipIngest {
		fmt.Printf("## SQLite ingest: %d findings per run, batches of %d, mean finding %d bytes, synchronous=%s\n\n",
			o.n, o.batch, meanSize(makeBatches(1, 1000, 1000, 99)[0]), o.syncMode)
		fmt.Println("| run | streams | findings/s | vs. baseline | round trip p50 / p99 per batch |")
		fmt.Println("|---|---:|---:|---:|---|")
		// Baseline: the store alone, one writer, no gRPC.
		dbPath := filepath.Join(o.dir, "ingest-baseline.db")
		removeDB(dbPath)
		st, err := sqlite.Open(ctx, "sqlite://"+dbPath+"?synchronous="+o.syncMode)
		if err != nil {
			return err
		}
		var lat []time.Duration
		start := time.Now()
		for _, b := range makeBatches(1, o.n, o.batch, 1) {
			t := time.Now()
			if _, err := st.Ingest(ctx, store.NodeInfo{Name: b[0].Node, AgentVersion: "bench"}, b); err != nil {
				return err
			}
			lat = append(lat, time.Since(t))
		}
		base := float64(o.n) / time.Since(start).Seconds()
		st.Close()
		removeDB(dbPath)
		fmt.Printf("| baseline: store.Ingest, no gRPC | 1 | %.0f | 1.00 | %s / %s |\n", base, pct(lat, 50), pct(lat, 99))
		for _, streams := range []int{1, 4, 16} {
			dbPath := filepath.Join(o.dir, fmt.Sprintf("ingest-%d.db", streams))
			removeDB(dbPath)
			rate, lats, err := ingestThroughCollectors(o, []string{"sqlite://" + dbPath + "?synchronous=" + o.syncMode}, streams)
			removeDB(dbPath)
			if err != nil {
				return err
			}
			fmt.Printf("| gRPC + mTLS, send batch → wait for ack | %d | %.0f | %.2f | %s / %s |\n", streams, rate, rate/base, pct(lats, 50), pct(lats, 99))
		}
		fmt.Printf("\nLoad average after the SQLite ingest runs: %s.\n\n", loadavg())
	}
	if o.skipQuery {
		return nil
	}
	dsn := "sqlite://" + filepath.Join(o.dir, fmt.Sprintf("query-%d.db", o.queryRows))
	return benchQuery(ctx, "SQLite", dsn, o)
}

// ingestThroughCollectors starts one collector per DSN (replicas when they
// name one database), spreads streams over them round-robin, sends n
// findings and returns the rate and the per-batch round trips.
func ingestThroughCollectors(o options, dsns []string, streams int) (float64, []time.Duration, error) {
	pki, err := tlsutil.GeneratePKI(filepath.Join(o.dir, "pki"), collector.DefaultAdminCN)
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var addrs []string
	var served sync.WaitGroup
	for _, dsn := range dsns {
		srv, err := collector.New(ctx, collector.Config{
			GRPCListen: "127.0.0.1:0", DB: dsn, Logger: quiet,
			TLS: tlsutil.ServerOptions{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CAFile},
		})
		if err != nil {
			return 0, nil, err
		}
		addrs = append(addrs, srv.GRPCAddr().String())
		served.Add(1)
		go func() { defer served.Done(); srv.Serve(ctx) }()
	}
	defer served.Wait()
	defer cancel()
	perStream := o.n / streams
	all := makeBatches(streams, perStream, o.batch, uint64(streams)*1000+uint64(len(dsns)))
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
			l, err := runStream(ctx, addrs[s%len(addrs)], tlsutil.ClientOptions{CAFile: pki.CAFile, CertFile: admin[0], KeyFile: admin[1]}, all[s*per:(s+1)*per])
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
	if firstEr != nil {
		return 0, nil, firstEr
	}
	return float64(perStream*streams) / elapsed.Seconds(), lats, nil
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

// launchPostgres starts the benchmark's PostgreSQL in dir (kept between
// runs when dir is set) with settings for a dedicated database host.
func launchPostgres(dir string) (*testenv.Postgres, error) {
	pg, err := testenv.LaunchPostgres(dir, map[string]string{
		"shared_buffers": "2GB", "max_wal_size": "8GB", "checkpoint_timeout": "15min", "wal_compression": "lz4",
	})
	if err != nil {
		return nil, fmt.Errorf("start PostgreSQL: %w", err)
	}
	return pg, nil
}

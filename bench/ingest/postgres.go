package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/collector/store/postgres"
)

// copyConns is how many connections the COPY baseline uses: as many as
// the collector runs give the database (4 and 16 streams).
const copyConns = 4

func benchPostgres(o options) error {
	ctx := context.Background()
	if !o.skipIngest {
		pg, err := launchPostgres("")
		if err != nil {
			return err
		}
		defer pg.Close()
		fmt.Printf("## PostgreSQL ingest: %d findings per run, batches of %d, private PostgreSQL on the same machine (fsync on, synchronous_commit on)\n\n", o.n, o.batch)
		fmt.Println("| run | replicas | streams | findings/s | vs. COPY baseline | round trip p50 / p99 per batch |")
		fmt.Println("|---|---:|---:|---:|---:|---|")
		base, err := copyBaseline(ctx, pg.CreateDatabase, o)
		if err != nil {
			return fmt.Errorf("COPY baseline: %w", err)
		}
		fmt.Printf("| baseline: pgx COPY of the same rows into `findings`, %d connections, one COPY per batch | - | - | %.0f | 1.00 | - |\n", copyConns, base)
		for _, replicas := range []int{1, 2} {
			for _, streams := range []int{1, 4, 16} {
				dsn, err := pg.CreateDatabase()
				if err != nil {
					return err
				}
				dsns := make([]string, replicas)
				for i := range dsns {
					dsns[i] = dsn
				}
				rate, lats, err := ingestThroughCollectors(o, dsns, streams)
				if err != nil {
					return err
				}
				fmt.Printf("| gRPC + mTLS → collector → PostgreSQL | %d | %d | %.0f | %.2f | %s / %s |\n", replicas, streams, rate, rate/base, pct(lats, 50), pct(lats, 99))
			}
		}
		fmt.Printf("\nLoad average after the PostgreSQL ingest runs: %s.\n\n", loadavg())
	}
	if o.skipQuery {
		return nil
	}
	pg, err := launchPostgres(filepath.Join(o.dir, "postgres"))
	if err != nil {
		return err
	}
	defer pg.Close()
	dsn, err := pg.DatabaseDSN(fmt.Sprintf("loupe_query_%d", o.queryRows))
	if err != nil {
		return err
	}
	return benchQuery(ctx, "PostgreSQL", dsn, o)
}

// copyBaseline writes the rows the store would write for n findings with
// plain COPY into the same (migrated, partitioned) table: the database's
// own cost for these rows, with no collector, gRPC or bookkeeping. Encoding
// is done before the clock starts.
func copyBaseline(ctx context.Context, newDB func() (string, error), o options) (float64, error) {
	dsn, err := newDB()
	if err != nil {
		return 0, err
	}
	st, err := postgres.Open(ctx, dsn) // schema, and today's and yesterday's partitions
	if err != nil {
		return 0, err
	}
	defer st.Close()
	warm := []*loupev1.Finding{
		{Id: uuid.NewString(), Time: timestamppb.Now(), Node: "warm", Kind: loupev1.Kind_KIND_EXEC, Severity: loupev1.Severity_SEVERITY_INFO},
		{Id: uuid.NewString(), Time: timestamppb.New(time.Now().Add(-24 * time.Hour)), Node: "warm", Kind: loupev1.Kind_KIND_EXEC, Severity: loupev1.Severity_SEVERITY_INFO},
	}
	if _, err := st.Ingest(ctx, store.NodeInfo{Name: "warm"}, warm); err != nil {
		return 0, err
	}
	batches := makeBatches(copyConns, o.n/copyConns, o.batch, 7)
	rows := make([][][]any, len(batches))
	recv := time.Now().UnixNano()
	for i, b := range batches {
		for _, f := range b {
			body, err := proto.Marshal(f)
			if err != nil {
				return 0, err
			}
			c := f.GetContainer()
			rows[i] = append(rows[i], []any{uuid.MustParse(f.GetId()), f.GetTime().AsTime().UnixNano(), f.GetNode(), int32(f.GetKind()), int32(f.GetSeverity()),
				c.GetNamespace(), c.GetPod(), c.GetId(), c.GetImage(), strings.ToLower(f.GetFile().GetSha256()), store.SearchText(f), recv, body})
		}
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	cols := []string{"id", "time_ns", "node", "kind", "severity", "namespace", "pod", "container_id", "image", "sha256", "search", "received_ns", "body"}
	per := len(rows) / copyConns
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		n     int64
	)
	start := time.Now()
	for w := range copyConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range rows[w*per : (w+1)*per] {
				k, err := pool.CopyFrom(ctx, pgx.Identifier{"findings"}, cols, pgx.CopyFromRows(b))
				mu.Lock()
				n += k
				if err != nil && first == nil {
					first = err
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// benchMove moves n findings from a SQLite collector to a PostgreSQL
// collector the way docs/install.md tells operators to: `loupe query
// --since ” --all -o jsonl | loupe ingest -`, with the real binaries, and
// checks that every finding arrived.
func benchMove(o options, n int) error {
	ctx := context.Background()
	bin, err := os.MkdirTemp("", "loupe-bench-move-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/loupe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/loupe (run from the repository root): %v\n%s", err, out)
	}
	src := "sqlite://" + filepath.Join(o.dir, fmt.Sprintf("move-%d.db", n))
	if have, err := storeCount(ctx, src); err != nil {
		return err
	} else if have < n {
		if err := resetStore(ctx, src); err != nil {
			return err
		}
		if err := buildQueryDB(ctx, src, n); err != nil {
			return err
		}
	}
	pg, err := launchPostgres("")
	if err != nil {
		return err
	}
	defer pg.Close()
	dst, err := pg.CreateDatabase()
	if err != nil {
		return err
	}
	from, stopFrom, err := serve(ctx, src)
	if err != nil {
		return err
	}
	defer stopFrom()
	to, stopTo, err := serve(ctx, dst)
	if err != nil {
		return err
	}
	defer stopTo()
	script := fmt.Sprintf("set -o pipefail; %s/loupe query --insecure --collector %s --since '' --all -o jsonl | %s/loupe ingest - --insecure --collector %s --batch 1000",
		bin, from, bin, to)
	start := time.Now()
	cmd := exec.Command("bash", "-c", script)
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", script, err, out)
	}
	got, err := storeCount(ctx, dst)
	if err != nil {
		return err
	}
	fmt.Printf("## Moving a store: SQLite → PostgreSQL with `loupe query --all | loupe ingest`\n\n")
	fmt.Printf("%d findings moved in %s (%.0f findings/s); the PostgreSQL store holds %d. CLI output:\n\n```\n%s```\n\n",
		n, elapsed.Round(time.Second), float64(n)/elapsed.Seconds(), got, lastLines(string(out), 3))
	if got != n {
		return fmt.Errorf("moved store holds %d findings, want %d", got, n)
	}
	return nil
}

// serve runs an insecure collector on dsn on a loopback port.
func serve(ctx context.Context, dsn string) (string, func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	srv, err := collector.New(ctx, collector.Config{GRPCListen: "127.0.0.1:0", DB: dsn, Insecure: true, Logger: quiet})
	if err != nil {
		cancel()
		return "", nil, err
	}
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	return srv.GRPCAddr().String(), func() { cancel(); <-done }, nil
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n") + "\n"
}

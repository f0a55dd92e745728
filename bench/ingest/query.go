package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/collector/store/storetest"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// The query database: findings spread over the 30 days before its build time
// (the default retention), from 50 nodes.
const (
	queryDays  = 30
	queryNodes = 50
)

// benchQuery fills dsn's store with o.queryRows findings unless it holds
// them already, then times the cookbook's queries through a collector on it.
func benchQuery(ctx context.Context, label, dsn string, o options) error {
	have, err := storeCount(ctx, dsn)
	if err != nil {
		return err
	}
	if have < o.queryRows {
		if err := resetStore(ctx, dsn); err != nil {
			return err
		}
		t := time.Now()
		if err := buildQueryDB(ctx, dsn, o.queryRows); err != nil {
			return fmt.Errorf("build the %s query database: %w", label, err)
		}
		fmt.Printf("Built the %s query database (%d findings) in %s.\n\n", label, o.queryRows, time.Since(t).Round(time.Second))
		if have, err = storeCount(ctx, dsn); err != nil {
			return err
		}
	} else {
		fmt.Printf("Reusing the %s query database (%d findings).\n\n", label, have)
	}
	if err := optimize(ctx, dsn); err != nil {
		return err
	}
	srv, err := collector.New(ctx, collector.Config{GRPCListen: "127.0.0.1:0", DB: dsn, Insecure: true, Logger: quiet})
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
	// "Now" is the newest finding's time, so a reused database answers the
	// same as a fresh one; the filter values are taken from the data.
	var newest, sample, file *loupev1.Finding
	for _, q := range []struct {
		dst **loupev1.Finding
		req *loupev1.QueryRequest
	}{
		{&newest, &loupev1.QueryRequest{Limit: 1}},
		{&sample, &loupev1.QueryRequest{Limit: 1, Kinds: []loupev1.Kind{loupev1.Kind_KIND_SHELL_EXEC}}},
		{&file, &loupev1.QueryRequest{Limit: 1, Kinds: []loupev1.Kind{loupev1.Kind_KIND_DRIFT_FILE}}},
	} {
		if err := srv.Store().Query(ctx, q.req, func(f *loupev1.Finding) error { *q.dst = f; return nil }); err != nil {
			return err
		}
		if *q.dst == nil {
			return errors.New("the query database is empty")
		}
	}
	now := newest.GetTime().AsTime()
	since := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(-d)) }
	day := 24 * time.Hour
	ctr := sample.GetContainer()
	podPrefix := ctr.GetPod()[:strings.LastIndex(ctr.GetPod(), "-")] + "-*"
	hour := now.Add(-36 * time.Hour).Truncate(time.Hour)
	queries := []struct {
		name, cli string
		q         *loupev1.QueryRequest
	}{
		{"shells in the last 24 h", "--since 24h --kind shell_exec",
			&loupev1.QueryRequest{Since: since(day), Kinds: []loupev1.Kind{loupev1.Kind_KIND_SHELL_EXEC}}},
		{"failed attempts, high+, 24 h", "--since 24h --kind exec_failed --kind runtime_exec_failed --severity high",
			&loupev1.QueryRequest{Since: since(day), Kinds: []loupev1.Kind{loupev1.Kind_KIND_EXEC_FAILED, loupev1.Kind_KIND_RUNTIME_EXEC_FAILED}, MinSeverity: loupev1.Severity_SEVERITY_HIGH}},
		{"drift, 7 days", "--since 7d --kind drift_file",
			&loupev1.QueryRequest{Since: since(7 * day), Kinds: []loupev1.Kind{loupev1.Kind_KIND_DRIFT_FILE}}},
		{"where was this file seen, 30 days", "--since 30d --sha256 H",
			&loupev1.QueryRequest{Since: since(30 * day), Sha256: file.GetFile().GetSha256()}},
		{"a pod's timeline, 48 h", "--namespace NS --pod 'APP-HASH-*' --since 48h --oldest-first",
			&loupev1.QueryRequest{Since: since(2 * day), Namespace: ctr.GetNamespace(), Pod: podPrefix, Order: loupev1.Order_ORDER_OLDEST_FIRST}},
		{"namespace, high+, 7 days", "--namespace payments --severity high --since 7d",
			&loupev1.QueryRequest{Since: since(7 * day), Namespace: "payments", MinSeverity: loupev1.Severity_SEVERITY_HIGH}},
		{"downloads by shells, 24 h", "--since 24h --kind shell_exec --kind exec --grep wget",
			&loupev1.QueryRequest{Since: since(day), Kinds: []loupev1.Kind{loupev1.Kind_KIND_SHELL_EXEC, loupev1.Kind_KIND_EXEC}, Grep: "wget"}},
		{"one container, 7 days", "--container PREFIX8 --since 7d --oldest-first",
			&loupev1.QueryRequest{Since: since(7 * day), ContainerId: ctr.GetId()[:8], Order: loupev1.Order_ORDER_OLDEST_FIRST}},
		{"one node, one hour", "--node N --since T --until T+1h --oldest-first",
			&loupev1.QueryRequest{Since: timestamppb.New(hour), Until: timestamppb.New(hour.Add(time.Hour)), Nodes: []string{sample.GetNode()}, Order: loupev1.Order_ORDER_OLDEST_FIRST}},
		{"(worst case) grep all 30 days + pod glob, rare match", "--since '' --grep 'python3 -m http' --pod 'cache-*'",
			&loupev1.QueryRequest{Grep: "python3 -m http", Pod: "cache-*"}},
	}
	fmt.Printf("## %s query latency over %d findings (%d days, %d nodes), through gRPC, %d runs each after 3 warm-up runs, limit 1000\n\n", label, have, queryDays, queryNodes, o.reps)
	fmt.Println("| query | loupe query flags | results | p50 | p99 |")
	fmt.Println("|---|---|---:|---:|---:|")
	for _, q := range queries {
		var lats []time.Duration
		results := 0
		// Three unmeasured runs first: the p99 is of a warm cache, for both stores.
		for range 3 {
			if _, err := runQuery(ctx, c, q.q); err != nil {
				return fmt.Errorf("%s: %w", q.name, err)
			}
		}
		for range o.reps {
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
	fmt.Printf("\nLoad average after the %s queries: %s.\n\n", label, loadavg())
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

// storeCount is how many findings dsn's store holds (0 when it does not exist).
func storeCount(ctx context.Context, dsn string) (int, error) {
	if path, ok := strings.CutPrefix(dsn, "sqlite://"); ok {
		if _, err := os.Stat(path); err != nil {
			return 0, nil
		}
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	nodes, err := st.Nodes(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, nd := range nodes {
		n += int(nd.GetFindings())
	}
	return n, nil
}

// resetStore removes the SQLite file, or drops and recreates the database.
func resetStore(ctx context.Context, dsn string) error {
	if path, ok := strings.CutPrefix(dsn, "sqlite://"); ok {
		removeDB(path)
		return nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(u.Path, "/")
	u.Path = "/postgres"
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, q := range []string{"DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)", "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// buildQueryDB ingests rows findings through the store, in chunks of 5,000
// from 2 writers, spread evenly over the last queryDays days.
func buildQueryDB(ctx context.Context, dsn string, rows int) error {
	if strings.HasPrefix(dsn, "sqlite://") {
		dsn += "?synchronous=normal" // a bulk load, not acked batches
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	return storetest.Fill(ctx, st, rows, queryNodes, time.Duration(queryDays)*24*time.Hour, time.Now(), func(done int) {
		fmt.Fprintf(os.Stderr, "bench/ingest: query database %d/%d findings\n", done, rows)
	})
}

// optimize refreshes the planner statistics of dsn's store (ANALYZE, PRAGMA optimize).
func optimize(ctx context.Context, dsn string) error {
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	if o, ok := st.(interface{ Optimize(context.Context) error }); ok {
		return o.Optimize(ctx)
	}
	return nil
}

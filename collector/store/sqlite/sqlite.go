// Package sqlite is the collector's embedded store: one SQLite file
// (modernc.org/sqlite, pure Go) in WAL mode, with indexed columns for every
// query filter and the full finding kept as a protobuf blob.
//
// DSN: sqlite:///var/lib/loupe/collector.db (absolute) or sqlite://rel/path.db,
// with an optional ?synchronous=full|normal (default full: every committed
// batch is on disk before the collector acks it).
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
)

func init() {
	store.Register("sqlite", func(ctx context.Context, dsn string) (store.Store, error) {
		return Open(ctx, dsn)
	})
}

// Store is the SQLite implementation of store.Store.
type Store struct {
	path string
	w    *sql.DB // the single writer connection
	r    *sql.DB // readers (WAL: they never block the writer)
	ins  *sql.Stmt
	now  func() time.Time

	queue      chan *ingestReq // batches waiting for the writer goroutine
	closing    chan struct{}
	writerDone chan struct{}
	closeOnce  sync.Once
}

var _ store.Store = (*Store)(nil)

// Options are the settings a DSN can carry.
type Options struct {
	// Path of the database file.
	Path string
	// Synchronous is "full" (default) or "normal".
	Synchronous string
}

// ParseDSN parses sqlite:///abs/path.db or sqlite://rel/path.db[?synchronous=normal].
func ParseDSN(dsn string) (Options, error) {
	rest, ok := strings.CutPrefix(dsn, "sqlite://")
	if !ok {
		return Options{}, fmt.Errorf("sqlite DSN %q must start with sqlite://", dsn)
	}
	path, query, _ := strings.Cut(rest, "?")
	if path == "" {
		return Options{}, fmt.Errorf("sqlite DSN %q has no file path (want sqlite:///var/lib/loupe/collector.db)", dsn)
	}
	o := Options{Path: path, Synchronous: "full"}
	q, err := url.ParseQuery(query)
	if err != nil {
		return Options{}, fmt.Errorf("sqlite DSN %q: %w", dsn, err)
	}
	for k, v := range q {
		switch k {
		case "synchronous":
			s := strings.ToLower(v[len(v)-1])
			if s != "full" && s != "normal" {
				return Options{}, fmt.Errorf("sqlite DSN: synchronous=%q: want full or normal", s)
			}
			o.Synchronous = s
		default:
			return Options{}, fmt.Errorf("sqlite DSN: unknown option %q (known: synchronous)", k)
		}
	}
	return o, nil
}

// Open opens (creating if needed) the database of dsn and migrates its
// schema to the current version.
func Open(ctx context.Context, dsn string) (*Store, error) {
	o, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	return open(ctx, o, SchemaVersion)
}

// Tuning (see docs/collector.md): 16 KiB pages for new databases (fewer WAL
// frames per batch), a 64 MiB page cache per connection (index pages stay in
// memory between batches), and a checkpoint every 4096 pages (64 MiB of WAL).
const (
	pageSize = "16384"
	cacheKiB = "-65536"
	walPages = "4096"
)

func open(ctx context.Context, o Options, target int) (*Store, error) {
	if dir := filepath.Dir(o.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("open sqlite store: create directory: %w", err)
		}
	}
	base := o.Path + "?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=cache_size(" + cacheKiB + ")"
	w, err := sql.Open("sqlite", base+"&_pragma=page_size("+pageSize+")&_pragma=journal_mode(WAL)&_pragma=synchronous("+o.Synchronous+
		")&_pragma=wal_autocheckpoint("+walPages+")&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", o.Path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", o.Path, err)
	}
	if err := migrate(ctx, w, target); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", o.Path, err)
	}
	r, err := sql.Open("sqlite", base+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", o.Path, err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(4)
	s := &Store{path: o.Path, w: w, r: r, now: time.Now,
		queue: make(chan *ingestReq), closing: make(chan struct{}), writerDone: make(chan struct{})}
	go s.writer()
	if target >= 3 {
		s.ins, err = w.PrepareContext(ctx, `INSERT INTO findings
			(id, time_ns, node, kind, severity, namespace, pod, container_id, image, sha256, search, received_ns, k8s_user, body)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING`)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open sqlite store %s: prepare insert: %w", o.Path, err)
		}
	}
	return s, nil
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

type nodeDelta struct {
	first, last int64
	count       int64
	kinds       map[loupev1.Kind]int64
}

// ingestReq is one Ingest call waiting for the writer.
type ingestReq struct {
	ctx      context.Context
	node     store.NodeInfo
	findings []*loupev1.Finding
	bodies   [][]byte
	search   []string
	res      store.IngestResult
	err      error
	done     chan struct{}
}

// Group commit: the writer goroutine commits the batches that are waiting
// together, up to this many findings per transaction. Each batch stays
// atomic (it is entirely in one transaction) and each caller learns its own
// result; if a group fails, its batches are retried one transaction each so
// one bad batch cannot fail the others.
const groupMaxFindings = 8000

// Ingest implements store.Store.
func (s *Store) Ingest(ctx context.Context, node store.NodeInfo, findings []*loupev1.Finding) (store.IngestResult, error) {
	if s.ins == nil {
		return store.IngestResult{}, errors.New("ingest: store opened at an old schema version")
	}
	if node.Seen.IsZero() {
		node.Seen = s.now()
	}
	// Encode outside the writer: it is the bottleneck.
	r := &ingestReq{ctx: ctx, node: node, findings: findings, done: make(chan struct{}),
		bodies: make([][]byte, len(findings)), search: make([]string, len(findings))}
	for i, f := range findings {
		b, err := proto.Marshal(f)
		if err != nil {
			return store.IngestResult{}, fmt.Errorf("ingest: encode finding %s: %w", f.GetId(), err)
		}
		r.bodies[i] = b
		r.search[i] = store.SearchText(f)
	}
	select {
	case s.queue <- r:
	case <-ctx.Done():
		return store.IngestResult{}, fmt.Errorf("ingest: %w", ctx.Err())
	case <-s.closing:
		return store.IngestResult{}, errors.New("ingest: store is closed")
	}
	<-r.done
	return r.res, r.err
}

// writer runs the write transactions, one group of waiting batches at a time.
func (s *Store) writer() {
	defer close(s.writerDone)
	for {
		var first *ingestReq
		select {
		case first = <-s.queue:
		case <-s.closing:
			return
		}
		group := []*ingestReq{first}
		n := len(first.findings)
	gather:
		for n < groupMaxFindings {
			select {
			case r := <-s.queue:
				group = append(group, r)
				n += len(r.findings)
			default:
				break gather
			}
		}
		s.commitGroup(group)
	}
}

func (s *Store) commitGroup(group []*ingestReq) {
	live := group[:0:0]
	for _, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.err = fmt.Errorf("ingest: %w", err)
			close(r.done)
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	ctx := live[0].ctx
	if len(live) > 1 {
		// No single caller may cancel a transaction others depend on.
		ctx = context.WithoutCancel(ctx)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, r := range live {
			if err := s.write(ctx, tx, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && len(live) > 1 {
		// Retry each batch alone: only the faulty one fails.
		for _, r := range live {
			r.err = s.inTx(r.ctx, func(tx *sql.Tx) error { return s.write(r.ctx, tx, r) })
			if r.err != nil {
				r.res = store.IngestResult{}
			}
			close(r.done)
		}
		return
	}
	for _, r := range live {
		if err != nil {
			r.res, r.err = store.IngestResult{}, err
		}
		close(r.done)
	}
}

func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ingest: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("ingest: commit: %w", err)
	}
	return nil
}

// write inserts one batch and updates the node tables, inside tx.
func (s *Store) write(ctx context.Context, tx *sql.Tx, r *ingestReq) error {
	res := store.IngestResult{Inserted: make([]bool, len(r.findings))}
	ins := tx.StmtContext(ctx, s.ins)
	deltas := map[string]*nodeDelta{}
	node := r.node
	recv := node.Seen.UnixNano()
	if node.Name != "" {
		deltas[node.Name] = &nodeDelta{first: recv, last: recv, kinds: map[loupev1.Kind]int64{}}
	}
	for i, f := range r.findings {
		c := f.GetContainer()
		t := f.GetTime().AsTime().UnixNano()
		res0, err := ins.ExecContext(ctx, f.GetId(), t, f.GetNode(), int32(f.GetKind()), int32(f.GetSeverity()),
			c.GetNamespace(), c.GetPod(), c.GetId(), c.GetImage(), strings.ToLower(f.GetFile().GetSha256()),
			r.search[i], recv, f.GetAudit().GetUser(), r.bodies[i])
		if err != nil {
			return fmt.Errorf("ingest: insert finding %s: %w", f.GetId(), err)
		}
		n, err := res0.RowsAffected()
		if err != nil {
			return fmt.Errorf("ingest: insert finding %s: %w", f.GetId(), err)
		}
		if n == 0 {
			res.Duplicates++
			continue
		}
		res.Stored++
		res.Inserted[i] = true
		if f.GetNode() == "" {
			continue // a Kubernetes audit event: no node of its own
		}
		d := deltas[f.GetNode()]
		if d == nil {
			d = &nodeDelta{first: t, last: t, kinds: map[loupev1.Kind]int64{}}
			deltas[f.GetNode()] = d
		}
		if f.GetNode() != node.Name {
			d.first, d.last = min(d.first, t), max(d.last, t)
		}
		d.count++
		d.kinds[f.GetKind()]++
	}
	if node.Name != "" {
		if err := extendSession(ctx, tx, node.Name, recv); err != nil {
			return err
		}
	}
	for name, d := range deltas {
		version := ""
		if name == node.Name {
			version = node.AgentVersion
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO nodes (name, agent_version, first_seen_ns, last_seen_ns, findings)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET
				agent_version = CASE WHEN excluded.agent_version <> '' THEN excluded.agent_version ELSE agent_version END,
				first_seen_ns = min(first_seen_ns, excluded.first_seen_ns),
				last_seen_ns  = max(last_seen_ns, excluded.last_seen_ns),
				findings      = findings + excluded.findings`,
			name, version, d.first, d.last, d.count); err != nil {
			return fmt.Errorf("ingest: update node %s: %w", name, err)
		}
		for k, n := range d.kinds {
			if _, err := tx.ExecContext(ctx, `INSERT INTO node_kinds (node, kind, count) VALUES (?, ?, ?)
				ON CONFLICT(node, kind) DO UPDATE SET count = count + excluded.count`, name, int32(k), n); err != nil {
				return fmt.Errorf("ingest: update node %s counts: %w", name, err)
			}
		}
	}
	r.res = res
	return nil
}

// Query implements store.Store.
func (s *Store) Query(ctx context.Context, q *loupev1.QueryRequest, fn func(*loupev1.Finding) error) error {
	if err := store.CheckQuery(q); err != nil {
		return err
	}
	sqlText, args := s.querySQL(ctx, q)
	rows, err := s.r.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return fmt.Errorf("query findings: %w", err)
	}
	defer rows.Close()
	var body []byte
	for rows.Next() {
		if err := rows.Scan(&body); err != nil {
			return fmt.Errorf("query findings: %w", err)
		}
		f := &loupev1.Finding{}
		if err := proto.Unmarshal(body, f); err != nil {
			return fmt.Errorf("query findings: decode stored finding: %w", err)
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query findings: %w", err)
	}
	return nil
}

// querySQL is the statement and arguments that answer a checked q.
func (s *Store) querySQL(ctx context.Context, q *loupev1.QueryRequest) (string, []any) {
	limit, _ := store.EffectiveLimit(q)
	var (
		where []string
		args  []any
	)
	add := func(cond string, a ...any) {
		where = append(where, cond)
		args = append(args, a...)
	}
	if t := q.GetSince(); t != nil {
		add("time_ns >= ?", store.ClampNanos(t.AsTime()))
	}
	if t := q.GetUntil(); t != nil {
		add("time_ns < ?", store.ClampNanos(t.AsTime()))
	}
	if ks := q.GetKinds(); len(ks) > 0 {
		ph := make([]string, len(ks))
		for i, k := range ks {
			ph[i] = "?"
			args = append(args, int32(k))
		}
		where = append(where, "kind IN ("+strings.Join(ph, ",")+")")
	}
	if sev := q.GetMinSeverity(); sev > loupev1.Severity_SEVERITY_INFO {
		add("severity >= ?", int32(sev))
	}
	if ns := q.GetNodes(); len(ns) > 0 {
		ph := make([]string, len(ns))
		for i, n := range ns {
			ph[i] = "?"
			args = append(args, n)
		}
		where = append(where, "node IN ("+strings.Join(ph, ",")+")")
	}
	// Prefix filters (a container id prefix, a pod or image glob's literal
	// prefix) are index ranges whose size the planner cannot estimate (no
	// sqlite_stat4): a narrow one is the best index, a broad one ("api-*"
	// in a large fleet) makes it read and sort every match before the
	// limit applies. A bounded count on the index alone tells them apart;
	// a broad range is left out of index selection ("+" on the column), so
	// the time order index is scanned instead and the scan stops at the
	// limit.
	podExact := q.GetPod() != "" && !strings.Contains(q.GetPod(), "*")
	podLo, podHi, podRange := "", "", false
	if v := q.GetPod(); v != "" && !podExact {
		podLo, podHi, podRange = prefixRange(v)
		podRange = podRange && !s.broad(ctx, "pod >= ? AND pod < ?", podLo, podHi)
	}
	ctrPattern := ""
	ctrIndexed := false
	if v := q.GetContainerId(); v != "" {
		ctrPattern = store.GlobLiteral(v) + "*"
		// A whole id (64 hex, as the join's lookups pass) names one
		// container: no need to count.
		ctrIndexed = len(v) >= 64 || !s.broad(ctx, "container_id GLOB ?", ctrPattern)
	}
	if v := q.GetNamespace(); v != "" {
		if podExact || podRange || ctrIndexed {
			// The pod and container indexes are far more selective: keep
			// the planner off the namespace index ("+" disables it).
			add("+namespace = ?", v)
		} else {
			add("namespace = ?", v)
		}
	}
	if v := q.GetPod(); v != "" {
		switch {
		case podExact:
			add("pod = ?", v)
		case podRange:
			add("pod GLOB ?", store.GlobToSQLite(v))
			add("pod >= ? AND pod < ?", podLo, podHi) // an index range for the literal prefix
		default:
			add("+pod GLOB ?", store.GlobToSQLite(v))
		}
	}
	if ctrPattern != "" {
		if ctrIndexed {
			add("container_id GLOB ?", ctrPattern)
		} else {
			add("+container_id GLOB ?", ctrPattern)
		}
	}
	if v := q.GetImage(); v != "" {
		if strings.Contains(v, "*") {
			if lo, hi, ok := prefixRange(v); ok && !s.broad(ctx, "image >= ? AND image < ?", lo, hi) {
				add("image GLOB ?", store.GlobToSQLite(v))
				add("image >= ? AND image < ?", lo, hi)
			} else {
				add("+image GLOB ?", store.GlobToSQLite(v))
			}
		} else {
			add("image = ?", v)
		}
	}
	if v := q.GetSha256(); v != "" {
		// "<> ''" lets SQLite use the partial index findings_sha256.
		add("sha256 = ? AND sha256 <> ''", strings.ToLower(strings.TrimPrefix(v, "sha256:")))
	}
	if v := q.GetGrep(); v != "" {
		add("instr(search, ?) > 0", strings.ToLower(v))
	}
	if v := q.GetUser(); v != "" {
		// "<> ''" lets SQLite use the partial index findings_user_time.
		if strings.Contains(v, "*") {
			add("k8s_user GLOB ? AND k8s_user <> ''", store.GlobToSQLite(v))
		} else {
			add("k8s_user = ? AND k8s_user <> ''", v)
		}
	}
	sqlText := "SELECT body FROM findings"
	if len(where) > 0 {
		sqlText += " WHERE " + strings.Join(where, " AND ")
	}
	if q.GetOrder() == loupev1.Order_ORDER_OLDEST_FIRST {
		sqlText += " ORDER BY time_ns ASC, seq ASC"
	} else {
		sqlText += " ORDER BY time_ns DESC, seq DESC"
	}
	sqlText += " LIMIT ?"
	return sqlText, append(args, limit)
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id string) (*loupev1.Finding, error) {
	var body []byte
	err := s.r.QueryRowContext(ctx, `SELECT body FROM findings WHERE id = ?`, id).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("finding %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get finding %s: %w", id, err)
	}
	f := &loupev1.Finding{}
	if err := proto.Unmarshal(body, f); err != nil {
		return nil, fmt.Errorf("get finding %s: decode: %w", id, err)
	}
	return f, nil
}

// Counts implements store.Store.
func (s *Store) Counts(ctx context.Context, since, until time.Time) ([]store.Count, error) {
	if err := store.CheckCountSpan(since, until); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT time_ns / 3600000000000, kind, severity, count(*) FROM findings
		WHERE time_ns >= ? AND time_ns < ? GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`, store.ClampNanos(since), store.ClampNanos(until))
	if err != nil {
		return nil, fmt.Errorf("count findings: %w", err)
	}
	defer rows.Close()
	var out []store.Count
	for rows.Next() {
		var (
			h         int64
			kind, sev int32
			c         store.Count
		)
		if err := rows.Scan(&h, &kind, &sev, &c.N); err != nil {
			return nil, fmt.Errorf("count findings: %w", err)
		}
		c.Hour, c.Kind, c.Severity = time.Unix(h*3600, 0).UTC(), loupev1.Kind(kind), loupev1.Severity(sev)
		out = append(out, c)
	}
	return out, rows.Err()
}

// prefixRange is the range [lo, hi) of strings that start with the literal
// part of pattern p before its first '*' (ok is false without one).
// broadRows is the number of index entries above which a prefix range is
// broad (see querySQL). Reading and sorting that many entries costs more than
// walking the time index in the cases measured (docs/performance.md): a pod
// prefix of 31,000 findings is still best served by its index, a prefix of
// a million is not.
const broadRows = 50000

// broad reports whether more than broadRows findings match cond, counted
// on cond's index alone and stopped there. An error counts as narrow (the
// query then plans as before).
func (s *Store) broad(ctx context.Context, cond string, args ...any) bool {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM findings WHERE `+cond+` LIMIT ?)`,
		append(args, broadRows+1)...).Scan(&n)
	return err == nil && n > broadRows
}

func prefixRange(p string) (lo, hi string, ok bool) {
	lo, _, _ = strings.Cut(p, "*")
	for i := len(lo) - 1; i >= 0; i-- {
		if lo[i] != 0xff {
			return lo, lo[:i] + string([]byte{lo[i] + 1}), true
		}
	}
	return "", "", false
}

// Nodes implements store.Store.
func (s *Store) Nodes(ctx context.Context) ([]*loupev1.Node, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT name, agent_version, first_seen_ns, last_seen_ns, findings FROM nodes ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var out []*loupev1.Node
	byName := map[string]*loupev1.Node{}
	for rows.Next() {
		var (
			n           loupev1.Node
			first, last int64
		)
		if err := rows.Scan(&n.Name, &n.AgentVersion, &first, &last, &n.Findings); err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		n.FirstSeen, n.LastSeen = store.TimestampFromNanos(first), store.TimestampFromNanos(last)
		n.FindingsByKind = map[string]int64{}
		out = append(out, &n)
		byName[n.Name] = &n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	rows.Close()
	krows, err := s.r.QueryContext(ctx, `SELECT node, kind, count FROM node_kinds WHERE count > 0`)
	if err != nil {
		return nil, fmt.Errorf("list node counts: %w", err)
	}
	defer krows.Close()
	for krows.Next() {
		var (
			name  string
			kind  int32
			count int64
		)
		if err := krows.Scan(&name, &kind, &count); err != nil {
			return nil, fmt.Errorf("list node counts: %w", err)
		}
		if n := byName[name]; n != nil {
			n.FindingsByKind[loupev1.Kind(kind).ShortName()] = count
		}
	}
	return out, krows.Err()
}

// extendSession records that node's agent reported at t: the session it
// continues (one that ended at most store.SessionGap before t) is extended,
// else a new one starts.
func extendSession(ctx context.Context, tx *sql.Tx, node string, t int64) error {
	r, err := tx.ExecContext(ctx, `UPDATE node_sessions SET end_ns = max(end_ns, ?1)
		WHERE node = ?2 AND end_ns >= ?1 - ?3 AND start_ns <= ?1`, t, node, int64(store.SessionGap))
	if err != nil {
		return fmt.Errorf("ingest: update node %s session: %w", node, err)
	}
	if n, err := r.RowsAffected(); err != nil || n > 0 {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO node_sessions (node, start_ns, end_ns) VALUES (?1, ?2, ?2)
		ON CONFLICT (node, start_ns) DO UPDATE SET end_ns = max(end_ns, excluded.end_ns)`, node, t); err != nil {
		return fmt.Errorf("ingest: start node %s session: %w", node, err)
	}
	return nil
}

// Sessions implements store.Store.
func (s *Store) Sessions(ctx context.Context, nodes []string, since, until time.Time) ([]store.Session, error) {
	if err := store.CheckSessions(nodes, since, until); err != nil {
		return nil, err
	}
	ph := strings.TrimSuffix(strings.Repeat("?,", len(nodes)), ",")
	args := []any{store.ClampNanos(since), store.ClampNanos(until)}
	for _, n := range nodes {
		args = append(args, n)
	}
	args = append(args, store.MaxSessions+1)
	rows, err := s.r.QueryContext(ctx, `SELECT node, start_ns, end_ns FROM node_sessions
		WHERE end_ns >= ? AND start_ns < ? AND node IN (`+ph+`) ORDER BY node, start_ns LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("read agent sessions: %w", err)
	}
	defer rows.Close()
	var out []store.Session
	for rows.Next() {
		var (
			ss         store.Session
			start, end int64
		)
		if err := rows.Scan(&ss.Node, &start, &end); err != nil {
			return nil, fmt.Errorf("read agent sessions: %w", err)
		}
		ss.Start, ss.End = time.Unix(0, start).UTC(), time.Unix(0, end).UTC()
		out = append(out, ss)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read agent sessions: %w", err)
	}
	if len(out) > store.MaxSessions {
		return nil, store.ErrTooManySessions
	}
	return store.MergeSessions(out), nil
}

// pruneBatch bounds how long one prune transaction holds the write lock.
const pruneBatch = 5000

// Prune implements store.Store. It deletes in batches of pruneBatch rows,
// one transaction each, so ingest is never blocked for long, and keeps the
// node counts in step.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	cut := before.UnixNano()
	var total int64
	for {
		n, err := s.pruneOnce(ctx, cut)
		total += n
		if err != nil {
			return total, fmt.Errorf("prune findings before %s: %w", before.Format(time.RFC3339), err)
		}
		if n < pruneBatch {
			if _, err := s.w.ExecContext(ctx, `DELETE FROM node_sessions WHERE end_ns < ?`, cut); err != nil {
				return total, fmt.Errorf("prune agent sessions before %s: %w", before.Format(time.RFC3339), err)
			}
			return total, nil
		}
	}
}

func (s *Store) pruneOnce(ctx context.Context, cut int64) (int64, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	const victims = `SELECT seq FROM findings WHERE time_ns < ? ORDER BY time_ns, seq LIMIT ?`
	rows, err := tx.QueryContext(ctx, `SELECT node, kind, count(*) FROM findings WHERE seq IN (`+victims+`) GROUP BY node, kind`, cut, pruneBatch)
	if err != nil {
		return 0, err
	}
	type nk struct {
		node string
		kind int32
		n    int64
	}
	var counts []nk
	for rows.Next() {
		var c nk
		if err := rows.Scan(&c.node, &c.kind, &c.n); err != nil {
			rows.Close()
			return 0, err
		}
		counts = append(counts, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(counts) == 0 {
		return 0, nil
	}
	r, err := tx.ExecContext(ctx, `DELETE FROM findings WHERE seq IN (`+victims+`)`, cut, pruneBatch)
	if err != nil {
		return 0, err
	}
	deleted, err := r.RowsAffected()
	if err != nil {
		return 0, err
	}
	for _, c := range counts {
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET findings = max(findings - ?, 0) WHERE name = ?`, c.n, c.node); err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE node_kinds SET count = max(count - ?, 0) WHERE node = ? AND kind = ?`, c.n, c.node, c.kind); err != nil {
			return 0, err
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM node_kinds WHERE count <= 0`); err != nil {
		return 0, err
	}
	return deleted, tx.Commit()
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, `SELECT 1 FROM schema_version`).Scan(&one); err != nil {
		return fmt.Errorf("sqlite %s: %w", s.path, err)
	}
	return nil
}

// Optimize refreshes the query planner's statistics (PRAGMA optimize).
func (s *Store) Optimize(ctx context.Context) error {
	if _, err := s.w.ExecContext(ctx, `PRAGMA optimize=0x10002`); err != nil {
		return fmt.Errorf("optimize sqlite store: %w", err)
	}
	return nil
}

// Close implements store.Store: it refreshes planner statistics, then
// closes both connection pools (the last close checkpoints the WAL).
func (s *Store) Close() error {
	var errs []error
	s.closeOnce.Do(func() { close(s.closing) })
	<-s.writerDone
	if s.ins != nil {
		errs = append(errs, s.ins.Close())
	}
	if _, err := s.w.Exec(`PRAGMA optimize`); err != nil {
		errs = append(errs, fmt.Errorf("optimize: %w", err))
	}
	errs = append(errs, s.r.Close(), s.w.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sqlite store %s: %w", s.path, err)
	}
	return nil
}

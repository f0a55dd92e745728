// Package postgres is the collector's store for fleets: PostgreSQL through a
// pgx connection pool, shared by any number of stateless collector replicas.
//
// Findings live in a table partitioned by day of the finding's time, with
// indexed columns for every query filter and the full finding as a protobuf
// blob. Ingest is idempotent by (id, time): one INSERT … SELECT FROM unnest
// … ON CONFLICT DO NOTHING RETURNING per batch, so two replicas given the
// same batch at once store it once, and each learns which rows it inserted.
// Node counts are kept per node, kind and day in the same transaction, so
// retention drops whole day partitions and stays exact without a scan.
// Migrations run under an advisory lock (replicas that start together
// migrate once).
//
// DSN: postgres://user:password@host:5432/database?sslmode=verify-full, with
// every libpq/pgx parameter (pool_max_conns, connect_timeout, …) and any
// server setting as a parameter (e.g. statement_timeout=10s; the default is
// 30s, so no query runs unbounded).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
)

func init() {
	open := func(ctx context.Context, dsn string) (store.Store, error) { return Open(ctx, dsn) }
	store.Register("postgres", open)
	store.Register("postgresql", open)
}

// Defaults applied to a DSN that does not set them.
const (
	DefaultStatementTimeout = "30s"
	DefaultConnectTimeout   = 10 * time.Second
	applicationName         = "loupe-collector"
)

// Store is the PostgreSQL implementation of store.Store.
type Store struct {
	pool   *pgxpool.Pool
	target string // host:port/database, for messages
	now    func() time.Time

	mu    sync.Mutex
	parts map[int32]bool // days whose partition is known to exist
}

var _ store.Store = (*Store)(nil)

// Open connects to the database of dsn, checks that it answers and
// migrates its schema to the current version.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres DSN: %s (want postgres://user:password@host:5432/database?sslmode=verify-full)", redact(err))
	}
	cc := cfg.ConnConfig
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	if _, ok := cc.RuntimeParams["statement_timeout"]; !ok {
		cc.RuntimeParams["statement_timeout"] = DefaultStatementTimeout
	}
	if _, ok := cc.RuntimeParams["application_name"]; !ok {
		cc.RuntimeParams["application_name"] = applicationName
	}
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = DefaultConnectTimeout
	}
	s := &Store{target: fmt.Sprintf("%s/%s", net.JoinHostPort(cc.Host, fmt.Sprint(cc.Port)), cc.Database), now: time.Now, parts: map[int32]bool{}}
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("postgres store %s: %w", s.target, err)
	}
	if err := s.pool.Ping(ctx); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("postgres store: cannot connect to %s as user %q: %s", s.target, cc.User, Reason(err))
	}
	if err := migrate(ctx, s.pool, SchemaVersion()); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("postgres store %s: %s", s.target, Reason(err))
	}
	return s, nil
}

// Reason is the cause of a connection or statement error in one short
// phrase: the server's message (with its SQLSTATE), or the network error.
func Reason(err error) string {
	var pgErr *pgconn.PgError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &pgErr):
		return fmt.Sprintf("%s (SQLSTATE %s)", pgErr.Message, pgErr.Code)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (is PostgreSQL running and listening there?)"
	case errors.As(err, &dnsErr):
		return "no such host " + dnsErr.Name
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return "timed out"
	}
	return redact(err)
}

// redact keeps passwords of a DSN out of an error message.
func redact(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "password="); i >= 0 {
		j := strings.IndexAny(msg[i:], " &")
		if j < 0 {
			j = len(msg) - i
		}
		msg = msg[:i] + "password=xxxxx" + msg[i+j:]
	}
	return msg
}

// Target is host:port/database of the store, for logs.
func (s *Store) Target() string { return s.target }

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres %s: %s", s.target, Reason(err))
	}
	return nil
}

const nsPerDay = int64(24 * time.Hour)

func dayOf(ns int64) int32 { return int32(ns / nsPerDay) }

// row is one finding ready to insert.
type row struct {
	i    int // index in the batch
	id   uuid.UUID
	ns   int64
	body []byte
	f    *loupev1.Finding
}

const insertSQL = `INSERT INTO findings
	(id, time_ns, node, kind, severity, namespace, pod, container_id, image, sha256, search, received_ns, body, k8s_user)
	SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::int4[], $5::int4[], $6::text[], $7::text[],
		$8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], $13::bytea[], $14::text[])
	ON CONFLICT DO NOTHING
	RETURNING id, time_ns`

// maxTxAttempts bounds the retries of a batch that lost a deadlock or
// serialization conflict with another replica's transaction.
const maxTxAttempts = 5

// Ingest implements store.Store.
func (s *Store) Ingest(ctx context.Context, node store.NodeInfo, findings []*loupev1.Finding) (store.IngestResult, error) {
	if node.Seen.IsZero() {
		node.Seen = s.now()
	}
	recv := node.Seen.UnixNano()
	rows := make([]row, len(findings))
	days := map[int32]bool{}
	for i, f := range findings {
		id, err := uuid.Parse(f.GetId())
		if err != nil {
			return store.IngestResult{}, fmt.Errorf("ingest: finding id %q is not a UUID", f.GetId())
		}
		b, err := proto.Marshal(f)
		if err != nil {
			return store.IngestResult{}, fmt.Errorf("ingest: encode finding %s: %w", f.GetId(), err)
		}
		ns := f.GetTime().AsTime().UnixNano()
		rows[i] = row{i: i, id: id, ns: ns, body: b, f: f}
		days[dayOf(ns)] = true
	}
	if err := s.ensurePartitions(ctx, days); err != nil {
		return store.IngestResult{}, fmt.Errorf("ingest: %w", err)
	}
	// Rows in key order: two transactions that insert overlapping batches
	// take their row locks in the same order and cannot deadlock.
	slices.SortStableFunc(rows, func(a, b row) int {
		if c := strings.Compare(string(a.id[:]), string(b.id[:])); c != 0 {
			return c
		}
		return int(max(min(a.ns-b.ns, 1), -1))
	})
	var (
		res store.IngestResult
		err error
	)
	for attempt := 1; ; attempt++ {
		res, err = s.ingestTx(ctx, node, recv, rows)
		var pgErr *pgconn.PgError
		if err == nil || attempt == maxTxAttempts || !errors.As(err, &pgErr) || (pgErr.Code != "40P01" && pgErr.Code != "40001") {
			break
		}
	}
	if err != nil {
		return store.IngestResult{}, fmt.Errorf("ingest into %s: %s", s.target, Reason(err))
	}
	return res, nil
}

type nodeKey struct {
	node string
	kind int32
	day  int32
}

func (s *Store) ingestTx(ctx context.Context, node store.NodeInfo, recv int64, rows []row) (store.IngestResult, error) {
	res := store.IngestResult{Inserted: make([]bool, len(rows))}
	n := len(rows)
	var (
		ids                                          = make([]uuid.UUID, n)
		times, received                              = make([]int64, n), make([]int64, n)
		nodes, nss, pods, cids, images, shas, search = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		users                                        = make([]string, n)
		kinds, sevs                                  = make([]int32, n), make([]int32, n)
		bodies                                       = make([][]byte, n)
	)
	for j, r := range rows {
		f, c := r.f, r.f.GetContainer()
		ids[j], times[j], received[j], bodies[j] = r.id, r.ns, recv, r.body
		nodes[j], kinds[j], sevs[j] = f.GetNode(), int32(f.GetKind()), int32(f.GetSeverity())
		nss[j], pods[j], cids[j], images[j] = c.GetNamespace(), c.GetPod(), c.GetId(), c.GetImage()
		shas[j], search[j] = strings.ToLower(f.GetFile().GetSha256()), store.SearchText(f)
		users[j] = f.GetAudit().GetUser()
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		type key struct {
			id uuid.UUID
			ns int64
		}
		got := map[key]bool{}
		rs, err := tx.Query(ctx, insertSQL, ids, times, nodes, kinds, sevs, nss, pods, cids, images, shas, search, received, bodies, users)
		if err != nil {
			return err
		}
		for rs.Next() {
			var k key
			if err := rs.Scan(&k.id, &k.ns); err != nil {
				rs.Close()
				return err
			}
			got[k] = true
		}
		if err := rs.Err(); err != nil {
			return err
		}
		// The first row of each inserted key was inserted now; repeats of a
		// key inside the batch and rows already stored are duplicates.
		counts := map[nodeKey]int64{}
		type span struct{ first, last, count int64 }
		spans := map[string]*span{}
		if node.Name != "" {
			spans[node.Name] = &span{first: recv, last: recv}
		}
		res.Stored, res.Duplicates = 0, 0
		clear(res.Inserted)
		for _, r := range rows {
			k := key{r.id, r.ns}
			if !got[k] {
				res.Duplicates++
				continue
			}
			delete(got, k)
			res.Stored++
			res.Inserted[r.i] = true
			name := r.f.GetNode()
			if name == "" {
				continue // a Kubernetes audit event: no node of its own
			}
			counts[nodeKey{name, int32(r.f.GetKind()), dayOf(r.ns)}]++
			sp := spans[name]
			if sp == nil {
				sp = &span{first: r.ns, last: r.ns}
				spans[name] = sp
			}
			if name != node.Name {
				sp.first, sp.last = min(sp.first, r.ns), max(sp.last, r.ns)
			}
			sp.count++
		}
		// Node bookkeeping in name order (the lock order of every writer).
		names := make([]string, 0, len(spans))
		for name := range spans {
			names = append(names, name)
		}
		slices.Sort(names)
		var (
			versions           = make([]string, len(names))
			firsts, lasts, cnt = make([]int64, len(names)), make([]int64, len(names)), make([]int64, len(names))
		)
		for i, name := range names {
			sp := spans[name]
			if name == node.Name {
				versions[i] = node.AgentVersion
			}
			firsts[i], lasts[i], cnt[i] = sp.first, sp.last, sp.count
		}
		keys := make([]nodeKey, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b nodeKey) int {
			return cmpKeys(a, b)
		})
		var (
			kNodes        = make([]string, len(keys))
			kKinds, kDays = make([]int32, len(keys)), make([]int32, len(keys))
			kCounts       = make([]int64, len(keys))
		)
		for i, k := range keys {
			kNodes[i], kKinds[i], kDays[i], kCounts[i] = k.node, k.kind, k.day, counts[k]
		}
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO nodes AS n (name, agent_version, first_seen_ns, last_seen_ns, findings)
			SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[])
			ON CONFLICT (name) DO UPDATE SET
				agent_version = CASE WHEN excluded.agent_version <> '' THEN excluded.agent_version ELSE n.agent_version END,
				first_seen_ns = least(n.first_seen_ns, excluded.first_seen_ns),
				last_seen_ns  = greatest(n.last_seen_ns, excluded.last_seen_ns),
				findings      = n.findings + excluded.findings`, names, versions, firsts, lasts, cnt)
		if len(keys) > 0 {
			b.Queue(`INSERT INTO node_kinds AS k (node, kind, count)
				SELECT node, kind, sum(count) FROM unnest($1::text[], $2::int4[], $3::int8[]) AS u(node, kind, count)
				GROUP BY node, kind ORDER BY node, kind
				ON CONFLICT (node, kind) DO UPDATE SET count = k.count + excluded.count`, kNodes, kKinds, kCounts)
			b.Queue(`INSERT INTO node_kind_days AS d (day, node, kind, count)
				SELECT * FROM unnest($1::int4[], $2::text[], $3::int4[], $4::int8[])
				ON CONFLICT (day, node, kind) DO UPDATE SET count = d.count + excluded.count`, kDays, kNodes, kKinds, kCounts)
		}
		if node.Name != "" {
			// The sender's session: extend the one this batch continues, or start one.
			b.Queue(`WITH extended AS (
				UPDATE node_sessions SET end_ns = greatest(end_ns, $2)
				WHERE node = $1::text AND end_ns >= $2::int8 - $3::int8 AND start_ns <= $2::int8 RETURNING 1)
				INSERT INTO node_sessions AS s (node, start_ns, end_ns) SELECT $1::text, $2::int8, $2::int8 WHERE NOT EXISTS (SELECT 1 FROM extended)
				ON CONFLICT (node, start_ns) DO UPDATE SET end_ns = greatest(s.end_ns, excluded.end_ns)`,
				node.Name, recv, int64(store.SessionGap))
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return store.IngestResult{}, err
	}
	return res, nil
}

// cmpKeys orders node counters as every writer locks them: node, kind, day.
func cmpKeys(a, b nodeKey) int {
	if c := strings.Compare(a.node, b.node); c != 0 {
		return c
	}
	if a.kind != b.kind {
		return int(a.kind - b.kind)
	}
	return int(a.day - b.day)
}

// likePattern turns a user pattern where '*' matches any run of characters
// into a LIKE pattern that matches every other character literally.
func likePattern(p string, literal bool) string {
	var b strings.Builder
	for _, r := range p {
		switch {
		case r == '\\' || r == '%' || r == '_':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '*' && !literal:
			b.WriteByte('%')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Query implements store.Store.
func (s *Store) Query(ctx context.Context, q *loupev1.QueryRequest, fn func(*loupev1.Finding) error) error {
	if err := store.CheckQuery(q); err != nil {
		return err
	}
	limit, _ := store.EffectiveLimit(q)
	var (
		where []string
		args  []any
	)
	add := func(cond string, a any) {
		args = append(args, a)
		where = append(where, strings.ReplaceAll(cond, "$?", fmt.Sprintf("$%d", len(args))))
	}
	if t := q.GetSince(); t != nil {
		add("time_ns >= $?", store.ClampNanos(t.AsTime()))
	}
	if t := q.GetUntil(); t != nil {
		add("time_ns < $?", store.ClampNanos(t.AsTime()))
	}
	if ks := q.GetKinds(); len(ks) > 0 {
		k32 := make([]int32, len(ks))
		for i, k := range ks {
			k32[i] = int32(k)
		}
		add("kind = ANY($?::int4[])", k32)
	}
	if sev := q.GetMinSeverity(); sev > loupev1.Severity_SEVERITY_INFO {
		add("severity >= $?", int32(sev))
	}
	if ns := q.GetNodes(); len(ns) > 0 {
		add("node = ANY($?::text[])", ns)
	}
	if v := q.GetNamespace(); v != "" {
		add("namespace = $?", v)
	}
	if v := q.GetPod(); v != "" {
		if strings.Contains(v, "*") {
			add("pod LIKE $?", likePattern(v, false))
		} else {
			add("pod = $?", v)
		}
	}
	if v := q.GetContainerId(); v != "" {
		add("container_id LIKE $?", likePattern(v, true)+"%")
	}
	if v := q.GetImage(); v != "" {
		if strings.Contains(v, "*") {
			add("image LIKE $?", likePattern(v, false))
		} else {
			add("image = $?", v)
		}
	}
	if v := q.GetSha256(); v != "" {
		add("sha256 = $? AND sha256 <> ''", strings.ToLower(strings.TrimPrefix(v, "sha256:")))
	}
	if v := q.GetGrep(); v != "" {
		add("strpos(search, $?) > 0", strings.ToLower(v))
	}
	if v := q.GetUser(); v != "" {
		if strings.Contains(v, "*") {
			add("k8s_user LIKE $? AND k8s_user <> ''", likePattern(v, false))
		} else {
			add("k8s_user = $? AND k8s_user <> ''", v)
		}
	}
	sqlText := "SELECT body FROM findings"
	if len(where) > 0 {
		sqlText += " WHERE " + strings.Join(where, " AND ")
	}
	if q.GetOrder() == loupev1.Order_ORDER_OLDEST_FIRST {
		sqlText += " ORDER BY time_ns ASC, id ASC"
	} else {
		sqlText += " ORDER BY time_ns DESC, id DESC"
	}
	args = append(args, limit)
	sqlText += fmt.Sprintf(" LIMIT $%d", len(args))
	rows, err := s.pool.Query(ctx, sqlText, args...)
	if err != nil {
		return fmt.Errorf("query findings in %s: %s", s.target, Reason(err))
	}
	defer rows.Close()
	for rows.Next() {
		f := &loupev1.Finding{}
		if err := proto.Unmarshal(rows.RawValues()[0], f); err != nil {
			return fmt.Errorf("query findings: decode stored finding: %w", err)
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query findings in %s: %s", s.target, Reason(err))
	}
	return nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id string) (*loupev1.Finding, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("finding %q: %w", id, store.ErrNotFound)
	}
	var body []byte
	err = s.pool.QueryRow(ctx, `SELECT body FROM findings WHERE id = $1 ORDER BY time_ns LIMIT 1`, u).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("finding %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get finding %s from %s: %s", id, s.target, Reason(err))
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
	rows, err := s.pool.Query(ctx, `SELECT time_ns / 3600000000000, kind, severity, count(*) FROM findings
		WHERE time_ns >= $1 AND time_ns < $2 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`, store.ClampNanos(since), store.ClampNanos(until))
	if err != nil {
		return nil, fmt.Errorf("count findings in %s: %s", s.target, Reason(err))
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
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count findings in %s: %s", s.target, Reason(err))
	}
	return out, nil
}

// Sessions implements store.Store.
func (s *Store) Sessions(ctx context.Context, nodes []string, since, until time.Time) ([]store.Session, error) {
	if err := store.CheckSessions(nodes, since, until); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT node, start_ns, end_ns FROM node_sessions
		WHERE node = ANY($1) AND end_ns >= $2 AND start_ns < $3 ORDER BY node, start_ns LIMIT $4`,
		nodes, store.ClampNanos(since), store.ClampNanos(until), store.MaxSessions+1)
	if err != nil {
		return nil, fmt.Errorf("read agent sessions in %s: %s", s.target, Reason(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Session, error) {
		var (
			ss         store.Session
			start, end int64
		)
		err := r.Scan(&ss.Node, &start, &end)
		ss.Start, ss.End = time.Unix(0, start).UTC(), time.Unix(0, end).UTC()
		return ss, err
	})
	if err != nil {
		return nil, fmt.Errorf("read agent sessions in %s: %s", s.target, Reason(err))
	}
	if len(out) > store.MaxSessions {
		return nil, store.ErrTooManySessions
	}
	return store.MergeSessions(out), nil
}

// Nodes implements store.Store.
func (s *Store) Nodes(ctx context.Context) ([]*loupev1.Node, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, agent_version, first_seen_ns, last_seen_ns, findings FROM nodes ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list nodes in %s: %s", s.target, Reason(err))
	}
	var out []*loupev1.Node
	byName := map[string]*loupev1.Node{}
	for rows.Next() {
		var (
			n           loupev1.Node
			first, last int64
		)
		if err := rows.Scan(&n.Name, &n.AgentVersion, &first, &last, &n.Findings); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		n.FirstSeen, n.LastSeen = store.TimestampFromNanos(first), store.TimestampFromNanos(last)
		n.FindingsByKind = map[string]int64{}
		out = append(out, &n)
		byName[n.Name] = &n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list nodes in %s: %s", s.target, Reason(err))
	}
	krows, err := s.pool.Query(ctx, `SELECT node, kind, count FROM node_kinds WHERE count > 0`)
	if err != nil {
		return nil, fmt.Errorf("list node counts in %s: %s", s.target, Reason(err))
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
	if err := krows.Err(); err != nil {
		return nil, fmt.Errorf("list node counts in %s: %s", s.target, Reason(err))
	}
	return out, nil
}

// Optimize refreshes the query planner's statistics (ANALYZE), e.g. after
// a bulk load; autovacuum does it on its own otherwise.
func (s *Store) Optimize(ctx context.Context) error {
	// ANALYZE of a large table outlasts the default statement timeout.
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `ANALYZE findings, nodes, node_kinds, node_kind_days`)
		return err
	})
	if err != nil {
		return fmt.Errorf("optimize postgres store %s: %s", s.target, Reason(err))
	}
	return nil
}

// Close implements store.Store.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

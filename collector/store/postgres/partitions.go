package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Partitions. Each UTC day of finding time within the window below gets its
// own partition, findings_pYYYYMMDD, created on first use; findings outside
// the window (clock skew, replays of old data) go to findings_default, so a
// sender cannot make the database hold one partition per day of 1970…2261.
// When a day's partition is created, the rows of that day already in the
// default partition move into it in the same transaction. Retention drops
// whole day partitions (a catalog change, not a DELETE) and deletes only
// what is left in the default partition and in a day cut in the middle.
const (
	partitionPastDays   = 400
	partitionFutureDays = 2
	partitionPrefix     = "findings_p"
	partitionDayLayout  = "20060102"
	pruneBatch          = 5000
	// pruneLockTimeout bounds how long retention waits for the lock that
	// dropping a partition needs; it then gives up until its next run
	// rather than queue ingest behind a long query.
	pruneLockTimeout = "5s"
)

// PartitionSize implements store.Partitioned: one partition per UTC day.
func (s *Store) PartitionSize() time.Duration { return time.Duration(nsPerDay) }

func partitionName(day int32) string {
	return partitionPrefix + time.Unix(int64(day)*86400, 0).UTC().Format(partitionDayLayout)
}

func partitionDay(name string) (int32, bool) {
	rest, ok := strings.CutPrefix(name, partitionPrefix)
	if !ok {
		return 0, false
	}
	t, err := time.Parse(partitionDayLayout, rest)
	if err != nil {
		return 0, false
	}
	return int32(t.Unix() / 86400), true
}

// ensurePartitions creates the partitions of days that fall in the window
// and are not known to exist yet. Creation is serialised across replicas by
// an advisory lock and is idempotent.
func (s *Store) ensurePartitions(ctx context.Context, days map[int32]bool) error {
	today := dayOf(s.now().UnixNano())
	var need []int32
	s.mu.Lock()
	for d := range days {
		if !s.parts[d] && d >= today-partitionPastDays && d <= today+partitionFutureDays {
			need = append(need, d)
		}
	}
	s.mu.Unlock()
	slices.Sort(need)
	for _, d := range need {
		if err := s.createPartition(ctx, d); err != nil {
			return fmt.Errorf("create partition %s: %s", partitionName(d), Reason(err))
		}
		s.mu.Lock()
		s.parts[d] = true
		s.mu.Unlock()
	}
	return nil
}

func (s *Store) createPartition(ctx context.Context, day int32) error {
	name := partitionName(day)
	lo, hi := int64(day)*nsPerDay, int64(day+1)*nsPerDay
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockPartitions); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		ident := pgx.Identifier{name}.Sanitize()
		for _, q := range []string{
			`CREATE TABLE ` + ident + ` (LIKE findings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`,
			fmt.Sprintf(`INSERT INTO %s SELECT * FROM findings_default WHERE time_ns >= %d AND time_ns < %d`, ident, lo, hi),
			fmt.Sprintf(`DELETE FROM findings_default WHERE time_ns >= %d AND time_ns < %d`, lo, hi),
			fmt.Sprintf(`ALTER TABLE findings ATTACH PARTITION %s FOR VALUES FROM (%d) TO (%d)`, ident, lo, hi),
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
}

// Partitions lists the day partitions that exist, oldest first.
func (s *Store) Partitions(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'findings'::regclass AND c.relname LIKE 'findings\_p%' ORDER BY c.relname`)
	if err != nil {
		return nil, fmt.Errorf("list partitions in %s: %s", s.target, Reason(err))
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list partitions in %s: %s", s.target, Reason(err))
	}
	return names, nil
}

// Prune implements store.Store: the day partitions that end at or before
// before are dropped with their per-day counts; what is left older than
// before (in the default partition, or a day cut in the middle) is deleted
// in batches of pruneBatch rows.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	cut := before.UnixNano()
	names, err := s.Partitions(ctx)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, name := range names {
		day, ok := partitionDay(name)
		if !ok || int64(day+1)*nsPerDay > cut {
			continue
		}
		n, err := s.dropPartition(ctx, day)
		total += n
		if err != nil {
			return total, fmt.Errorf("prune: drop partition %s: %s", name, Reason(err))
		}
	}
	for {
		n, err := s.pruneRows(ctx, cut)
		total += n
		if err != nil {
			return total, fmt.Errorf("prune findings before %s: %s", before.Format(time.RFC3339), Reason(err))
		}
		if n < pruneBatch {
			if _, err := s.pool.Exec(ctx, `DELETE FROM node_sessions WHERE end_ns < $1`, cut); err != nil {
				return total, fmt.Errorf("prune agent sessions before %s: %s", before.Format(time.RFC3339), Reason(err))
			}
			return total, nil
		}
	}
}

// dropPartition drops one day partition and takes its counts off the node
// tables, in one transaction. It locks findings first, as ingest does, so
// the two cannot deadlock.
func (s *Store) dropPartition(ctx context.Context, day int32) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, q := range []string{
			`SET LOCAL lock_timeout = '` + pruneLockTimeout + `'`,
			`LOCK TABLE findings IN ACCESS EXCLUSIVE MODE`,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		// Another replica's retention may have dropped it while this one waited.
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, partitionName(day)).Scan(&exists); err != nil || !exists {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT coalesce(sum(count), 0)::int8 FROM node_kind_days WHERE day = $1`, day).Scan(&n); err != nil {
			return err
		}
		b := &pgx.Batch{}
		b.Queue(`UPDATE nodes n SET findings = greatest(n.findings - d.count, 0)
			FROM (SELECT node, sum(count) AS count FROM node_kind_days WHERE day = $1 GROUP BY node) d WHERE n.name = d.node`, day)
		b.Queue(`UPDATE node_kinds k SET count = k.count - d.count FROM node_kind_days d
			WHERE d.day = $1 AND k.node = d.node AND k.kind = d.kind`, day)
		b.Queue(`DELETE FROM node_kinds WHERE count <= 0`)
		b.Queue(`DELETE FROM node_kind_days WHERE day = $1`, day)
		b.Queue(`DROP TABLE ` + pgx.Identifier{partitionName(day)}.Sanitize())
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	delete(s.parts, day)
	s.mu.Unlock()
	return n, nil
}

// pruneRows deletes up to pruneBatch findings older than cut and takes them
// off the node counts, in one transaction.
func (s *Store) pruneRows(ctx context.Context, cut int64) (int64, error) {
	var total int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `WITH victims AS (
				SELECT id, time_ns FROM findings WHERE time_ns < $1 ORDER BY time_ns LIMIT $2
			), gone AS (
				DELETE FROM findings f USING victims v WHERE f.id = v.id AND f.time_ns = v.time_ns
				RETURNING f.node, f.kind, f.time_ns
			)
			SELECT node, kind, (time_ns / $3)::int4 AS day, count(*) FROM gone GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
			cut, pruneBatch, nsPerDay)
		if err != nil {
			return err
		}
		var (
			nodes       []string
			kinds, days []int32
			counts      []int64
		)
		for rows.Next() {
			var (
				k nodeKey
				c int64
			)
			if err := rows.Scan(&k.node, &k.kind, &k.day, &c); err != nil {
				rows.Close()
				return err
			}
			nodes, kinds, days, counts = append(nodes, k.node), append(kinds, k.kind), append(days, k.day), append(counts, c)
			total += c
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if total == 0 {
			return nil
		}
		b := &pgx.Batch{}
		b.Queue(`UPDATE nodes n SET findings = greatest(n.findings - d.count, 0)
			FROM (SELECT node, sum(count) AS count FROM unnest($1::text[], $2::int8[]) AS u(node, count) GROUP BY node) d
			WHERE n.name = d.node`, nodes, counts)
		b.Queue(`UPDATE node_kinds k SET count = k.count - d.count
			FROM (SELECT node, kind, sum(count) AS count FROM unnest($1::text[], $2::int4[], $3::int8[]) AS u(node, kind, count) GROUP BY 1, 2) d
			WHERE k.node = d.node AND k.kind = d.kind`, nodes, kinds, counts)
		b.Queue(`DELETE FROM node_kinds WHERE count <= 0`)
		b.Queue(`UPDATE node_kind_days k SET count = k.count - d.count
			FROM unnest($1::int4[], $2::text[], $3::int4[], $4::int8[]) AS d(day, node, kind, count)
			WHERE k.day = d.day AND k.node = d.node AND k.kind = d.kind`, days, nodes, kinds, counts)
		b.Queue(`DELETE FROM node_kind_days WHERE count <= 0`)
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return 0, err
	}
	return total, nil
}

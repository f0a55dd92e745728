package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationFiles are applied in the order of their names; file i brings the
// schema from version i to i+1. Never edit a released migration: add a file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// Advisory lock keys (pg_advisory_lock's bigint space, "loupe" + a number).
const (
	lockMigrate    int64 = 0x6c6f757065_01
	lockPartitions int64 = 0x6c6f757065_02
)

func migrations() ([]string, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]string, len(names))
	for i, n := range names {
		b, err := migrationFiles.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out[i] = string(b)
	}
	return out, nil
}

// SchemaVersion is the schema version this build creates and expects.
func SchemaVersion() int {
	m, _ := migrations()
	return len(m)
}

// migrate brings the database to target, holding a session advisory lock so
// that replicas starting together migrate once: the others wait, then find
// the schema current. Each migration is one transaction.
func migrate(ctx context.Context, pool *pgxpool.Pool, target int) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("read migrations: %w", err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockMigrate); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockMigrate) //nolint:errcheck // the session ends anyway
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS loupe_schema_version (version integer NOT NULL)`); err != nil {
		return fmt.Errorf("create loupe_schema_version: %w", err)
	}
	var cur int
	switch err := conn.QueryRow(ctx, `SELECT version FROM loupe_schema_version`).Scan(&cur); err {
	case nil, pgx.ErrNoRows:
	default:
		return fmt.Errorf("read schema version: %w", err)
	}
	if cur > len(ms) {
		return fmt.Errorf("database schema version %d is newer than this collector supports (%d): upgrade loupe-collector", cur, len(ms))
	}
	for v := cur; v < target; v++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, ms[v]); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM loupe_schema_version`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO loupe_schema_version (version) VALUES ($1)`, v+1)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate to schema v%d: %w", v+1, err)
		}
	}
	return nil
}

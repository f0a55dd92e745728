package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are applied in order; migrations[i] brings the schema from
// version i to version i+1. Never edit a released migration: append one.
var migrations = []string{
	// v1: findings with indexed filter columns and the full finding as a
	// protobuf blob; nodes and their per-kind counts.
	`
CREATE TABLE findings (
	seq          INTEGER PRIMARY KEY,
	id           TEXT    NOT NULL,
	time_ns      INTEGER NOT NULL,
	node         TEXT    NOT NULL,
	kind         INTEGER NOT NULL,
	severity     INTEGER NOT NULL,
	namespace    TEXT    NOT NULL DEFAULT '',
	pod          TEXT    NOT NULL DEFAULT '',
	container_id TEXT    NOT NULL DEFAULT '',
	image        TEXT    NOT NULL DEFAULT '',
	sha256       TEXT    NOT NULL DEFAULT '',
	search       TEXT    NOT NULL DEFAULT '',
	body         BLOB    NOT NULL
);
CREATE UNIQUE INDEX findings_id ON findings(id);
CREATE INDEX findings_time ON findings(time_ns);
CREATE INDEX findings_kind_time ON findings(kind, time_ns);
CREATE INDEX findings_node_time ON findings(node, time_ns);
CREATE INDEX findings_namespace_time ON findings(namespace, time_ns);
CREATE INDEX findings_container ON findings(container_id);
CREATE INDEX findings_sha256 ON findings(sha256) WHERE sha256 <> '';
CREATE TABLE nodes (
	name          TEXT PRIMARY KEY,
	agent_version TEXT    NOT NULL DEFAULT '',
	first_seen_ns INTEGER NOT NULL,
	last_seen_ns  INTEGER NOT NULL,
	findings      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE node_kinds (
	node  TEXT    NOT NULL,
	kind  INTEGER NOT NULL,
	count INTEGER NOT NULL,
	PRIMARY KEY (node, kind)
) WITHOUT ROWID;
`,
	// v2: when the collector stored each finding (ingest lag, audits), and
	// indexes for pod timelines and image searches.
	`
ALTER TABLE findings ADD COLUMN received_ns INTEGER NOT NULL DEFAULT 0;
CREATE INDEX findings_pod_time ON findings(pod, time_ns);
CREATE INDEX findings_image ON findings(image);
`,
	// v3: the Kubernetes user of K8S_* audit findings (loupe query --user).
	`
ALTER TABLE findings ADD COLUMN k8s_user TEXT NOT NULL DEFAULT '';
CREATE INDEX findings_user_time ON findings(k8s_user, time_ns) WHERE k8s_user <> '';
`,
	// v4: agent sessions (stretches of reporting without a silence longer
	// than store.SessionGap), for the agent's connection history.
	`
CREATE TABLE node_sessions (
	node     TEXT    NOT NULL,
	start_ns INTEGER NOT NULL,
	end_ns   INTEGER NOT NULL,
	PRIMARY KEY (node, start_ns)
) WITHOUT ROWID;
CREATE INDEX node_sessions_end ON node_sessions(node, end_ns);
`,
}

// SchemaVersion is the schema version this build creates and expects.
var SchemaVersion = len(migrations)

// migrate brings db to schema version target (normally SchemaVersion), one
// transaction per migration.
func migrate(ctx context.Context, db *sql.DB, target int) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_version: %w", err)
	}
	cur, err := schemaVersion(ctx, db)
	if err != nil {
		return err
	}
	if cur > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this collector supports (%d): upgrade loupe-collector", cur, len(migrations))
	}
	for v := cur; v < target; v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate to schema v%d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to schema v%d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to schema v%d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version(version) VALUES (?)`, v+1); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to schema v%d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate to schema v%d: commit: %w", v+1, err)
		}
	}
	return nil
}

func schemaVersion(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

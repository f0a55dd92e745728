package collector

import (
	"database/sql"
	"fmt"
	"testing"

	_ "modernc.org/sqlite"
)

// openReader opens the collector's database file independently of the
// server, as another process would.
func openReader(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func countRows(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM findings`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func fmtSscan(s string, v *float64) (int, error) { return fmt.Sscan(s, v) }

package postgres

import (
	"context"
	"testing"

	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/collector/store/storetest"
	"github.com/loupe-dev/loupe/internal/testenv"
)

// openNew opens a store on a fresh database of pg, closed when t ends.
func openNew(t *testing.T, pg *testenv.Postgres) *Store {
	t.Helper()
	s, err := Open(context.Background(), pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	pg := testenv.StartPostgres(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openNew(t, pg) })
}

package collector

import (
	"testing"

	"github.com/loupe-dev/loupe/internal/testenv"
)

// TestAuditJoinAcrossReplicas: two collectors on one PostgreSQL database;
// the audit webhook posts to one, the agent sends to the other, and both
// answer with the join.
func TestAuditJoinAcrossReplicas(t *testing.T) {
	pg := testenv.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	p := newAuditPKI(t)
	a, b := start(t, p.config(dsn)), start(t, p.config(dsn))
	auditScenario(t, p, a, b, a, b)
}

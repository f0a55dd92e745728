package correlate_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/correlate"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/collector/store/sqlite"
	"github.com/loupe-dev/loupe/collector/store/storetest"
)

// TestManyPods: a result spanning more pods than the per-pod prefetch
// handles is linked the same way as one pod's (one query for every pod's
// audit events), on a real SQLite store.
func TestManyPods(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var node, audit []*loupev1.Finding
	const pods = 20
	for i := range pods {
		at := t0.Add(time.Duration(i) * time.Minute)
		c := &loupev1.ContainerRef{Namespace: "ns", Pod: fmt.Sprintf("pod-%d", i), Name: "app", Id: fmt.Sprintf("cid%05d", i)}
		user := fmt.Sprintf("user-%d", i)
		ev := storetest.Finding(at, "", loupev1.Kind_KIND_K8S_EXEC, loupev1.Severity_SEVERITY_HIGH)
		ev.Container, ev.K8SUser = &loupev1.ContainerRef{Namespace: c.Namespace, Pod: c.Pod, Name: "app"}, user
		ev.Audit = &loupev1.K8SAudit{User: user, ResponseCode: 101}
		rt := storetest.Finding(at.Add(300*time.Millisecond), "n1", loupev1.Kind_KIND_RUNTIME_EXEC, loupev1.Severity_SEVERITY_HIGH)
		rt.Container, rt.Process = c, &loupev1.Process{Pid: int32(1000 + i)}
		sh := storetest.Finding(at.Add(time.Second), "n1", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH)
		sh.Container, sh.Process = c, &loupev1.Process{Pid: int32(2000 + i), Ancestors: []*loupev1.Ancestor{{Pid: int32(1000 + i)}}}
		other := storetest.Finding(at.Add(2*time.Second), "n1", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH)
		other.Container, other.Process = c, &loupev1.Process{Pid: int32(3000 + i), Ancestors: []*loupev1.Ancestor{{Pid: 1}}}
		audit = append(audit, ev)
		node = append(node, rt, sh, other)
	}
	if _, err := st.Ingest(ctx, store.NodeInfo{}, audit); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Ingest(ctx, store.NodeInfo{Name: "n1"}, node); err != nil {
		t.Fatal(err)
	}
	users := func(q *loupev1.QueryRequest) map[string]string {
		out := map[string]string{}
		if err := correlate.Query(ctx, st, q, func(f *loupev1.Finding) error {
			if f.GetNode() != "" {
				out[f.GetId()] = f.GetK8SUser()
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	all := users(&loupev1.QueryRequest{})
	for i := range pods {
		one := users(&loupev1.QueryRequest{Pod: fmt.Sprintf("pod-%d", i)})
		want := map[string]string{node[3*i].GetId(): fmt.Sprintf("user-%d", i), node[3*i+1].GetId(): fmt.Sprintf("user-%d", i), node[3*i+2].GetId(): ""}
		for id, u := range want {
			if all[id] != u || one[id] != u {
				t.Errorf("pod-%d finding %s: user %q (all pods) %q (one pod), want %q", i, id, all[id], one[id], u)
			}
		}
	}
}

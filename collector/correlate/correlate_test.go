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

// TestShellAfterManyProbes: a container whose exec probes make hundreds of
// RUNTIME_EXECs in the minutes before a kubectl exec still links the shell
// that exec started to the user (the lookup keeps the newest candidates, not
// the oldest).
func TestShellAfterManyProbes(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	c := &loupev1.ContainerRef{Namespace: "ns", Pod: "web-0", Name: "app", Id: "cid00001"}
	var node []*loupev1.Finding
	for i := range 300 { // a probe every 2 s for the 10 minutes before
		p := storetest.Finding(t0.Add(-10*time.Minute+time.Duration(i)*2*time.Second), "n1", loupev1.Kind_KIND_RUNTIME_EXEC, loupev1.Severity_SEVERITY_MEDIUM)
		p.Container, p.Process = c, &loupev1.Process{Pid: int32(5000 + i)}
		node = append(node, p)
	}
	ev := storetest.Finding(t0, "", loupev1.Kind_KIND_K8S_EXEC, loupev1.Severity_SEVERITY_HIGH)
	ev.Container, ev.K8SUser = &loupev1.ContainerRef{Namespace: "ns", Pod: "web-0", Name: "app"}, "alice"
	ev.Audit = &loupev1.K8SAudit{User: "alice", ResponseCode: 101}
	rt := storetest.Finding(t0.Add(300*time.Millisecond), "n1", loupev1.Kind_KIND_RUNTIME_EXEC, loupev1.Severity_SEVERITY_HIGH)
	rt.Container, rt.Process = c, &loupev1.Process{Pid: 1000}
	sh := storetest.Finding(t0.Add(2*time.Second), "n1", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH)
	sh.Container, sh.Process = c, &loupev1.Process{Pid: 2000, Ancestors: []*loupev1.Ancestor{{Pid: 1000}}}
	node = append(node, rt, sh)
	if _, err := st.Ingest(ctx, store.NodeInfo{}, []*loupev1.Finding{ev}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Ingest(ctx, store.NodeInfo{Name: "n1"}, node); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := correlate.Query(ctx, st, &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_SHELL_EXEC}}, func(f *loupev1.Finding) error {
		got = f.GetK8SUser()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got != "alice" {
		t.Errorf("shell after 300 probes: user %q, want alice", got)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loupe-dev/loupe/agent/export"
	"github.com/loupe-dev/loupe/agent/spool"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store/storetest"
	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// TestReplicasSurviveFaults: 3 agents stream a 10,000-finding burst through
// 2 collector replicas on one PostgreSQL, over mTLS. Mid-burst one replica is
// SIGKILLed and PostgreSQL is restarted. Every finding must end up stored
// exactly once, and both replicas must then answer `loupe nodes` and `loupe
// query` the same.
func TestReplicasSurviveFaults(t *testing.T) {
	pg := testenv.StartPostgres(t)
	dsn := pg.NewDatabase(t)
	db := dsn[strings.LastIndex(dsn, "/")+1 : strings.Index(dsn, "?")]
	bin := binaries(t)
	nodes := []string{"node-1", "node-2", "node-3"}
	pki, err := tlsutil.GeneratePKI(t.TempDir(), append([]string{"loupe-admin"}, nodes...)...)
	if err != nil {
		t.Fatal(err)
	}
	type replica struct {
		grpc, http string
		p          *proc
	}
	reps := []*replica{{grpc: testenv.FreeAddr(t), http: testenv.FreeAddr(t)}, {grpc: testenv.FreeAddr(t), http: testenv.FreeAddr(t)}}
	startReplica := func(i int) {
		r := reps[i]
		r.p = start(t, fmt.Sprintf("loupe-collector-%d", i), filepath.Join(bin, "loupe-collector"),
			"--grpc-listen", r.grpc, "--http-listen", r.http, "--db", dsn,
			"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--client-ca", pki.CAFile)
		waitHTTP(t, r.p, "http://"+r.http+"/readyz", 30*time.Second)
	}
	// Both start at once: they race to migrate the empty database.
	var wg sync.WaitGroup
	for i := range reps {
		wg.Add(1)
		go func() { defer wg.Done(); startReplica(i) }()
	}
	wg.Wait()
	if body := httpGet(t, "http://"+reps[0].http+"/readyz"); !strings.Contains(body, "database: ok") {
		t.Fatalf("/readyz = %q, want it to report the database", body)
	}

	addrs := reps[0].grpc + "," + reps[1].grpc
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	spools := make([]*spool.Spool, len(nodes))
	ctx, cancel := context.WithCancel(context.Background())
	var agents sync.WaitGroup
	for i, node := range nodes {
		if spools[i], err = spool.Open(t.TempDir(), 0); err != nil {
			t.Fatal(err)
		}
		defer spools[i].Close()
		c := pki.Clients[node]
		e := export.New(export.Config{Addr: addrs, Node: node, BatchSize: 250, BatchDelay: 20 * time.Millisecond,
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Logger: log,
			TLS: tlsutil.ClientOptions{CertFile: c[0], KeyFile: c[1], CAFile: pki.CAFile, ServerName: "localhost"}}, spools[i], prometheus.NewRegistry())
		agents.Add(1)
		go func() { defer agents.Done(); e.Run(ctx) }()
	}
	stopAgents := func() { cancel(); agents.Wait() }
	defer stopAgents()

	const total, chunk = 10000, 250
	want := map[string]string{} // id → node
	rng := storetest.NewRand(42)
	pending := func() (n int64) {
		for _, sp := range spools {
			n += sp.Stats().Findings
		}
		return n
	}
	victim := -1
	for sent := 0; sent < total; sent += chunk {
		i := (sent / chunk) % len(nodes)
		var batch []*loupev1.Finding
		for range chunk {
			f := storetest.Realistic(rng, time.Now(), nodes[i])
			want[f.GetId()] = nodes[i]
			batch = append(batch, f)
		}
		if err := spools[i].Append(batch); err != nil {
			t.Fatal(err)
		}
		switch sent {
		case 3000:
			// Kill a replica that has agents streaming to it right now.
			victim = slices.IndexFunc(reps, func(r *replica) bool { return connectedAgents(t, r.http) > 0 })
			if victim < 0 {
				t.Fatal("no replica reports connected agents")
			}
			reps[victim].p.stop(syscall.SIGKILL)
			t.Logf("replica %d killed with %d findings still spooled", victim, pending())
		case 6000:
			pg.Stop(t)
			// The surviving replica says the database is gone.
			code, body := httpStatus(t, "http://"+reps[1-victim].http+"/readyz")
			if code != 503 || !strings.Contains(body, "database:") {
				t.Errorf("/readyz with PostgreSQL down = %d %q, want 503 naming the database", code, body)
			}
			time.Sleep(time.Second) // agents keep spooling and retrying meanwhile
			pg.Start(t)
			t.Logf("PostgreSQL restarted with %d findings still spooled", pending())
		}
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d findings still spooled after 2 minutes", pending())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The killed replica comes back; while the agents still stream to the
	// other one, both replicas list the same nodes, all connected, with the
	// same counts.
	startReplica(victim)
	c := pki.Clients["loupe-admin"]
	cli := func(r *replica, args ...string) []byte {
		cmd := exec.Command(filepath.Join(bin, "loupe"), append(args, "--collector", r.grpc, "--ca", pki.CAFile,
			"--tls-cert", c[0], "--tls-key", c[1], "-o", "json")...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("loupe %v: %v\n%s", args, err, stderr.String())
		}
		return out
	}
	type node struct {
		Name      string `json:"name"`
		Findings  string `json:"findings"`
		Connected bool   `json:"connected"`
	}
	perNode := map[string]int{}
	for _, n := range want {
		perNode[n]++
	}
	for i, r := range reps {
		var listed []node
		if err := json.Unmarshal(cli(r, "nodes"), &listed); err != nil {
			t.Fatal(err)
		}
		if len(listed) != len(nodes) {
			t.Fatalf("replica %d lists %d nodes", i, len(listed))
		}
		for _, n := range listed {
			if n.Findings != strconv.Itoa(perNode[n.Name]) || !n.Connected {
				t.Fatalf("replica %d: node %+v, want %d findings and connected", i, n, perNode[n.Name])
			}
		}
	}
	stopAgents()
	if n := pg.SQL(t, db, "SELECT count(*) || ' ' || count(DISTINCT id) FROM findings"); n != fmt.Sprintf("%d %d", total, total) {
		t.Fatalf("rows, distinct ids = %s; want %d of each", n, total)
	}
	var ids [2][]string
	for i, r := range reps {
		var fs []struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(cli(r, "query", "--kind", "shell_exec", "--limit", "100000"), &fs); err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			ids[i] = append(ids[i], f.ID)
		}
	}
	if len(ids[0]) == 0 || !slices.Equal(ids[0], ids[1]) {
		t.Fatalf("replicas answer the same query differently: %d vs %d findings", len(ids[0]), len(ids[1]))
	}
}

// connectedAgents reads loupe_collector_agents_connected from a replica's /metrics.
func connectedAgents(t *testing.T, httpAddr string) int {
	t.Helper()
	for _, line := range strings.Split(httpGet(t, "http://"+httpAddr+"/metrics"), "\n") {
		if v, ok := strings.CutPrefix(line, "loupe_collector_agents_connected "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	t.Fatalf("no loupe_collector_agents_connected on %s", httpAddr)
	return 0
}

func httpStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

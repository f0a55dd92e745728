package console_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/collector/audit"
	"github.com/loupe-dev/loupe/collector/audit/audittest"
	"github.com/loupe-dev/loupe/collector/console"
	"github.com/loupe-dev/loupe/collector/console/consoletest"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/collector/store/storetest"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// env is a collector on loopback with its console, filled with a Fleet
// through the real Ingest API.
type env struct {
	srv    *collector.Server
	base   string // http://127.0.0.1:port
	token  string
	tokens string // token file
	fleet  *consoletest.Fleet
}

const testToken = "correct-horse-battery-staple-0123456789"

func tokenLine(tok, name string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:]) + "  " + name + "\n"
}

func startEnv(t *testing.T, auth func(*console.AuthConfig)) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{token: testToken, tokens: filepath.Join(dir, "tokens")}
	if err := os.WriteFile(e.tokens, []byte("# analysts\n"+tokenLine(testToken, "alice@soc")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := collector.Config{GRPCListen: "127.0.0.1:0", DB: "sqlite://" + filepath.Join(dir, "collector.db"), Insecure: true,
		ConsoleListen: "127.0.0.1:0", ConsoleAuth: console.AuthConfig{TokenFile: e.tokens},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if auth != nil {
		auth(&cfg.ConsoleAuth)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := collector.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	e.srv, e.base = srv, "http://"+srv.ConsoleAddr().String()
	conn, err := collector.Dial(ctx, srv.GRPCAddr().String(), tlsutil.ClientOptions{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	e.fleet = consoletest.NewFleet(time.Now())
	ictx, icancel := context.WithTimeout(ctx, 30*time.Second)
	defer icancel()
	if err := e.fleet.Ingest(ictx, conn); err != nil {
		t.Fatal(err)
	}
	return e
}

// get fetches path with the bearer token (tok "" sends none).
func (e *env) get(t *testing.T, path, tok string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest("GET", e.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestNoAnonymousAccess(t *testing.T) {
	e := startEnv(t, nil)
	for _, p := range []string{"/", "/search?kind=shell_exec", "/search.jsonl", "/finding/" + e.fleet.ShellID, "/timeline?namespace=payments&pod=api-7d9f-x2x",
		"/images", "/image?ref=x", "/image/hdf.json?ref=x"} {
		for _, tok := range []string{"", "wrong-token", strings.Repeat("x", 5000)} {
			code, h, body := e.get(t, p, tok)
			if code != http.StatusUnauthorized {
				t.Errorf("GET %s with token %.10q: %d, want 401", p, tok, code)
			}
			if strings.Contains(body, "containerd-shim") || strings.Contains(body, "node-a") {
				t.Errorf("GET %s without a good token leaked finding data", p)
			}
			if h.Get("Content-Security-Policy") != console.CSP {
				t.Errorf("GET %s: CSP %q", p, h.Get("Content-Security-Policy"))
			}
		}
	}
	// A malformed Authorization header does not fall through to a cookie.
	code, _, _ := e.get(t, "/", "", "Authorization", "Basic "+testToken, "Cookie", "loupe_console="+testToken)
	if code != http.StatusUnauthorized {
		t.Errorf("Basic auth with a good cookie: %d, want 401", code)
	}
	if code, _, _ := e.get(t, "/", testToken); code != http.StatusOK {
		t.Errorf("good token: %d", code)
	}
}

func TestLoginCookieAndTokenRotation(t *testing.T) {
	e := startEnv(t, nil)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.PostForm(e.base+"/login", url.Values{"token": {"nope"}, "next": {"/images"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad login: %d", resp.StatusCode)
	}
	// An open redirect in next is replaced by /.
	resp, err = c.PostForm(e.base+"/login", url.Values{"token": {testToken}, "next": {"//evil.example/x"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" || !strings.Contains(string(body), "node-a") {
		t.Fatalf("login: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	u, _ := url.Parse(e.base)
	var ck *http.Cookie
	for _, k := range jar.Cookies(u) {
		if k.Name == "loupe_console" {
			ck = k
		}
	}
	if ck == nil {
		t.Fatal("no session cookie")
	}
	// Revoking the token in the file locks the session out without a restart.
	if err := os.WriteFile(e.tokens, []byte(tokenLine("another-token-entirely", "bob")), 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute)
	os.Chtimes(e.tokens, future, future)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get(e.base + "/images")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked token still accepted: %d", resp.StatusCode)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, _, _ := e.get(t, "/", "another-token-entirely"); code != http.StatusOK {
		t.Errorf("new token: %d", code)
	}
}

func TestTrustedProxyHeader(t *testing.T) {
	loop := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	e := startEnv(t, func(a *console.AuthConfig) { a.ProxyHeader = "X-Forwarded-Email"; a.TrustedProxies = loop })
	code, _, body := e.get(t, "/", "", "X-Forwarded-Email", "carol@corp")
	if code != http.StatusOK || !strings.Contains(body, "carol@corp") {
		t.Fatalf("trusted proxy: %d", code)
	}
	if code, _, _ := e.get(t, "/", "", "X-Forwarded-Email", "evil\xe9"); code != http.StatusUnauthorized {
		t.Errorf("control character in identity: %d", code)
	}
	// From an address outside the trusted prefixes the header means nothing.
	other := startEnv(t, func(a *console.AuthConfig) {
		a.ProxyHeader = "X-Forwarded-Email"
		a.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}
	})
	if code, _, _ := other.get(t, "/", "", "X-Forwarded-Email", "carol@corp"); code != http.StatusUnauthorized {
		t.Errorf("header from an untrusted address: %d, want 401", code)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, a := range map[string]console.AuthConfig{
		"no auth":          {},
		"header, no proxy": {ProxyHeader: "X-User"},
		"missing file":     {TokenFile: "/nonexistent/tokens"},
	} {
		_, err := console.New(console.Config{Store: nil, Auth: a})
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "tokens")
	os.WriteFile(bad, []byte("not-a-hash alice\n"), 0o600)
	if _, err := collector.New(context.Background(), collector.Config{GRPCListen: "127.0.0.1:0", Insecure: true, DB: "sqlite://" + filepath.Join(dir, "c.db"),
		ConsoleListen: "127.0.0.1:0", ConsoleAuth: console.AuthConfig{TokenFile: bad}}); err == nil || !strings.Contains(err.Error(), "sha256sum") {
		t.Errorf("malformed token file: %v", err)
	}
	if _, err := console.ParseTrustedProxies([]string{"10.0.0.0/8, 127.0.0.1", "nonsense"}); err == nil {
		t.Error("bad proxy address accepted")
	}
}

func TestPagesAndEscaping(t *testing.T) {
	e := startEnv(t, nil)
	fl := e.fleet
	pages := map[string][]string{
		"/": {"node-a", "node-b", "node-c", "v1.3.2", `id="chart"`, "shell_exec"},
		"/search?since=24h&kind=exec_failed&kind=runtime_exec_failed&pod=" + fl.DistrolessPod: {"2 finding(s)", "/finding/" + strings.Split(fl.FailedIDs, ",")[0]},
		"/finding/" + fl.ShellID: {"systemd", "containerd-shim", "runc:[2:INIT]", "curl", "/finding/" + fl.ChildID, `id="same-pod"`},
		"/finding/" + fl.DriftID: {"upper", "same sha256"},
		"/timeline?namespace=" + fl.DistrolessNS + "&pod=" + fl.DistrolessPod: {"without a finding", "dl-2.1", "failed → passed", "2 passed", "runtime_exec_failed"},
		"/images": {fl.Image, "distroless-static"},
		"/image?ref=" + url.QueryEscape(fl.Image) + "&digest=" + fl.ImageDigest: {"base-files", "tzdata", "dl-1.1", "download HDF", fl.DistrolessPod},
	}
	for p, wants := range pages {
		code, h, body := e.get(t, p, testToken)
		if code != http.StatusOK {
			t.Errorf("GET %s: %d\n%s", p, code, body)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: no %q in the page", p, w)
			}
		}
		if h.Get("Content-Security-Policy") != console.CSP || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: security headers %v", p, h)
		}
		// Hostile finding data never reaches the page as markup.
		for _, bad := range []string{"<script>alert", "<img src=x", "<svg onload"} {
			if strings.Contains(body, bad) {
				t.Errorf("GET %s: unescaped %q in the page", p, bad)
			}
		}
		if strings.Contains(body, "<script") {
			t.Errorf("GET %s: a script element in the page", p)
		}
	}
	// The hostile strings are on the pages, as text.
	_, _, body := e.get(t, "/finding/"+fl.XSSID, testToken)
	if !strings.Contains(body, "&lt;script&gt;alert(&#34;xss-script&#34;)&lt;/script&gt;") {
		t.Errorf("the hostile argv is not shown escaped")
	}
}

func TestDownloadsAndBadInput(t *testing.T) {
	e := startEnv(t, nil)
	code, h, body := e.get(t, "/search.jsonl?since=&limit=100000", testToken)
	if code != http.StatusOK || h.Get("Content-Type") != "application/jsonl" {
		t.Fatalf("JSONL: %d %s", code, h.Get("Content-Type"))
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d: %v", n, err)
		}
		if _, ok := m["agent_version"]; !ok {
			t.Fatalf("not proto field names: %s", sc.Text())
		}
		n++
	}
	if n != e.fleet.Count() {
		t.Errorf("JSONL has %d findings, seeded %d", n, e.fleet.Count())
	}
	_, _, body = e.get(t, "/search.json?since=&kind=shell_exec", testToken)
	var arr []map[string]any
	if err := json.Unmarshal([]byte(body), &arr); err != nil || len(arr) != 1 || arr[0]["id"] != e.fleet.ShellID {
		t.Errorf("JSON download: %v %d", err, len(arr))
	}
	_, _, body = e.get(t, "/search.json?since=&kind=capture", testToken)
	if strings.TrimSpace(body) != "[]" {
		t.Errorf("empty JSON download: %q", body)
	}
	code, _, body = e.get(t, "/image/hdf.json?ref="+url.QueryEscape(e.fleet.Image), testToken)
	var hdf struct {
		Profiles []struct {
			Controls []any `json:"controls"`
		} `json:"profiles"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &hdf) != nil || len(hdf.Profiles) == 0 || len(hdf.Profiles[0].Controls) != 3 {
		t.Errorf("HDF: %d %.300s", code, body)
	}
	for p, want := range map[string]int{
		"/search?limit=5000":                        http.StatusBadRequest,
		"/search?since=yesterday":                   http.StatusBadRequest,
		"/search?kind=nope":                         http.StatusBadRequest,
		"/search?container=ab":                      http.StatusBadRequest,
		"/search?grep=" + strings.Repeat("a", 2000): http.StatusBadRequest,
		"/search?" + strings.Repeat("kind=x&", 70):  http.StatusBadRequest,
		"/search?q=" + strings.Repeat("a", 9000):    http.StatusRequestURITooLong,
		"/finding/nope":                             http.StatusNotFound,
		"/finding/" + strings.Repeat("a", 200):      http.StatusBadRequest,
		"/timeline":                                 http.StatusBadRequest,
		"/timeline?pod=x&gap=1s":                    http.StatusBadRequest,
		"/image":                                    http.StatusBadRequest,
		"/search.jsonl?limit=100001":                http.StatusBadRequest,
	} {
		code, _, body := e.get(t, p, testToken)
		if code != want {
			t.Errorf("GET %.60s: %d, want %d", p, code, want)
		}
		if code == http.StatusBadRequest && !strings.Contains(body, "class=\"error\"") {
			t.Errorf("GET %.60s: no error message", p)
		}
	}
	// The collector still serves after all of that.
	if code, _, _ := e.get(t, "/", testToken); code != http.StatusOK {
		t.Errorf("overview after bad input: %d", code)
	}
}

// TestWhoPanel: an audit event near a runtime exec failure shows on both
// finding pages (user, request, the link each way), and the search by user
// returns both.
func TestWhoPanel(t *testing.T) {
	e := startEnv(t, nil)
	ctx := context.Background()
	var failed *loupev1.Finding
	for _, id := range strings.Split(e.fleet.FailedIDs, ",") {
		if f, err := e.srv.Store().Get(ctx, id); err == nil && f.GetKind() == loupev1.Kind_KIND_RUNTIME_EXEC_FAILED {
			failed = f
		}
	}
	if failed == nil {
		t.Fatal("the fleet has no RUNTIME_EXEC_FAILED")
	}
	c := failed.GetContainer()
	ev := audit.Finding(ptr(audittest.Exec(audittest.Alice, failed.GetTime().AsTime().Add(-time.Second), c.GetNamespace(), c.GetPod(), c.GetName(), "/bin/sh", "-c", "<img src=x onerror=alert(1)>")))
	conn, err := collector.Dial(ctx, e.srv.GRPCAddr().String(), tlsutil.ClientOptions{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := loupev1.NewCollectorClient(conn).Ingest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&loupev1.IngestRequest{Sequence: 1, Node: "replay", Replay: true, Findings: []*loupev1.Finding{ev}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || resp.GetStored() != 1 {
		t.Fatalf("replay the audit event: %v %v", resp, err)
	}
	for p, wants := range map[string][]string{
		"/finding/" + failed.GetId():               {`id="who"`, "alice@corp.example", "requested by", "/finding/" + ev.GetId()},
		"/finding/" + ev.GetId():                   {"10.1.2.3", "kubectl/v1.31.0", "caused", "/finding/" + failed.GetId(), "&lt;img src=x onerror=alert(1)&gt;"},
		"/search?since=&user=alice%40corp.example": {"2 finding(s)", "/finding/" + failed.GetId(), "/finding/" + ev.GetId()},
	} {
		code, _, body := e.get(t, p, testToken)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, code, body)
		}
		for _, w := range wants {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: no %q", p, w)
			}
		}
		if strings.Contains(body, "<img src=x") {
			t.Errorf("GET %s: unescaped command", p)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestTimelineShowsAgentSilences: an agent that stopped reporting for a
// while (its sessions, recorded by the store from the batches it sent) shows
// in the pod's timeline as a silence and a resumption, and in the agents
// table as a count.
func TestTimelineShowsAgentSilences(t *testing.T) {
	e := startEnv(t, nil)
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	shell := storetest.Finding(now.Add(-179*time.Minute), "node-s", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH)
	later := storetest.Finding(now.Add(-19*time.Minute), "node-s", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO)
	for _, f := range []*loupev1.Finding{shell, later} {
		f.Container = &loupev1.ContainerRef{Id: "5ce55ion0000", Name: "app", Pod: "quiet-0", Namespace: "ops"}
	}
	for _, b := range []struct {
		seen time.Duration
		fs   []*loupev1.Finding
	}{{-180 * time.Minute, nil}, {-179 * time.Minute, []*loupev1.Finding{shell}}, {-20 * time.Minute, nil}, {-19 * time.Minute, []*loupev1.Finding{later}}} {
		if _, err := e.srv.Store().Ingest(ctx, store.NodeInfo{Name: "node-s", AgentVersion: "v1", Seen: now.Add(b.seen)}, b.fs); err != nil {
			t.Fatal(err)
		}
	}
	code, _, body := e.get(t, "/timeline?namespace=ops&pod=quiet-0", testToken)
	if code != http.StatusOK {
		t.Fatalf("timeline: %d %s", code, body)
	}
	silent := strings.Index(body, "agent silent for 2h39m0s")
	again := strings.Index(body, "agent reporting again after 2h39m0s of silence")
	first, second := strings.Index(body, "/finding/"+shell.GetId()), strings.Index(body, "/finding/"+later.GetId())
	if silent < 0 || again < 0 || first < 0 || second < 0 {
		t.Fatalf("timeline without the silence or its findings:\n%s", body)
	}
	if !(first < silent && silent < again && again < second) {
		t.Errorf("timeline out of order: shell %d, silent %d, again %d, exec %d", first, silent, again, second)
	}
	if !strings.Contains(body, `<li class="agent silence">`) || !strings.Contains(body, `<span class="bad">1</span>`) {
		t.Errorf("silence not marked, or the agents table does not count it:\n%s", body)
	}
}

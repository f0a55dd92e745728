package output

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// A finding reaches an https webhook as the CLI's JSON, one per POST, with
// the bearer token from the file and the receiver verified by the CA file.
func TestWebhookDeliversFindingJSON(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var got []*http.Request
	var bodies [][]byte
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		got, bodies = append(got, r), append(bodies, b)
		mu.Unlock()
	}))
	defer srv.Close()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, reg := open(t, filepath.Join(dir, "state"), "webhook="+srv.URL+"/hook,ca="+ca+",token-file="+tok)
	defer o.Close()
	run(t, o)

	f := high("payments")
	f.Details = map[string]string{"runc_error": "stat /bin/sh: no such file or directory"}
	o.Enqueue([]*loupev1.Finding{f})
	eventually(t, "delivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })

	mu.Lock()
	r, body := got[0], bodies[0]
	mu.Unlock()
	if r.Method != http.MethodPost || r.URL.Path != "/hook" {
		t.Errorf("request %s %s, want POST /hook", r.Method, r.URL.Path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if a := r.Header.Get("Authorization"); a != "Bearer s3cret-token" {
		t.Errorf("Authorization %q", a)
	}
	back := &loupev1.Finding{}
	if err := protojson.Unmarshal(body, back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back, f) {
		t.Errorf("received %v\nwant %v", back, f)
	}
	// The CLI's field names (proto names), as `loupe query -o jsonl` prints them.
	for _, name := range []string{`"pod_uid"`, `"image_digest"`, `"KIND_SHELL_EXEC"`, `"SEVERITY_HIGH"`} {
		if !strings.Contains(string(body), name) {
			t.Errorf("body lacks %s: %s", name, body)
		}
	}
	if v := metric(t, reg, "loupe_collector_output_delivered_total", "output", "webhook"); v != 1 {
		t.Errorf("delivered_total = %v", v)
	}
	if v := metric(t, reg, "loupe_collector_output_enqueued_total", "output", "webhook"); v != 1 {
		t.Errorf("enqueued_total = %v", v)
	}
	eventually(t, "queue empty", func() bool {
		return metric(t, reg, "loupe_collector_output_queued_findings", "output", "webhook") == 0
	})
	if v := metric(t, reg, "loupe_collector_output_delivery_seconds", "output", "webhook"); v != 1 {
		t.Errorf("delivery_seconds count = %v", v)
	}
}

// Only findings matching an output's severity, kind and namespace filters
// are pushed to it; each output filters on its own.
func TestFiltersSelectWhatIsPushed(t *testing.T) {
	all := newReceiver(t, "127.0.0.1:0")
	some := newReceiver(t, "127.0.0.1:0")
	o, reg := open(t, t.TempDir(),
		"webhook=http://"+all.addr+"/,name=all,min-severity=info",
		"webhook=http://"+some.addr+"/,name=some,kind=shell_exec,kind=drift_exec,namespace=prod-*,namespace=payments")
	defer o.Close()
	run(t, o)

	want := []*loupev1.Finding{
		high("payments"),
		high("prod-eu"),
		finding(loupev1.Severity_SEVERITY_CRITICAL, loupev1.Kind_KIND_DRIFT_EXEC, "prod-us"),
	}
	unwanted := []*loupev1.Finding{
		finding(loupev1.Severity_SEVERITY_MEDIUM, loupev1.Kind_KIND_SHELL_EXEC, "payments"), // below high
		finding(loupev1.Severity_SEVERITY_INFO, loupev1.Kind_KIND_SHELL_EXEC, "prod-eu"),    // below high
		high("staging"), // namespace
		finding(loupev1.Severity_SEVERITY_CRITICAL, loupev1.Kind_KIND_SUID, "payments"), // kind
		finding(loupev1.Severity_SEVERITY_CRITICAL, loupev1.Kind_KIND_SHELL_EXEC, ""),   // no pod
	}
	o.Enqueue(append(append([]*loupev1.Finding{}, unwanted...), want...))
	n := len(want) + len(unwanted)
	eventually(t, "all delivered to the unfiltered output", func() bool { return all.count() == n })
	eventually(t, "the filtered output's queue to drain", func() bool {
		return metric(t, reg, "loupe_collector_output_queued_findings", "output", "some") == 0 &&
			float64(some.count()) == metric(t, reg, "loupe_collector_output_delivered_total", "output", "some")
	})
	if v := metric(t, reg, "loupe_collector_output_enqueued_total", "output", "some"); v != float64(len(want)) {
		t.Errorf("filtered output enqueued %v findings, want %d", v, len(want))
	}
	got := ids(some.findings())
	for _, f := range want {
		if got[f.GetId()] != 1 {
			t.Errorf("%s %s %s: delivered %d times, want 1", f.GetSeverity(), f.GetKind(), f.GetContainer().GetNamespace(), got[f.GetId()])
		}
	}
	for _, f := range unwanted {
		if got[f.GetId()] != 0 {
			t.Errorf("%s %s %q pushed through the filter", f.GetSeverity(), f.GetKind(), f.GetContainer().GetNamespace())
		}
	}
}

// A 4xx answer is final: the finding is dead-lettered as rejected and the
// queue moves on; a 503 or 429 is retried.
func TestRejectedAndRetriedStatuses(t *testing.T) {
	bad, retry, good := high("payments"), high("payments"), high("payments")
	bad.Rule, retry.Rule = "bad", "retry"
	var mu sync.Mutex
	retried := 0
	r := newReceiver(t, "127.0.0.1:0")
	r.status = func(body []byte) int {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.Contains(string(body), `"bad"`):
			return http.StatusBadRequest
		case strings.Contains(string(body), `"retry"`) && retried < 3:
			retried++
			return []int{http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusUnauthorized}[retried-1]
		}
		return http.StatusOK
	}
	o, reg := open(t, t.TempDir(), "webhook=http://"+r.addr+"/")
	defer o.Close()
	run(t, o)
	o.Enqueue([]*loupev1.Finding{bad, retry, good})
	eventually(t, "the good findings", func() bool { return r.count() == 2 })
	got := ids(r.findings())
	if got[good.GetId()] != 1 || got[retry.GetId()] != 1 || got[bad.GetId()] != 0 {
		t.Errorf("delivered %v", got)
	}
	if v := metric(t, reg, "loupe_collector_output_dead_letter_total", "output", "webhook", "reason", ReasonRejected); v != 1 {
		t.Errorf("dead_letter{rejected} = %v, want 1", v)
	}
	if v := metric(t, reg, "loupe_collector_output_retries_total", "output", "webhook"); v != 3 {
		t.Errorf("retries_total = %v, want 3 (503, 429, then 401: a token rotated on the receiver first)", v)
	}
	eventually(t, "queue empty", func() bool {
		return metric(t, reg, "loupe_collector_output_queued_findings", "output", "webhook") == 0
	})
}

// TestRetryAfterIsHonoured: a receiver that answers 429 with Retry-After: 3
// is not asked again before 3 s, though the backoff alone (1 s ±25%, capped
// at 2 s in these tests) would retry sooner.
func TestRetryAfterIsHonoured(t *testing.T) {
	var mu sync.Mutex
	refused := false
	r := newReceiver(t, "127.0.0.1:0")
	r.retryAfter = "3"
	r.status = func([]byte) int {
		mu.Lock()
		defer mu.Unlock()
		if !refused {
			refused = true
			return http.StatusTooManyRequests
		}
		return http.StatusOK
	}
	o, reg := open(t, t.TempDir(), "webhook=http://"+r.addr+"/")
	defer o.Close()
	run(t, o)
	f := high("payments")
	o.Enqueue([]*loupev1.Finding{f})
	eventually(t, "the finding after the wait", func() bool { return r.count() == 1 })
	r.mu.Lock()
	attempts := slices.Clone(r.attempts)
	r.mu.Unlock()
	if len(attempts) != 2 {
		t.Fatalf("%d attempts, want 2 (429, then 200)", len(attempts))
	}
	if gap := attempts[1].Sub(attempts[0]); gap < 3*time.Second-50*time.Millisecond {
		t.Errorf("retried after %v, before the receiver's Retry-After of 3 s", gap)
	}
	if v := metric(t, reg, "loupe_collector_output_retries_total", "output", "webhook"); v != 1 {
		t.Errorf("retries_total = %v, want 1", v)
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		h    string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"5", 5 * time.Second, true},
		{" 0 ", 0, true},
		{"86400", maxRetryAfter, true}, // bounded
		{"99999999999999999999", 0, false},
		{"-3", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true}, // in the past: retry at once
	} {
		got, ok := retryAfter(c.h, now)
		if got != c.want || ok != c.ok {
			t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", c.h, got, ok, c.want, c.ok)
		}
	}
}

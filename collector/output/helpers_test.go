package output

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// finding is a shell-exec finding in namespace ns.
func finding(sev loupev1.Severity, kind loupev1.Kind, ns string) *loupev1.Finding {
	return &loupev1.Finding{
		Id:       uuid.Must(uuid.NewV7()).String(),
		Time:     timestamppb.New(time.Now().Add(-time.Second)),
		Node:     "node-1",
		Kind:     kind,
		Severity: sev,
		Rule:     "shell-in-container",
		Summary:  "/bin/sh ran in payments/api",
		Container: &loupev1.ContainerRef{Id: "c0ffee", Name: "api", Pod: "api-7d9", Namespace: ns, PodUid: "uid-1",
			Image: "registry.example/payments/api:1.4.2@sha256:abcd", ImageDigest: "sha256:abcd"},
		Process: &loupev1.Process{Pid: 4242, Ppid: 4200, Uid: 0, Comm: "sh", Filename: "/bin/sh",
			Argv: []string{"/bin/sh", "-c", "wget http://x/y"}, Ancestors: []*loupev1.Ancestor{{Pid: 4200, Comm: "java"}}},
	}
}

func high(ns string) *loupev1.Finding {
	return finding(loupev1.Severity_SEVERITY_HIGH, loupev1.Kind_KIND_SHELL_EXEC, ns)
}

// open opens outputs on a fresh registry; t.Cleanup closes them.
func open(t *testing.T, dir string, specs ...string) (*Outputs, *prometheus.Registry) {
	t.Helper()
	var cfgs []Config
	for _, s := range specs {
		c, err := ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		cfgs = append(cfgs, c)
	}
	reg := prometheus.NewRegistry()
	o, err := Open(dir, cfgs, reg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range o.outs { // keep retries frequent in tests
		w.maxBackoff = 2 * time.Second
	}
	return o, reg
}

// run runs o until the returned stop is called (also at cleanup); stop waits for Run to return.
func run(t *testing.T, o *Outputs) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { o.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// metric reads one series from reg by name and label values (in label order).
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			lp := m.GetLabel()
			if len(lp) != len(labels)/2 {
				continue
			}
			for i := 0; i < len(labels); i += 2 {
				found := false
				for _, l := range lp {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// eventually polls cond until it holds, failing the test after a generous limit.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if t.Failed() { // a receiver goroutine reported an error
			t.FailNow()
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// receiver is a loopback HTTP receiver that records what it is sent.
type receiver struct {
	t      *testing.T
	addr   string
	status func(body []byte) int // 200 when nil
	// retryAfter is sent as Retry-After with a 429 or 503 when set.
	retryAfter string

	mu       sync.Mutex
	bodies   [][]byte
	headers  []http.Header
	attempts []time.Time // every request, accepted or not
	srv      *http.Server
}

// newReceiver listens on addr ("127.0.0.1:0" for any port).
func newReceiver(t *testing.T, addr string) *receiver {
	r := &receiver{t: t}
	r.listen(addr)
	t.Cleanup(r.close)
	return r
}

func (r *receiver) listen(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.addr = l.Addr().String()
	srv := &http.Server{Handler: r}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go srv.Serve(l)
}

// close stops listening (connections refused until listen again).
func (r *receiver) close() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	code := http.StatusOK
	if r.status != nil {
		code = r.status(body)
	}
	r.mu.Lock()
	r.attempts = append(r.attempts, time.Now())
	if code == http.StatusOK {
		r.bodies = append(r.bodies, body)
		r.headers = append(r.headers, req.Header.Clone())
	}
	r.mu.Unlock()
	if (code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable) && r.retryAfter != "" {
		w.Header().Set("Retry-After", r.retryAfter)
	}
	w.WriteHeader(code)
}

// findings decodes the accepted bodies as findings.
func (r *receiver) findings() []*loupev1.Finding {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*loupev1.Finding
	for _, b := range r.bodies {
		f := &loupev1.Finding{}
		if err := protojson.Unmarshal(b, f); err != nil {
			r.t.Errorf("body is not a Finding: %v: %s", err, b)
			continue
		}
		out = append(out, f)
	}
	return out
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bodies)
}

func ids(fs []*loupev1.Finding) map[string]int {
	m := map[string]int{}
	for _, f := range fs {
		m[f.GetId()]++
	}
	return m
}

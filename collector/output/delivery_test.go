package output

import (
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// A receiver down for 30 seconds (its port closed, then listening again)
// loses nothing: every finding enqueued meanwhile arrives afterwards, and
// the failed attempts are counted as retries.
func TestReceiverDown30Seconds(t *testing.T) {
	r := newReceiver(t, "127.0.0.1:0")
	o, reg := open(t, t.TempDir(), "webhook=http://"+r.addr+"/,name=soar")
	defer o.Close()
	run(t, o)

	before := high("payments")
	o.Enqueue([]*loupev1.Finding{before})
	eventually(t, "the first finding", func() bool { return r.count() == 1 })

	r.close()
	var during []*loupev1.Finding
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
		f := high("payments")
		during = append(during, f)
		o.Enqueue([]*loupev1.Finding{f})
	}
	if r.count() != 1 {
		t.Fatalf("%d findings delivered to a closed port", r.count())
	}
	if q := metric(t, reg, "loupe_collector_output_queued_findings", "output", "soar"); q != float64(len(during)) {
		t.Errorf("queued_findings = %v while down, want %d", q, len(during))
	}
	r.listen(r.addr)

	eventually(t, "the findings enqueued while down", func() bool { return r.count() == 1+len(during) })
	got := ids(r.findings())
	for _, f := range append(during, before) {
		if got[f.GetId()] != 1 {
			t.Errorf("finding %s delivered %d times", f.GetId(), got[f.GetId()])
		}
	}
	if v := metric(t, reg, "loupe_collector_output_retries_total", "output", "soar"); v < 1 {
		t.Errorf("retries_total = %v, want some", v)
	}
	if v := metric(t, reg, "loupe_collector_output_delivered_total", "output", "soar"); v != float64(1+len(during)) {
		t.Errorf("delivered_total = %v, want %d", v, 1+len(during))
	}
	for _, reason := range Reasons {
		if v := metric(t, reg, "loupe_collector_output_dead_letter_total", "output", "soar", "reason", reason); v != 0 {
			t.Errorf("dead_letter{%s} = %v", reason, v)
		}
	}
}

// Findings still queued when the collector stops are delivered by the next
// process that opens the same state directory.
func TestRestartDeliversQueuedFindings(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: every attempt fails
	spec := "falcosidekick=http://" + addr + "/"

	o, reg := open(t, dir, spec)
	stop := run(t, o)
	var queued []*loupev1.Finding
	for range 5 {
		queued = append(queued, high("payments"))
	}
	o.Enqueue(queued)
	eventually(t, "a failed attempt", func() bool {
		return metric(t, reg, "loupe_collector_output_retries_total", "output", "falcosidekick") >= 1
	})
	stop()
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}

	r := newReceiver(t, addr)
	o2, reg2 := open(t, dir, spec)
	defer o2.Close()
	if q := metric(t, reg2, "loupe_collector_output_queued_findings", "output", "falcosidekick"); q != 5 {
		t.Errorf("reopened outbox holds %v findings, want 5", q)
	}
	run(t, o2)
	eventually(t, "the queued findings", func() bool { return r.count() == 5 })
	got := map[string]int{}
	for _, ev := range r.falcoEvents() {
		got[ev.OutputFields["loupe.id"].(string)]++
	}
	for _, f := range queued {
		if got[f.GetId()] != 1 {
			t.Errorf("finding %s delivered %d times after the restart", f.GetId(), got[f.GetId()])
		}
	}
}

// Enqueue never waits for a receiver: with a send hanging, it still
// returns (a test deadlock, not a timing, would show the contrary).
func TestEnqueueDoesNotWaitForReceiver(t *testing.T) {
	release := make(chan struct{})
	r := newReceiver(t, "127.0.0.1:0")
	r.status = func([]byte) int { <-release; return http.StatusOK }
	o, reg := open(t, t.TempDir(), "webhook=http://"+r.addr+"/")
	defer o.Close()
	run(t, o)
	defer close(release)
	for range 50 {
		o.Enqueue([]*loupev1.Finding{high("payments")})
	}
	if v := metric(t, reg, "loupe_collector_output_enqueued_total", "output", "webhook"); v != 50 {
		t.Errorf("enqueued_total = %v, want 50", v)
	}
}

// While delivery fails, a finding older than max-age is given up (counted
// gave_up); a recent one stays queued.
func TestGiveUpAfterMaxAge(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	o, reg := open(t, t.TempDir(), "webhook=http://"+addr+"/,max-age=1h")
	defer o.Close()
	run(t, o)
	old, recent := high("payments"), high("payments")
	old.Time = timestamppb.New(time.Now().Add(-2 * time.Hour))
	o.Enqueue([]*loupev1.Finding{old, recent})
	eventually(t, "the old finding given up", func() bool {
		return metric(t, reg, "loupe_collector_output_dead_letter_total", "output", "webhook", "reason", ReasonGaveUp) == 1
	})
	eventually(t, "retries", func() bool {
		return metric(t, reg, "loupe_collector_output_retries_total", "output", "webhook") >= 2
	})
	if q := metric(t, reg, "loupe_collector_output_queued_findings", "output", "webhook"); q != 1 {
		t.Errorf("queued_findings = %v, want the recent finding", q)
	}
	// It is still delivered once the receiver is back.
	r := newReceiver(t, addr)
	eventually(t, "the recent finding", func() bool { return r.count() == 1 })
	if got := r.findings()[0].GetId(); got != recent.GetId() {
		t.Errorf("delivered %s, want the recent finding %s", got, recent.GetId())
	}
}

// An outbox at its byte bound drops its oldest, lowest-severity findings
// and counts them as dropped_full.
func TestFullOutboxDropsAreCounted(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	o, reg := open(t, t.TempDir(), "syslog=tcp://"+addr+",max-bytes=4KiB")
	defer o.Close()
	n := 0
	for range 40 {
		o.Enqueue([]*loupev1.Finding{high("payments")})
		n++
	}
	dropped := metric(t, reg, "loupe_collector_output_dead_letter_total", "output", "syslog", "reason", ReasonDroppedFull)
	queued := metric(t, reg, "loupe_collector_output_queued_findings", "output", "syslog")
	if dropped == 0 {
		t.Fatalf("no drop counted after %d findings into a 4 KiB outbox", n)
	}
	if dropped+queued != float64(n) {
		t.Errorf("dropped %v + queued %v != enqueued %d", dropped, queued, n)
	}
}

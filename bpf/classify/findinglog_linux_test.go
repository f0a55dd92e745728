package classify

import (
	"context"
	"sync"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/bpf"
)

// findingLog keeps what a tracer's events become through a classifier.
type findingLog struct {
	mu sync.Mutex
	fs []*loupev1.Finding
}

// collect reads tr's events through cl into a findingLog until stop is called.
func collect(tr *bpf.Tracer, cl *Classifier) (l *findingLog, stop func()) {
	l = &findingLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.Read(ctx, func(ev *bpf.Event) { l.add(cl.Classify(ev)...) })
	}()
	return l, func() { cancel(); <-done }
}

func (l *findingLog) add(fs ...*loupev1.Finding) {
	l.mu.Lock()
	l.fs = append(l.fs, fs...)
	l.mu.Unlock()
}

// all returns a copy of the findings so far.
func (l *findingLog) all() []*loupev1.Finding {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*loupev1.Finding(nil), l.fs...)
}

// last returns the latest finding matching pred, or nil.
func (l *findingLog) last(pred func(*loupev1.Finding) bool) *loupev1.Finding {
	var got *loupev1.Finding
	for _, f := range l.all() {
		if pred(f) {
			got = f
		}
	}
	return got
}

// find waits up to d for a finding matching pred; it fails the test, listing what was seen, if none comes.
func (l *findingLog) find(t *testing.T, d time.Duration, what string, pred func(*loupev1.Finding) bool) *loupev1.Finding {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, f := range l.all() {
			if pred(f) {
				return f
			}
		}
	}
	for _, f := range l.all() {
		t.Logf("seen: %s %s %s", f.Kind, f.Severity, f.Summary)
	}
	t.Fatalf("no finding: %s", what)
	return nil
}

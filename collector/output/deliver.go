package output

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loupe-dev/loupe/agent/spool"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// Delivery bounds.
const (
	batchSize  = 64               // findings peeked from the outbox at a time
	minBackoff = time.Second      // first retry delay
	maxBackoff = 60 * time.Second // retry delay cap
	idlePoll   = 30 * time.Second // outbox re-checked this often without a notification
)

// out is one output: its filter, outbox, encoder and sender.
type out struct {
	cfg    Config
	spool  *spool.Spool
	encode func(*loupev1.Finding) ([]byte, error)
	sender sender
	log    *slog.Logger

	enqueued, delivered, retries prometheus.Counter
	dead                         map[string]prometheus.Counter
	queued                       prometheus.Gauge
	duration                     prometheus.Observer

	minBackoff, maxBackoff time.Duration // tests shorten them

	mu          sync.Mutex
	dropped     uint64    // spool drops already counted
	unlogged    uint64    // drops not logged yet
	dropLogTime time.Time // last drop log line (one a minute at most)
}

func newOut(dir string, c Config, m *metrics, log *slog.Logger) (*out, error) {
	w := &out{cfg: c, log: log.With("output", c.Name),
		enqueued: m.enqueued.WithLabelValues(c.Name), delivered: m.delivered.WithLabelValues(c.Name),
		retries: m.retries.WithLabelValues(c.Name), queued: m.queued.WithLabelValues(c.Name),
		duration: m.duration.WithLabelValues(c.Name), dead: map[string]prometheus.Counter{},
		minBackoff: minBackoff, maxBackoff: maxBackoff}
	for _, r := range Reasons {
		w.dead[r] = m.dead.WithLabelValues(c.Name, r)
	}
	var err error
	switch c.Type {
	case TypeSyslog:
		fac := facilities[c.Facility]
		w.encode = func(f *loupev1.Finding) ([]byte, error) { return syslogMessage(f, fac, maxSyslogBytes) }
		w.sender, err = newSyslogSender(c)
	case TypeFalcosidekick:
		w.encode = falcoJSON
		w.sender, err = newHTTPSender(c)
	default:
		w.encode = func(f *loupev1.Finding) ([]byte, error) { return fit(f, maxBodyBytes, findingJSON) }
		w.sender, err = newHTTPSender(c)
	}
	if err != nil {
		return nil, err
	}
	if w.spool, err = spool.Open(dir, c.MaxBytes); err != nil {
		w.sender.close()
		return nil, err
	}
	w.queued.Set(float64(w.spool.Stats().Findings))
	return w, nil
}

// enqueue appends fs durably. A finding too large for the outbox is dropped
// alone, not with its batch.
func (w *out) enqueue(fs []*loupev1.Finding) {
	if len(fs) == 0 {
		return
	}
	err := w.spool.Append(fs)
	if errors.Is(err, spool.ErrTooLarge) {
		for _, f := range fs {
			w.enqueue1(f)
		}
	} else {
		w.count(len(fs), err)
	}
	w.syncStats()
}

func (w *out) enqueue1(f *loupev1.Finding) {
	w.count(1, w.spool.Append([]*loupev1.Finding{f}))
}

func (w *out) count(n int, err error) {
	switch {
	case err == nil:
		w.enqueued.Add(float64(n))
	case errors.Is(err, spool.ErrTooLarge):
		w.dead[ReasonDroppedFull].Add(float64(n))
		w.log.Warn("finding larger than the output's outbox; dropped", "err", err)
	default:
		w.dead[ReasonSpool].Add(float64(n))
		w.log.Error("store findings in the output's outbox; dropped", "findings", n, "err", err)
	}
}

// syncStats updates the queue gauge and counts the spool's evictions.
func (w *out) syncStats() {
	w.mu.Lock()
	st := w.spool.Stats() // under mu: totals seen in order, delta never negative
	var total uint64
	for _, n := range st.Dropped {
		total += n
	}
	delta := total - w.dropped
	w.dropped = total
	w.unlogged += delta
	var logN uint64
	if w.unlogged > 0 && time.Since(w.dropLogTime) >= time.Minute {
		logN, w.unlogged, w.dropLogTime = w.unlogged, 0, time.Now()
	}
	w.queued.Set(float64(st.Findings))
	w.mu.Unlock()
	w.dead[ReasonDroppedFull].Add(float64(delta))
	if logN > 0 {
		w.log.Warn("output outbox full: oldest lowest-severity findings dropped", "dropped", logN, "max_bytes", w.cfg.MaxBytes)
	}
}

// run sends the outbox's findings until ctx is done, backing off while the
// receiver fails.
func (w *out) run(ctx context.Context) {
	var backoff time.Duration
	for ctx.Err() == nil {
		entries, err := w.spool.Peek(batchSize, nil)
		if err == nil && len(entries) == 0 {
			select {
			case <-ctx.Done():
			case <-w.spool.Ready():
			case <-time.After(idlePoll):
			}
			continue
		}
		if err == nil {
			err = w.deliver(ctx, entries, backoff > 0)
			w.syncStats()
		}
		if err == nil {
			backoff = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		backoff = min(max(2*backoff, w.minBackoff), w.maxBackoff)
		d := backoff*3/4 + rand.N(backoff/2+1) // ±25% jitter
		d = max(d, waitOf(err))                // the receiver's Retry-After, when longer
		w.retries.Inc()
		w.log.Warn("deliver findings; will retry", "err", err, "retry_in", d.Round(time.Millisecond), "queued", w.spool.Stats().Findings)
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
}

// deliver sends entries in order and acknowledges those delivered or given
// up. It stops at the first failure to retry, and returns it. failing says
// the previous attempt failed: expired findings are then given up without
// another attempt, so a dead receiver costs no timeout per old finding.
func (w *out) deliver(ctx context.Context, entries []spool.Entry, failing bool) error {
	var done []spool.Key
	gaveUp := 0
	defer func() {
		if gaveUp > 0 {
			w.dead[ReasonGaveUp].Add(float64(gaveUp))
			w.log.Warn("findings older than max-age given up undelivered", "findings", gaveUp, "max_age", w.cfg.MaxAge)
		}
		if err := w.spool.Ack(done); err != nil {
			// They stay queued and are sent again: at least once.
			w.log.Error("acknowledge findings in the outbox", "err", err)
		}
	}()
	var lastErr error
	for _, e := range entries {
		f := e.Finding
		if failing && w.expired(f) {
			gaveUp++
			done = append(done, e.Key)
			continue
		}
		body, err := w.encode(f)
		if err != nil {
			w.dead[ReasonEncode].Inc()
			w.log.Error("encode finding; dropped", "id", f.GetId(), "err", err)
			done = append(done, e.Key)
			continue
		}
		start := time.Now()
		err = w.sender.send(ctx, body)
		w.duration.Observe(time.Since(start).Seconds())
		switch {
		case err == nil:
			w.delivered.Inc()
			done = append(done, e.Key)
			failing = false
		case isRejected(err):
			w.dead[ReasonRejected].Inc()
			w.log.Warn("receiver rejected finding; dropped", "id", f.GetId(), "kind", f.GetKind().ShortName(), "err", err)
			done = append(done, e.Key)
			failing = false
		case ctx.Err() != nil:
			return err
		case w.expired(f):
			gaveUp++
			done = append(done, e.Key)
			failing, lastErr = true, err
		default:
			return err
		}
	}
	if failing {
		return lastErr
	}
	return nil
}

// expired reports a finding older than max-age (or without a time, which
// the collector never stores).
func (w *out) expired(f *loupev1.Finding) bool {
	t := f.GetTime()
	return !t.IsValid() || time.Since(t.AsTime()) > w.cfg.MaxAge
}

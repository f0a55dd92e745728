package output

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// sender delivers one encoded finding; it is used by one goroutine at a time.
type sender interface {
	send(ctx context.Context, body []byte) error
	close() error
}

// Outputs is the set of configured outputs. Enqueue is safe for concurrent
// use; a nil *Outputs (no output configured) does nothing.
type Outputs struct {
	outs []*out
	log  *slog.Logger
}

// Open opens one outbox per output under dir (dir/NAME) and registers the
// outputs' metrics on reg. Findings left undelivered by a previous run are
// sent once Run starts.
func Open(dir string, cfgs []Config, reg prometheus.Registerer, log *slog.Logger) (*Outputs, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var names []string
	for i := range cfgs {
		c, err := cfgs[i].normalize()
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if n == c.Name {
				return nil, fmt.Errorf("two outputs named %q: give one a name=", n)
			}
		}
		names = append(names, c.Name)
		cfgs[i] = c
	}
	m, err := newMetrics(reg, names)
	if err != nil {
		return nil, fmt.Errorf("register output metrics: %w", err)
	}
	o := &Outputs{log: log}
	for _, c := range cfgs {
		w, err := newOut(filepath.Join(dir, c.Name), c, m, log)
		if err != nil {
			o.Close()
			return nil, err
		}
		o.outs = append(o.outs, w)
	}
	return o, nil
}

// Enqueue appends to each output's outbox the findings its filter matches:
// one durable local write per output, never a wait for a receiver. Errors
// are logged and counted (dead_letter_total), never returned: ingest must
// not fail because an output does.
func (o *Outputs) Enqueue(fs []*loupev1.Finding) {
	if o == nil {
		return
	}
	for _, w := range o.outs {
		var sel []*loupev1.Finding
		for _, f := range fs {
			if w.cfg.Match(f) {
				sel = append(sel, f)
			}
		}
		w.enqueue(sel)
	}
}

// Run delivers until ctx is done, one goroutine per output, and returns
// when they all have stopped. A send in flight when ctx ends is not
// acknowledged: that finding is sent again by the next Run.
func (o *Outputs) Run(ctx context.Context) {
	if o == nil {
		return
	}
	var wg sync.WaitGroup
	for _, w := range o.outs {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
}

// Close closes the outboxes and connections; call it after Run returned.
func (o *Outputs) Close() error {
	if o == nil {
		return nil
	}
	var errs []error
	for _, w := range o.outs {
		errs = append(errs, w.sender.close(), w.spool.Close())
	}
	return errors.Join(errs...)
}

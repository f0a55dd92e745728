package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loupe-dev/loupe/agent/compliance"
	"github.com/loupe-dev/loupe/agent/inspect"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/runtime"
)

// complianceState runs the compliance profiles (--profiles DIR, else the
// shipped ones) after each container scan and emits CONTROL_RESULT findings
// when a control's status for a container changes.
type complianceState struct {
	set      *compliance.Set
	controls *prometheus.CounterVec
	evalDur  prometheus.Histogram

	mu   sync.Mutex
	last map[string]map[string]string // container id → profile/sha/control → status
}

// complianceReloadInterval is how often --profiles DIR is polled for changes.
const complianceReloadInterval = 3 * time.Second

// setupCompliance loads the profiles (an error names the file and line) and
// registers the metrics; the returned source reloads the profiles on change.
func (a *Agent) setupCompliance() (*complianceState, source, error) {
	s := &complianceState{last: map[string]map[string]string{}}
	var err error
	if s.set, err = compliance.NewSet(a.cfg.ProfilesDir, a.log); err != nil {
		return nil, source{}, fmt.Errorf("compliance profiles (--profiles): %w", err)
	}
	s.controls = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "loupe", Subsystem: "agent", Name: "controls_total",
		Help: "Compliance controls evaluated per container scan, by profile and status (passed, failed, skipped, error)."}, []string{"profile", "status"})
	s.evalDur = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "loupe", Subsystem: "agent", Name: "compliance_duration_seconds",
		Help: "Duration of evaluating all compliance profiles against one container.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8)})
	a.reg.MustRegister(s.controls, s.evalDur)
	for _, p := range s.set.Profiles() {
		for _, st := range []compliance.Status{compliance.Passed, compliance.Failed, compliance.Skipped, compliance.Error} {
			s.controls.WithLabelValues(p.Name, string(st))
		}
	}
	watch := source{"compliance-profiles", func(ctx context.Context) error {
		return s.set.Watch(ctx, complianceReloadInterval, func() {
			// New or changed profiles: evaluate every running container again.
			for _, c := range a.parts.registry.List() {
				if c.Kind != runtime.KindSandbox && c.State == runtime.StateRunning {
					a.queueScan(c.ID)
				}
			}
		})
	}}
	return s, watch, nil
}

// evaluateCompliance runs the active profiles against a scanned container
// and emits the control results whose status changed since the last scan.
func (a *Agent) evaluateCompliance(ctx context.Context, c *runtime.Container, t inspect.Target, rep *inspect.Report) {
	s := a.parts.compliance
	profiles := s.set.Profiles()
	if len(profiles) == 0 {
		return
	}
	start := time.Now()
	fsys, err := compliance.NewFS(t)
	if err != nil {
		a.log.Warn("compliance: open container filesystem", "container", c.String(), "err", err)
		// Still evaluate: file resources report status error with the reason.
	}
	target := &compliance.Target{Name: c.Image, Container: t.Container, Report: rep, Node: a.cfg.NodeName,
		Facts: compliance.ContainerFacts{UserKnown: true, UID: c.Spec.UID, SpecKnown: true, Privileged: c.Spec.Privileged,
			ReadOnlyRootfs: c.Spec.ReadOnlyRootfs, NoNewPrivileges: c.Spec.NoNewPrivileges,
			CapEffective: c.Spec.CapEffective, CapBounding: c.Spec.CapBounding}}
	if fsys != nil {
		target.FS = fsys
		defer fsys.Close()
	}
	var runs []*compliance.Run
	for _, p := range profiles {
		r := compliance.Evaluate(ctx, p, target)
		runs = append(runs, r)
		for _, cr := range r.Controls {
			s.controls.WithLabelValues(p.Name, string(cr.Status())).Inc()
		}
	}
	s.evalDur.Observe(time.Since(start).Seconds())
	s.mu.Lock()
	if len(s.last) > 4096 {
		for id := range s.last {
			if _, ok := a.parts.registry.Get(id); !ok {
				delete(s.last, id)
			}
		}
	}
	last := s.last[c.ID]
	if last == nil {
		last = map[string]string{}
		s.last[c.ID] = last
	}
	var fresh []*loupev1.Finding
	for _, r := range runs {
		for _, f := range r.Findings() {
			key := fmt.Sprintf("%s\x00%s\x00%s", r.Profile.Name, r.Profile.SHA256, f.GetControl().GetId())
			if last[key] != f.GetControl().GetStatus() {
				last[key] = f.GetControl().GetStatus()
				fresh = append(fresh, f)
			}
		}
	}
	s.mu.Unlock()
	for _, f := range fresh {
		a.emit.Emit(ctx, f)
	}
	a.log.Debug("compliance evaluated", "container", c.String(), "profiles", len(profiles), "new_results", len(fresh),
		"duration", time.Since(start))
}

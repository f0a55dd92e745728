package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-dev/loupe/agent/inspect"
	"github.com/loupe-dev/loupe/agent/inspect/layercache"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/bpf"
	"github.com/loupe-dev/loupe/bpf/classify"
	"github.com/loupe-dev/loupe/internal/obs"
	"github.com/loupe-dev/loupe/runtime"
	"github.com/loupe-dev/loupe/runtime/containerd"
)

// parts holds the Linux-only components.
type parts struct {
	registry   *containerd.Registry
	tracer     *bpf.Tracer
	tracerErr  error
	classifier *classify.Classifier
	procs      *classify.ProcTable
	cache      *layercache.Cache
	scanner    *inspect.Scanner
	execs      *execCache

	mu   sync.Mutex
	seen map[string]map[string]bool // container id → fingerprints of inventory findings sent

	compliance *complianceState

	scanQueue  chan string
	scanDur    prometheus.Histogram
	scanFiles  prometheus.Counter
	cacheHits  prometheus.Counter
	scanErrors prometheus.Counter
}

func (a *Agent) setupSources(ctx context.Context) error {
	p := &a.parts
	p.seen = map[string]map[string]bool{}
	p.scanQueue = make(chan string, 4096)
	p.execs = newExecCache(4096, 30*time.Second)

	m, err := containerd.NewMetrics(a.reg)
	if err != nil {
		return fmt.Errorf("register runtime metrics: %w", err)
	}
	p.registry = containerd.New(containerd.Config{
		Socket: a.cfg.ContainerdSocket, Namespace: a.cfg.ContainerdNamespace, HostRoot: a.cfg.HostRoot,
		StateDir: a.cfg.ContainerdState, Logger: a.log, Metrics: m,
	})
	a.checks["containerd"] = p.registry.Ready
	a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "loupe", Subsystem: "agent", Name: "containers",
		Help: "Running workload containers (pod sandboxes excluded) the agent watches.",
	}, func() float64 {
		n := 0
		for _, c := range p.registry.List() {
			if c.Kind != runtime.KindSandbox && c.State == runtime.StateRunning {
				n++
			}
		}
		return float64(n)
	}))

	// The tracer: a failure to load (no root, no BTF, lockdown) leaves the
	// agent running for inspection and shows in /readyz with the reason.
	var policy *bpf.KillPolicy
	for _, sel := range a.emit.rules.KillShells() {
		if policy == nil {
			policy = &bpf.KillPolicy{}
		}
		policy.Selectors = append(policy.Selectors, bpf.KillSelector{Namespace: sel.Namespace, Pod: sel.Pod, Image: sel.Image})
	}
	p.tracer, p.tracerErr = bpf.NewTracer(bpf.Config{
		RingBufferBytes: a.cfg.RingBufferBytes, ExecFailures: a.cfg.ExecFailures, TraceHost: a.cfg.TraceHost,
		Enforce: policy != nil, Logger: a.log,
	})
	if p.tracerErr != nil {
		a.log.Error("exec tracer unavailable: exec findings are off on this node", "err", p.tracerErr)
	} else {
		a.reg.MustRegister(bpf.NewMetrics(p.tracer), newExecEventsCollector(p.tracer))
	}
	a.checks["tracer"] = func() error {
		if p.tracerErr != nil {
			return p.tracerErr
		}
		if m := p.tracer.Mode(); m.Degraded() {
			return obs.Degraded(m.String())
		}
		return nil
	}
	p.procs = classify.NewProcTable(filepath.Join(a.cfg.HostRoot, "proc"), 0)
	if _, err := p.procs.Seed(); err != nil {
		a.log.Warn("seed process table from /proc", "err", err)
	}
	p.classifier = classify.New(classify.Options{
		Node: a.cfg.NodeName, Containers: classify.FromRegistry(p.registry), Drift: classify.UpperDir{}, Procs: p.procs, Logger: a.log,
	})

	cacheDir := filepath.Join(a.cfg.StateDir, "layers")
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return fmt.Errorf("create layer cache dir in --state-dir: %w", err)
	}
	if p.cache, err = layercache.Open(cacheDir); err != nil {
		return fmt.Errorf("open layer cache in --state-dir %s: %w", a.cfg.StateDir, err)
	}
	p.scanner = inspect.New(inspect.Options{Node: a.cfg.NodeName}, p.cache, a.log)
	p.scanDur = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "loupe", Subsystem: "agent", Name: "scan_duration_seconds",
		Help: "Duration of container filesystem scans (cached layers make later scans short).", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)})
	p.scanFiles = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "loupe", Subsystem: "agent", Name: "scan_files_total",
		Help: "Files walked by container scans (layers served from the cache count nothing)."})
	p.cacheHits = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "loupe", Subsystem: "agent", Name: "layer_cache_hits_total",
		Help: "Image layers whose scan result came from the layer cache."})
	p.scanErrors = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "loupe", Subsystem: "agent", Name: "scan_errors_total",
		Help: "Container scans that failed (the container is retried at the next rescan)."})
	a.reg.MustRegister(p.scanDur, p.scanFiles, p.cacheHits, p.scanErrors)

	comp, watch, err := a.setupCompliance()
	if err != nil {
		return err
	}
	p.compliance = comp

	events, cancel := p.registry.Subscribe(4096)
	a.sources = append(a.sources,
		source{"runtime", p.registry.Run},
		source{"runtime-events", func(ctx context.Context) error { defer cancel(); return a.runtimeEvents(ctx, events) }},
		source{"scanner", a.scanLoop},
		source{"rescan", a.rescanLoop},
		source{"control", a.controlLoop}, // capture_linux.go: captures asked by the collector
		watch,
	)
	if p.tracer != nil {
		hostMntNS, _ := runtime.ProcMountNS(a.cfg.HostRoot, 1)
		a.sources = append(a.sources,
			source{"tracer", a.traceLoop},
			source{"tracer-maps", func(ctx context.Context) error {
				return classify.Follow(ctx, p.registry, p.tracer, classify.FollowOptions{Policy: policy, HostMntNS: hostMntNS, Logger: a.log})
			}})
	}
	return nil
}

func (a *Agent) closeSources() {
	if a.parts.tracer != nil {
		a.parts.tracer.Close()
	}
	if a.parts.cache != nil {
		a.parts.cache.Close()
	}
}

// runtimeEvents queues scans of new containers, forgets removed ones and
// turns runtime execs into findings. (classify.Follow keeps the tracer's maps.)
func (a *Agent) runtimeEvents(ctx context.Context, events <-chan runtime.Event) error {
	p := &a.parts
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			switch ev.Type {
			case runtime.EventStart:
				if ev.Container.Kind != runtime.KindSandbox {
					a.queueScan(ev.Container.ID)
				}
			case runtime.EventRemove:
				p.mu.Lock()
				delete(p.seen, ev.Container.ID)
				p.mu.Unlock()
			case runtime.EventExec, runtime.EventExecFailed:
				go a.runtimeExec(ctx, ev)
			}
		}
	}
}

// runtimeExec reports an exec through the runtime (kubectl exec). For a
// started exec, the argv comes from the tracer's event for the same PID.
func (a *Agent) runtimeExec(ctx context.Context, ev runtime.Event) {
	c, x := ev.Container, ev.Exec
	f := &loupev1.Finding{Time: timestamppb.New(ev.Time), Container: classify.ContainerOf(c).Ref,
		Process: &loupev1.Process{Pid: int32(x.PID), ExecId: x.ID}}
	who := c.String()
	if ev.Type == runtime.EventExec {
		f.Kind, f.Severity, f.Rule = loupev1.Kind_KIND_RUNTIME_EXEC, loupev1.Severity_SEVERITY_MEDIUM, "runtime.exec"
		if e, ok := a.parts.execs.wait(ctx, uint32(x.PID), 500*time.Millisecond); ok {
			f.Process.Filename, f.Process.Argv, f.Process.Comm, f.Process.Tty = e.Path, e.Argv, e.Comm, e.TTY
			f.Process.Uid = e.UID
		}
		f.Summary = fmt.Sprintf("runtime exec into %s: %s (pid %d)", who, orUnknown(strings.Join(f.Process.Argv, " ")), x.PID)
	} else {
		f.Kind, f.Severity, f.Rule = loupev1.Kind_KIND_RUNTIME_EXEC_FAILED, loupev1.Severity_SEVERITY_MEDIUM, "runtime.exec_failed"
		f.Process.Filename = x.Path
		if isShellOrTool(x.Path) {
			f.Severity = loupev1.Severity_SEVERITY_HIGH
		}
		f.Details = map[string]string{"runtime_error": x.Message}
		if x.Error != "" {
			f.Process.Errno = errnoOf(x.Error)
		}
		f.Summary = fmt.Sprintf("runtime exec into %s failed: %s", who, orUnknown(x.Message))
	}
	a.emit.Emit(ctx, f)
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

// isShellOrTool reports whether a path names a shell or a common attack tool.
func isShellOrTool(p string) bool {
	switch path.Base(p) {
	case "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox", "toybox",
		"curl", "wget", "nc", "ncat", "socat", "python", "python3", "perl", "ruby", "node", "php":
		return true
	}
	return false
}

// errnoOf maps runc's error text to an errno for the finding.
func errnoOf(msg string) int32 {
	switch {
	case strings.Contains(msg, "no such file or directory"):
		return 2
	case strings.Contains(msg, "permission denied"):
		return 13
	case strings.Contains(msg, "exec format error"):
		return 8
	}
	return 0
}

// traceLoop turns exec events into findings.
func (a *Agent) traceLoop(ctx context.Context) error {
	p := &a.parts
	return p.tracer.Read(ctx, func(ev *bpf.Event) {
		if ev.Type == bpf.EventExec {
			p.execs.put(ev)
		}
		for _, f := range p.classifier.Classify(ev) {
			a.emit.Emit(ctx, f) // drops kinds the rules disable
			if f.GetKind() == loupev1.Kind_KIND_DRIFT_EXEC {
				a.queueScan(f.GetContainer().GetId())
			}
		}
	})
}

func (a *Agent) queueScan(id string) {
	select {
	case a.parts.scanQueue <- id:
	default:
		a.log.Warn("scan queue full; the container waits for the next rescan", "container", id)
	}
}

// scanLoop scans queued containers, ScanConcurrency at a time.
func (a *Agent) scanLoop(ctx context.Context) error {
	sem := make(chan struct{}, a.cfg.ScanConcurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	pending := map[string]bool{}
	var mu sync.Mutex
	for {
		select {
		case <-ctx.Done():
			return nil
		case id := <-a.parts.scanQueue:
			mu.Lock()
			if pending[id] {
				mu.Unlock()
				continue
			}
			pending[id] = true
			mu.Unlock()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done(); mu.Lock(); delete(pending, id); mu.Unlock() }()
				a.scanContainer(ctx, id)
			}()
		}
	}
}

// rescanLoop queues every running container every RescanInterval (±10%).
func (a *Agent) rescanLoop(ctx context.Context) error {
	for {
		jitter := time.Duration(rand.Int64N(int64(a.cfg.RescanInterval)/5)) - a.cfg.RescanInterval/10
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(a.cfg.RescanInterval + jitter):
		}
		for _, c := range a.parts.registry.List() {
			if c.Kind != runtime.KindSandbox && c.State == runtime.StateRunning {
				a.queueScan(c.ID)
			}
		}
	}
}

// scanContainer scans one container and emits the findings not sent before
// for it (a rescan reports only what is new: drift, a changed file).
func (a *Agent) scanContainer(ctx context.Context, id string) {
	p := &a.parts
	c, ok := p.registry.Get(id)
	if !ok || c.State != runtime.StateRunning {
		return
	}
	target := scanTarget(c)
	rep, err := p.scanner.Scan(ctx, target)
	if err != nil {
		p.scanErrors.Inc()
		a.log.Warn("scan container", "container", c.String(), "err", err)
		return
	}
	defer a.evaluateCompliance(ctx, c, target, rep) // compliance_linux.go: CONTROL_RESULT findings
	p.scanDur.Observe(rep.Duration.Seconds())
	p.cacheHits.Add(float64(rep.CacheHits))
	var walked int64
	for _, l := range rep.Layers {
		if !l.Cached {
			walked += l.Files
		}
	}
	p.scanFiles.Add(float64(walked))
	p.mu.Lock()
	seen := p.seen[id]
	if seen == nil {
		seen = map[string]bool{}
		p.seen[id] = seen
	}
	var fresh []*loupev1.Finding
	for _, f := range rep.Findings {
		fp := fingerprint(f)
		if !seen[fp] {
			seen[fp] = true
			fresh = append(fresh, f)
		}
	}
	p.mu.Unlock()
	for _, f := range fresh {
		a.emit.Emit(ctx, f)
	}
	a.log.Debug("scanned container", "container", c.String(), "findings", len(rep.Findings), "new", len(fresh),
		"cache_hits", rep.CacheHits, "duration", rep.Duration)
}

// fingerprint identifies an inventory finding across rescans.
func fingerprint(f *loupev1.Finding) string {
	fl, pk := f.GetFile(), f.GetPackage()
	return strings.Join([]string{f.GetKind().String(), f.GetRule(), fl.GetPath(), fl.GetSha256(), fl.GetChange(),
		fmt.Sprint(fl.GetMode()), pk.GetEcosystem(), pk.GetName(), pk.GetVersion(), f.GetDetails()["profile"]}, "\x00")
}

// execEvents exports loupe_agent_exec_events_total{result}.
type execEventsCollector struct {
	t    *bpf.Tracer
	desc *prometheus.Desc
}

func newExecEventsCollector(t *bpf.Tracer) prometheus.Collector {
	return &execEventsCollector{t: t, desc: prometheus.NewDesc("loupe_agent_exec_events_total",
		"Exec events seen by the tracer in tracked containers (and the host with --trace-host), by result.", []string{"result"}, nil)}
}

func (c *execEventsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *execEventsCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(c.t.Count(bpf.EventExec)), "success")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(c.t.Count(bpf.EventExecFailed)), "failed")
}

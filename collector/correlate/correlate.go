// Package correlate links Kubernetes audit events (K8S_* findings) to the
// node findings they caused, when findings are read:
//
//   - a K8S_EXEC and a RUNTIME_EXEC or RUNTIME_EXEC_FAILED of the same
//     namespace, pod and container name within Window of each other (the
//     nearest such audit event, among the requests the API server let
//     through);
//   - a shell or any exec (SHELL_EXEC, EXEC, EXEC_FAILED, DRIFT_EXEC) whose
//     process or one of its ancestors is the process of such a RUNTIME_EXEC,
//     up to ChildWindow after it;
//   - the same kinds of finding in a container a K8S_DEBUG added (kubectl
//     debug names its container), up to DebugWindow after it.
//
// Links are computed from the store on every read and never stored, so
// they hold whichever order the audit event and the node findings arrive
// in, and whichever collector replica stored each of them.
package correlate

import (
	"context"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
)

// Time windows of the join.
const (
	// Window is how far apart an audit event and the runtime exec it caused
	// may be: API server → kubelet → containerd takes milliseconds, the
	// rest is clock skew between the control plane and the node.
	Window = 30 * time.Second
	// ChildWindow is how long after a runtime exec its processes are
	// attributed to it.
	ChildWindow = 10 * time.Minute
	// DebugWindow is how long after kubectl debug the execs of its
	// container are attributed to it.
	DebugWindow = time.Hour
	// maxCandidates bounds each store lookup.
	maxCandidates = 200
	// bucket rounds lookup windows, so that the findings of one container
	// in the same minute share one store query.
	bucket = time.Minute
	// maxMemo bounds the lookups a Linker remembers.
	maxMemo = 4096
)

// Query runs q against st as store.Query does, with q's user filter
// expanded (QueryUser), and calls fn with each finding, its Links and
// K8sUser set. The lookups of the join are store queries of their own, run
// after q's result is read (never while a connection of the store is
// still held for it), so a result that may hold joinable kinds is read
// whole first: at most q's limit of findings.
func Query(ctx context.Context, st Querier, q *loupev1.QueryRequest, fn func(*loupev1.Finding) error) error {
	l := New(st)
	if q.GetUser() == "" && !joinable(q.GetKinds()) {
		return st.Query(ctx, q, fn) // nothing to link: stream
	}
	var out []*loupev1.Finding
	collect := func(f *loupev1.Finding) error { out = append(out, f); return nil }
	var err error
	if q.GetUser() != "" {
		err = l.QueryUser(ctx, q, collect)
	} else {
		err = st.Query(ctx, q, collect)
	}
	if err != nil {
		return err
	}
	if err := l.Annotate(ctx, out); err != nil {
		return err
	}
	for _, f := range out {
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// joinable: a query of kinds (none: every kind) may return findings that
// carry links.
func joinable(kinds []loupev1.Kind) bool {
	if len(kinds) == 0 {
		return true
	}
	for _, k := range kinds {
		if k == loupev1.Kind_KIND_K8S_EXEC || k == loupev1.Kind_KIND_K8S_DEBUG || slices.Contains(runtimeKinds, k) || slices.Contains(processKinds, k) {
			return true
		}
	}
	return false
}

// QueryUser answers a query with a user: the audit events of that user
// (at most the query's limit of them, in its order) and the node findings
// each caused, every one of them matching the query's other filters, in
// the query's order, cut at its limit.
func (l *Linker) QueryUser(ctx context.Context, req *loupev1.QueryRequest, fn func(*loupev1.Finding) error) error {
	if err := store.CheckQuery(req); err != nil {
		return err
	}
	limit, _ := store.EffectiveLimit(req)
	evq := &loupev1.QueryRequest{User: req.GetUser(), Namespace: req.GetNamespace(), Pod: req.GetPod(), Kinds: AuditKinds,
		Until: req.GetUntil(), Limit: uint32(limit), Order: req.GetOrder()}
	if t := req.GetSince(); t != nil {
		// An event before since may have caused node findings after it.
		evq.Since = ts(t.AsTime().Add(-DebugWindow))
	}
	var evs []*loupev1.Finding
	if err := l.st.Query(ctx, evq, func(f *loupev1.Finding) error { evs = append(evs, f); return nil }); err != nil {
		return err
	}
	rest := proto.Clone(req).(*loupev1.QueryRequest)
	rest.User = ""
	rows := map[string]*loupev1.Finding{}
	for _, ev := range evs {
		if store.Match(rest, ev) {
			rows[ev.GetId()] = ev
		}
		caused, err := l.Caused(ctx, ev)
		if err != nil {
			return err
		}
		for _, c := range caused {
			if store.Match(rest, c) {
				rows[c.GetId()] = proto.Clone(c).(*loupev1.Finding)
			}
		}
	}
	out := make([]*loupev1.Finding, 0, len(rows))
	for _, f := range rows {
		out = append(out, f)
	}
	oldest := req.GetOrder() == loupev1.Order_ORDER_OLDEST_FIRST
	slices.SortFunc(out, func(a, b *loupev1.Finding) int {
		c := a.GetTime().AsTime().Compare(b.GetTime().AsTime())
		if c == 0 {
			c = strings.Compare(a.GetId(), b.GetId())
		}
		if !oldest {
			c = -c
		}
		return c
	})
	for _, f := range out[:min(len(out), limit)] {
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// Relations of a Link.
const (
	RequestedBy = "requested_by" // on a node finding: the audit event behind it
	Caused      = "caused"       // on an audit event: a node finding it caused
)

var (
	runtimeKinds = []loupev1.Kind{loupev1.Kind_KIND_RUNTIME_EXEC, loupev1.Kind_KIND_RUNTIME_EXEC_FAILED}
	processKinds = []loupev1.Kind{loupev1.Kind_KIND_SHELL_EXEC, loupev1.Kind_KIND_EXEC, loupev1.Kind_KIND_EXEC_FAILED, loupev1.Kind_KIND_DRIFT_EXEC}
	// AuditKinds are the kinds of Kubernetes audit findings.
	AuditKinds = []loupev1.Kind{loupev1.Kind_KIND_K8S_EXEC, loupev1.Kind_KIND_K8S_ATTACH, loupev1.Kind_KIND_K8S_PORTFORWARD,
		loupev1.Kind_KIND_K8S_DEBUG, loupev1.Kind_KIND_K8S_NODE_PROXY, loupev1.Kind_KIND_K8S_PRIVILEGED_POD}
)

// Querier is the part of store.Store the join reads.
type Querier interface {
	Query(ctx context.Context, q *loupev1.QueryRequest, fn func(*loupev1.Finding) error) error
}

// Linker computes links. A Linker memoises its lookups: use one per request.
type Linker struct {
	st      Querier
	queries map[string][]*loupev1.Finding

	// The K8S_EXEC and K8S_DEBUG events of pods, read once per Annotate
	// (prefetch): most node findings then need no lookup of their own (no
	// audit event near them, no link).
	ev map[string]*podEvents
}

// podEvents are the audit events of one pod in [from, to).
type podEvents struct {
	from, to time.Time
	list     []*loupev1.Finding
}

// Bounds of the prefetch: the audit events it reads at once, and the pods
// it reads one by one (more pods: one query for all of them).
const (
	maxPrefetch     = 10000
	maxPrefetchPods = 16
)

// New returns a Linker reading st.
func New(st Querier) *Linker { return &Linker{st: st, queries: map[string][]*loupev1.Finding{}} }

// Annotate sets Links (and K8sUser of node findings) on fs, in place.
func (l *Linker) Annotate(ctx context.Context, fs []*loupev1.Finding) error {
	if err := l.prefetch(ctx, fs); err != nil {
		return err
	}
	for _, f := range fs {
		f.Links = nil
		switch {
		case f.GetKind() == loupev1.Kind_KIND_K8S_EXEC || f.GetKind() == loupev1.Kind_KIND_K8S_DEBUG:
			caused, err := l.Caused(ctx, f)
			if err != nil {
				return err
			}
			for _, c := range caused {
				f.Links = append(f.Links, link(c, f.GetK8SUser(), Caused))
			}
		case slices.Contains(runtimeKinds, f.GetKind()) || slices.Contains(processKinds, f.GetKind()):
			ev, err := l.RequestedBy(ctx, f)
			if err != nil {
				return err
			}
			if ev != nil {
				f.K8SUser = ev.GetK8SUser()
				f.Links = append(f.Links, link(ev, ev.GetK8SUser(), RequestedBy))
			}
		}
	}
	return nil
}

// prefetch reads the audit events that may link to the node findings of
// fs: per pod when they are of a few pods, else all of them at once, and
// keeps them when there are at most maxPrefetch.
func (l *Linker) prefetch(ctx context.Context, fs []*loupev1.Finding) error {
	l.ev = map[string]*podEvents{}
	spans := map[string]*podEvents{}
	var all *podEvents
	for _, f := range fs {
		c := f.GetContainer()
		if c.GetNamespace() == "" || c.GetPod() == "" || !(slices.Contains(runtimeKinds, f.GetKind()) || slices.Contains(processKinds, f.GetKind())) {
			continue
		}
		t := f.GetTime().AsTime()
		if all == nil {
			all = &podEvents{from: t, to: t}
		}
		all.from, all.to = minTime(all.from, t), maxTime(all.to, t)
		sp := spans[podKey(c)]
		if sp == nil {
			sp = &podEvents{from: t, to: t}
			spans[podKey(c)] = sp
		}
		sp.from, sp.to = minTime(sp.from, t), maxTime(sp.to, t)
	}
	if all == nil {
		return nil
	}
	// Cover every lookup a finding of the span may make.
	widen := func(sp *podEvents) {
		sp.from, sp.to = sp.from.Add(-DebugWindow-ChildWindow-Window), sp.to.Add(2*Window+time.Nanosecond)
	}
	kinds := []loupev1.Kind{loupev1.Kind_KIND_K8S_EXEC, loupev1.Kind_KIND_K8S_DEBUG}
	read := func(q *loupev1.QueryRequest, fn func(*loupev1.Finding)) (bool, error) {
		q.Kinds, q.Limit, q.Order = kinds, maxPrefetch, loupev1.Order_ORDER_OLDEST_FIRST
		n := 0
		err := l.st.Query(ctx, q, func(f *loupev1.Finding) error { n++; fn(f); return nil })
		return n < maxPrefetch, err
	}
	if len(spans) <= maxPrefetchPods {
		for key, sp := range spans {
			widen(sp)
			ns, pod, _ := strings.Cut(key, "/")
			complete, err := read(&loupev1.QueryRequest{Namespace: ns, Pod: pod, Since: ts(sp.from), Until: ts(sp.to)},
				func(f *loupev1.Finding) { sp.list = append(sp.list, f) })
			if err != nil {
				return err
			}
			if complete {
				l.ev[key] = sp
			}
		}
		return nil
	}
	widen(all)
	byPod := map[string][]*loupev1.Finding{}
	complete, err := read(&loupev1.QueryRequest{Since: ts(all.from), Until: ts(all.to)}, func(f *loupev1.Finding) {
		byPod[podKey(f.GetContainer())] = append(byPod[podKey(f.GetContainer())], f)
	})
	if err != nil || !complete {
		return err
	}
	for key := range spans {
		l.ev[key] = &podEvents{from: all.from, to: all.to, list: byPod[key]}
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func podKey(c *loupev1.ContainerRef) string { return c.GetNamespace() + "/" + c.GetPod() }

// events returns the audit events of kind for c's pod in [since, until),
// from the prefetch when it covers the range, else from the store.
func (l *Linker) events(ctx context.Context, kind loupev1.Kind, c *loupev1.ContainerRef, since, until time.Time) ([]*loupev1.Finding, error) {
	pe := l.ev[podKey(c)]
	if pe == nil || since.Before(pe.from) || until.After(pe.to) {
		return l.query(ctx, &loupev1.QueryRequest{Namespace: c.GetNamespace(), Pod: c.GetPod(), Kinds: []loupev1.Kind{kind},
			Since: ts(since), Until: ts(until)})
	}
	var out []*loupev1.Finding
	for _, ev := range pe.list {
		if t := ev.GetTime().AsTime(); ev.GetKind() == kind && !t.Before(since) && t.Before(until) {
			out = append(out, ev)
		}
	}
	return out, nil
}

func link(f *loupev1.Finding, user, rel string) *loupev1.Link {
	return &loupev1.Link{FindingId: f.GetId(), Kind: f.GetKind(), Time: f.GetTime(), Node: f.GetNode(), User: user, Relation: rel}
}

// RequestedBy returns the audit event behind node finding f, or nil.
func (l *Linker) RequestedBy(ctx context.Context, f *loupev1.Finding) (*loupev1.Finding, error) {
	if slices.Contains(runtimeKinds, f.GetKind()) {
		return l.execEvent(ctx, f)
	}
	if !slices.Contains(processKinds, f.GetKind()) {
		return nil, nil
	}
	if c := f.GetContainer(); c.GetNamespace() != "" && c.GetPod() != "" {
		// No kubectl exec into this pod in the time a runtime exec could
		// have started f: no need to look for one.
		t := f.GetTime().AsTime()
		evs, err := l.events(ctx, loupev1.Kind_KIND_K8S_EXEC, c, t.Add(-ChildWindow-Window), t.Add(2*Window))
		if err != nil {
			return nil, err
		}
		if len(evs) == 0 {
			return l.debugEvent(ctx, f)
		}
	}
	rt, err := l.startedBy(ctx, f)
	if err != nil || rt != nil {
		if rt == nil {
			return nil, err
		}
		return l.execEvent(ctx, rt)
	}
	return l.debugEvent(ctx, f)
}

// execEvent is the K8S_EXEC nearest in time to runtime exec rt.
func (l *Linker) execEvent(ctx context.Context, rt *loupev1.Finding) (*loupev1.Finding, error) {
	c := rt.GetContainer()
	if c.GetNamespace() == "" || c.GetPod() == "" {
		return nil, nil
	}
	t := rt.GetTime().AsTime()
	evs, err := l.events(ctx, loupev1.Kind_KIND_K8S_EXEC, c, t.Add(-Window), t.Add(Window))
	if err != nil {
		return nil, err
	}
	var best *loupev1.Finding
	for _, ev := range evs {
		if !sameContainer(ev, rt) || ev.GetAudit().GetResponseCode() >= 400 {
			continue // a refused request never reached the node
		}
		if best == nil || dist(ev, t) < dist(best, t) {
			best = ev
		}
	}
	return best, nil
}

// startedBy is the RUNTIME_EXEC whose process is f's process or one of
// its ancestors, in the same container, at most ChildWindow before f.
func (l *Linker) startedBy(ctx context.Context, f *loupev1.Finding) (*loupev1.Finding, error) {
	cid := f.GetContainer().GetId()
	if len(cid) < store.MinContainerPrefix {
		return nil, nil
	}
	pids := map[int32]bool{}
	if p := f.GetProcess().GetPid(); p > 0 {
		pids[p] = true
	}
	for _, a := range f.GetProcess().GetAncestors() {
		if a.GetPid() > 0 {
			pids[a.GetPid()] = true
		}
	}
	if len(pids) == 0 {
		return nil, nil
	}
	t := f.GetTime().AsTime()
	// Newest first: the exec that started f is the latest before it, and
	// exec probes can make hundreds of runtime execs in the window.
	rts, err := l.query(ctx, &loupev1.QueryRequest{ContainerId: cid, Kinds: []loupev1.Kind{loupev1.Kind_KIND_RUNTIME_EXEC},
		Since: ts(t.Add(-ChildWindow)), Until: ts(t.Add(Window)), Order: loupev1.Order_ORDER_NEWEST_FIRST})
	if err != nil {
		return nil, err
	}
	var best *loupev1.Finding
	for _, rt := range rts {
		if rt.GetContainer().GetId() == cid && pids[rt.GetProcess().GetPid()] && (best == nil || rt.GetTime().AsTime().After(best.GetTime().AsTime())) {
			best = rt
		}
	}
	return best, nil
}

// debugEvent is the K8S_DEBUG that added f's container, or nil.
func (l *Linker) debugEvent(ctx context.Context, f *loupev1.Finding) (*loupev1.Finding, error) {
	c := f.GetContainer()
	if c.GetNamespace() == "" || c.GetPod() == "" || c.GetName() == "" {
		return nil, nil
	}
	t := f.GetTime().AsTime()
	evs, err := l.events(ctx, loupev1.Kind_KIND_K8S_DEBUG, c, t.Add(-DebugWindow), t.Add(Window))
	if err != nil {
		return nil, err
	}
	var best *loupev1.Finding
	for _, ev := range evs {
		if ev.GetContainer().GetName() == c.GetName() && ev.GetAudit().GetResponseCode() < 400 &&
			(best == nil || ev.GetTime().AsTime().After(best.GetTime().AsTime())) {
			best = ev
		}
	}
	return best, nil
}

// Caused returns the node findings audit event ev caused, oldest first.
func (l *Linker) Caused(ctx context.Context, ev *loupev1.Finding) ([]*loupev1.Finding, error) {
	c := ev.GetContainer()
	if c.GetNamespace() == "" || c.GetPod() == "" || ev.GetAudit().GetResponseCode() >= 400 {
		return nil, nil
	}
	t := ev.GetTime().AsTime()
	var out []*loupev1.Finding
	switch ev.GetKind() {
	case loupev1.Kind_KIND_K8S_EXEC:
		rts, err := l.query(ctx, &loupev1.QueryRequest{Namespace: c.GetNamespace(), Pod: c.GetPod(), Kinds: runtimeKinds,
			Since: ts(t.Add(-Window)), Until: ts(t.Add(Window))})
		if err != nil {
			return nil, err
		}
		for _, rt := range rts {
			if !sameContainer(ev, rt) {
				continue
			}
			// Only the runtime execs whose nearest audit event is ev: both
			// directions of a link agree.
			if back, err := l.execEvent(ctx, rt); err != nil {
				return nil, err
			} else if back.GetId() != ev.GetId() {
				continue
			}
			out = append(out, rt)
			if rt.GetKind() != loupev1.Kind_KIND_RUNTIME_EXEC || rt.GetProcess().GetPid() <= 0 {
				continue
			}
			rtT := rt.GetTime().AsTime()
			ps, err := l.query(ctx, &loupev1.QueryRequest{ContainerId: rt.GetContainer().GetId(), Kinds: processKinds,
				Since: ts(rtT.Add(-Window)), Until: ts(rtT.Add(ChildWindow))})
			if err != nil {
				return nil, err
			}
			for _, p := range ps {
				if back, err := l.startedBy(ctx, p); err != nil {
					return nil, err
				} else if back.GetId() == rt.GetId() {
					out = append(out, p)
				}
			}
		}
	case loupev1.Kind_KIND_K8S_DEBUG:
		if c.GetName() == "" {
			return nil, nil
		}
		ps, err := l.query(ctx, &loupev1.QueryRequest{Namespace: c.GetNamespace(), Pod: c.GetPod(), Kinds: processKinds,
			Since: ts(t.Add(-Window)), Until: ts(t.Add(DebugWindow))})
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			if p.GetContainer().GetName() != c.GetName() {
				continue
			}
			if back, err := l.debugEvent(ctx, p); err != nil {
				return nil, err
			} else if back.GetId() == ev.GetId() {
				out = append(out, p)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].GetTime().AsTime().Before(out[j].GetTime().AsTime()) })
	return out, nil
}

// query runs q (oldest first unless q asks newest first; at most
// maxCandidates) over its time range widened to whole buckets, memoised,
// and returns the findings inside q's own range.
func (l *Linker) query(ctx context.Context, q *loupev1.QueryRequest) ([]*loupev1.Finding, error) {
	since, until := q.GetSince().AsTime(), q.GetUntil().AsTime()
	q.Since, q.Until = ts(since.Truncate(bucket)), ts(until.Truncate(bucket).Add(bucket))
	if q.Order != loupev1.Order_ORDER_NEWEST_FIRST {
		q.Order = loupev1.Order_ORDER_OLDEST_FIRST
	}
	q.Limit = maxCandidates
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(q)
	if err != nil {
		return nil, err
	}
	key := string(b)
	fs, ok := l.queries[key]
	if !ok {
		if err := l.st.Query(ctx, q, func(f *loupev1.Finding) error { fs = append(fs, f); return nil }); err != nil {
			return nil, err
		}
		if len(l.queries) >= maxMemo {
			clear(l.queries)
		}
		l.queries[key] = fs
	}
	var out []*loupev1.Finding
	for _, f := range fs {
		if t := f.GetTime().AsTime(); !t.Before(since) && t.Before(until) {
			out = append(out, f)
		}
	}
	return out, nil
}

// sameContainer: the audit event names the node finding's container, or
// names none (a one-container pod).
func sameContainer(ev, f *loupev1.Finding) bool {
	n := ev.GetContainer().GetName()
	return n == "" || n == f.GetContainer().GetName()
}

func dist(f *loupev1.Finding, t time.Time) time.Duration {
	d := f.GetTime().AsTime().Sub(t)
	if d < 0 {
		return -d
	}
	return d
}

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

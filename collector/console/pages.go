package console

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-dev/loupe/agent/compliance"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/correlate"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/internal/filter"
)

// collect runs q and returns its findings.
func (c *Console) collect(ctx context.Context, q *loupev1.QueryRequest) ([]*loupev1.Finding, error) {
	if err := store.CheckQuery(q); err != nil {
		return nil, err
	}
	var out []*loupev1.Finding
	err := correlate.Query(ctx, c.cfg.Store, q, func(f *loupev1.Finding) error { out = append(out, f); return nil })
	return out, err
}

// readFilter reads the search of a URL, with def for absent parameters.
func readFilter(r *http.Request, def filter.Filter, maxLimit uint32, now time.Time) (filter.Filter, *loupev1.QueryRequest, error) {
	f, err := filter.FromValues(r.URL.Query(), def)
	if err != nil {
		return f, nil, badRequest("%v", err)
	}
	if f.Limit > maxLimit {
		return f, nil, badRequest("--limit %d is above this page's maximum %d (the JSONL download goes up to %d)", f.Limit, maxLimit, store.MaxLimit)
	}
	req, err := f.Request(now)
	if err != nil {
		return f, nil, badRequest("%v", err)
	}
	if err := store.CheckQuery(req); err != nil {
		return f, nil, badRequest("%v", err)
	}
	return f, req, nil
}

// overview: nodes, findings of the last 24 h by hour/kind/severity, the newest high-severity findings.
func (c *Console) overview(w http.ResponseWriter, r *http.Request) error {
	ctx, now := r.Context(), c.cfg.Now()
	nodes, err := c.cfg.Nodes(ctx)
	if err != nil {
		return err
	}
	start := now.Add(-23 * time.Hour).Truncate(time.Hour)
	counts, err := c.cfg.Store.Counts(ctx, start, start.Add(24*time.Hour))
	if err != nil {
		return err
	}
	high, err := c.collect(ctx, &loupev1.QueryRequest{Since: timestamppb.New(now.Add(-24 * time.Hour)), MinSeverity: loupev1.Severity_SEVERITY_HIGH,
		Limit: 20, Order: loupev1.Order_ORDER_NEWEST_FIRST})
	if err != nil {
		return err
	}
	connected := 0
	for _, n := range nodes {
		if n.GetConnected() {
			connected++
		}
	}
	return c.render(w, r, "overview", http.StatusOK, map[string]any{
		"Title": "Fleet overview", "Now": now, "Nodes": nodes, "Connected": connected,
		"Chart": newChart(counts, start, 24), "ByKind": byKind(counts), "High": high,
	})
}

// kindRow is one line of the overview's table of counts.
type kindRow struct {
	Kind  loupev1.Kind
	BySev [6]int64 // index: severity
	Total int64
}

func byKind(counts []store.Count) []kindRow {
	m := map[loupev1.Kind]*kindRow{}
	for _, c := range counts {
		r := m[c.Kind]
		if r == nil {
			r = &kindRow{Kind: c.Kind}
			m[c.Kind] = r
		}
		if c.Severity >= 0 && int(c.Severity) < len(r.BySev) {
			r.BySev[c.Severity] += c.N
		}
		r.Total += c.N
	}
	out := make([]kindRow, 0, len(m))
	for _, r := range m {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Total != out[j].Total {
			return out[i].Total > out[j].Total
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}

// search: every filter of `loupe query` as a form; results as a table.
func (c *Console) search(w http.ResponseWriter, r *http.Request) error {
	now := c.cfg.Now()
	f, req, err := readFilter(r, filter.Filter{Since: "24h", Limit: PageLimit}, MaxPageLimit, now)
	if err != nil {
		return err
	}
	out, err := c.collect(r.Context(), req)
	if err != nil {
		return err
	}
	selected := map[string]bool{}
	for _, k := range req.GetKinds() {
		selected[k.ShortName()] = true
	}
	dl := f
	dl.Limit = 0
	q := dl.Values().Encode()
	return c.render(w, r, "search", http.StatusOK, map[string]any{
		"Title": "Search", "Now": now, "F": f, "Kinds": loupev1.KindNames(), "Selected": selected,
		"Severities": []string{"info", "low", "medium", "high", "critical"},
		"Nodes":      strings.Join(f.Nodes, ","), "Results": out, "Full": len(out) == int(f.Limit),
		"JSONL": "/search.jsonl?" + q, "JSON": "/search.json?" + q,
	})
}

// download streams the result of a search as JSONL or a JSON array, with the
// proto field names of `loupe query -o jsonl`, up to store.MaxLimit findings.
func (c *Console) download(w http.ResponseWriter, r *http.Request) error {
	_, req, err := readFilter(r, filter.Filter{Since: "24h", Limit: store.DefaultLimit}, store.MaxLimit, c.cfg.Now())
	if err != nil {
		return err
	}
	jsonl := strings.HasSuffix(r.URL.Path, ".jsonl")
	name := "loupe-findings.json"
	w.Header().Set("Content-Type", "application/json")
	if jsonl {
		name = "loupe-findings.jsonl"
		w.Header().Set("Content-Type", "application/jsonl")
	}
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	bw := bufio.NewWriterSize(w, 64<<10)
	opts := protojson.MarshalOptions{UseProtoNames: true}
	n := 0
	err = correlate.Query(r.Context(), c.cfg.Store, req, func(f *loupev1.Finding) error {
		b, err := opts.Marshal(f)
		if err != nil {
			return err
		}
		switch {
		case jsonl:
		case n == 0:
			bw.WriteString("[\n")
		default:
			bw.WriteString(",\n")
		}
		n++
		bw.Write(b)
		_, err = bw.WriteString("\n")
		return err
	})
	if err != nil {
		if n == 0 {
			return err
		}
		// Part of the body is out: cut the connection so the client sees an
		// incomplete transfer instead of a short file that looks whole.
		c.log.Warn("console download failed midway", "err", err, "sent", n)
		panic(http.ErrAbortHandler)
	}
	if !jsonl {
		if n == 0 {
			bw.WriteString("[")
		}
		bw.WriteString("]\n")
	}
	return bw.Flush()
}

// maxIDLen bounds a finding id in a URL.
const maxIDLen = 128

// Timing of the process tree's descendants: findings of the same container
// this long after the exec, at most this many.
const (
	descendantWindow = 10 * time.Minute
	maxDescendants   = 500
)

// treeNode is one process of a finding's tree.
type treeNode struct {
	PID      int32
	Comm     string
	Filename string
	Argv     []string
	Link     string // finding of this process, when known
	Kind     loupev1.Kind
	Self     bool
	Failed   bool
	Children []*treeNode
}

// finding: every field, the process tree, links to related findings.
func (c *Console) finding(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if id == "" || len(id) > maxIDLen {
		return badRequest("a finding id is 1 to %d characters", maxIDLen)
	}
	f, err := c.cfg.Store.Get(r.Context(), id)
	if err != nil {
		return err
	}
	if err := correlate.New(c.cfg.Store).Annotate(r.Context(), []*loupev1.Finding{f}); err != nil {
		return err
	}
	tree, err := c.processTree(r.Context(), f)
	if err != nil {
		return err
	}
	raw, _ := protojson.MarshalOptions{UseProtoNames: true, Multiline: true, Indent: "  "}.Marshal(f)
	keys := make([]string, 0, len(f.GetDetails()))
	for k := range f.GetDetails() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return c.render(w, r, "finding", http.StatusOK, map[string]any{
		"Title": "Finding " + f.GetId(), "Now": c.cfg.Now(), "F": f, "Tree": tree, "Raw": string(raw), "DetailKeys": keys,
	})
}

// processTree is the chain of f's ancestors (root first) down to f's
// process, under which hang the execs of the same container that descend
// from it within descendantWindow (a shell and what it ran).
func (c *Console) processTree(ctx context.Context, f *loupev1.Finding) (*treeNode, error) {
	p := f.GetProcess()
	if p == nil {
		return nil, nil
	}
	self := &treeNode{PID: p.GetPid(), Comm: p.GetComm(), Filename: p.GetFilename(), Argv: p.GetArgv(), Self: true,
		Kind: f.GetKind(), Failed: p.GetErrno() != 0}
	root := self
	for _, a := range p.GetAncestors() { // nearest first
		root = &treeNode{PID: a.GetPid(), Comm: a.GetComm(), Filename: a.GetFilename(), Children: []*treeNode{root}}
	}
	if cid := f.GetContainer().GetId(); cid != "" && p.GetPid() > 0 && len(cid) >= store.MinContainerPrefix {
		t := f.GetTime().AsTime()
		later, err := c.collect(ctx, &loupev1.QueryRequest{ContainerId: cid, Since: timestamppb.New(t), Until: timestamppb.New(t.Add(descendantWindow)),
			Kinds: []loupev1.Kind{loupev1.Kind_KIND_EXEC, loupev1.Kind_KIND_SHELL_EXEC, loupev1.Kind_KIND_EXEC_FAILED, loupev1.Kind_KIND_DRIFT_EXEC},
			Limit: maxDescendants, Order: loupev1.Order_ORDER_OLDEST_FIRST})
		if err != nil {
			return nil, err
		}
		byPID := map[int32]*treeNode{p.GetPid(): self}
		for _, d := range later {
			dp := d.GetProcess()
			if d.GetId() == f.GetId() || dp == nil || dp.GetPid() == 0 {
				continue
			}
			// The nearest ancestor already in the tree adopts it: only
			// processes that descend from f's process are shown.
			var parent *treeNode
			if dp.GetPid() == p.GetPid() { // the same process exec'd again (sh -c "exec …")
				parent = byPID[dp.GetPid()]
			} else {
				for _, a := range append([]*loupev1.Ancestor{{Pid: dp.GetPpid()}}, dp.GetAncestors()...) {
					if n := byPID[a.GetPid()]; n != nil {
						parent = n
						break
					}
				}
			}
			if parent == nil {
				continue
			}
			n := &treeNode{PID: dp.GetPid(), Comm: dp.GetComm(), Filename: dp.GetFilename(), Argv: dp.GetArgv(),
				Link: "/finding/" + url.PathEscape(d.GetId()), Kind: d.GetKind(), Failed: dp.GetErrno() != 0}
			parent.Children = append(parent.Children, n)
			if dp.GetErrno() == 0 {
				byPID[dp.GetPid()] = n
			}
		}
	}
	return root, nil
}

// timelineKinds are what a pod's timeline shows by default: execs of every
// sort, drift, compliance changes, captures and the container's profile
// (when it was inspected). Inventory and static findings stay on the image page.
var timelineKinds = []loupev1.Kind{
	loupev1.Kind_KIND_SHELL_EXEC, loupev1.Kind_KIND_EXEC_FAILED, loupev1.Kind_KIND_RUNTIME_EXEC, loupev1.Kind_KIND_RUNTIME_EXEC_FAILED,
	loupev1.Kind_KIND_DRIFT_EXEC, loupev1.Kind_KIND_DRIFT_FILE, loupev1.Kind_KIND_EXEC, loupev1.Kind_KIND_CONTROL_RESULT,
	loupev1.Kind_KIND_CAPTURE, loupev1.Kind_KIND_IMAGE_PROFILE,
}

// Timeline bounds: at most this many findings; a quiet stretch longer than
// the gap (default, or ?gap=) is shown as a gap.
const (
	timelineLimit = 5000
	defaultGap    = time.Hour
)

// tlEntry is one line of a timeline: a finding, a control change, a
// compliance summary, a gap or a change of the agent's connection state.
type tlEntry struct {
	Time     time.Time
	F        *loupev1.Finding
	Gap      time.Duration
	Agent    string // the agent's state: "first report", "silent since"
	Silence  bool   // Agent says the agent stopped reporting here
	Node     string
	Change   string // "passed → failed"
	Controls *controlSummary
}

type controlSummary struct {
	Profile                        string
	Passed, Failed, Skipped, Error int
}

// timeline: one pod's (or container's) events in time order.
func (c *Console) timeline(w http.ResponseWriter, r *http.Request) error {
	now := c.cfg.Now()
	q := r.URL.Query()
	def := filter.Filter{Since: "24h", Limit: timelineLimit, OldestFirst: true}
	for _, k := range timelineKinds {
		def.Kinds = append(def.Kinds, strings.ToLower(k.ShortName()))
	}
	f, req, err := readFilter(r, def, timelineLimit, now)
	if err != nil {
		return err
	}
	if f.Pod == "" && f.Container == "" {
		return badRequest("a timeline is of one pod (namespace and pod) or one container (container)")
	}
	gap := defaultGap
	if g := q.Get("gap"); g != "" {
		if gap, err = filter.ParseDuration(g); err != nil || gap < time.Minute {
			return badRequest("gap %q: want a duration of at least 1m, e.g. 30m or 6h", g)
		}
	}
	req.Order = loupev1.Order_ORDER_OLDEST_FIRST
	fs, err := c.collect(r.Context(), req)
	if err != nil {
		return err
	}
	nodes, err := c.cfg.Nodes(r.Context())
	if err != nil {
		return err
	}
	byName := map[string]*loupev1.Node{}
	for _, n := range nodes {
		byName[n.GetName()] = n
	}
	var since time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	}
	until := now
	if req.GetUntil() != nil && req.GetUntil().AsTime().Before(now) {
		until = req.GetUntil().AsTime()
	}
	entries, involved := buildTimeline(fs, byName, since, now, gap)
	var silences map[string]int
	if len(involved) > 0 && until.After(since) {
		names := make([]string, len(involved))
		for i, n := range involved {
			names[i] = n.GetName()
		}
		sessions, err := c.cfg.Store.Sessions(r.Context(), names, since, until)
		if err != nil {
			return err
		}
		var agent []tlEntry
		agent, silences = silenceEntries(sessions)
		entries = mergeEntries(entries, agent)
	}
	return c.render(w, r, "timeline", http.StatusOK, map[string]any{
		"Title": "Timeline " + f.Namespace + "/" + f.Pod + f.Container, "Now": now, "F": f, "Entries": entries, "Nodes": involved,
		"Silences": silences,
		"Full":     len(fs) == timelineLimit, "Gap": gap.String(), "Count": len(fs),
		"Search": "/search?" + f.Values().Encode(),
	})
}

// buildTimeline turns oldest-first findings into timeline entries.
func buildTimeline(fs []*loupev1.Finding, nodes map[string]*loupev1.Node, since, now time.Time, gap time.Duration) ([]tlEntry, []*loupev1.Node) {
	var (
		out      []tlEntry
		status   = map[string]string{} // container/profile/control → last status
		summary  *tlEntry              // the compliance summary being filled
		involved []*loupev1.Node
		seen     = map[string]bool{}
	)
	for _, f := range fs {
		if n := f.GetNode(); !seen[n] {
			seen[n] = true
			if node := nodes[n]; node != nil {
				involved = append(involved, node)
			} else {
				involved = append(involved, &loupev1.Node{Name: n})
			}
		}
		t := f.GetTime().AsTime()
		if ctl := f.GetControl(); f.GetKind() == loupev1.Kind_KIND_CONTROL_RESULT && ctl != nil {
			key := f.GetContainer().GetId() + "\x00" + ctl.GetProfile() + "\x00" + ctl.GetId()
			prev, known := status[key]
			status[key] = ctl.GetStatus()
			switch {
			case !known: // the first evaluation: summed up, not listed control by control
				if summary == nil || summary.Controls.Profile != ctl.GetProfile() || t.Sub(summary.Time) > time.Minute {
					out = append(out, tlEntry{Time: t, F: f, Node: f.GetNode(), Controls: &controlSummary{Profile: ctl.GetProfile()}})
					summary = &out[len(out)-1]
				}
				switch ctl.GetStatus() {
				case "passed":
					summary.Controls.Passed++
				case "failed":
					summary.Controls.Failed++
				case "skipped":
					summary.Controls.Skipped++
				default:
					summary.Controls.Error++
				}
			case prev != ctl.GetStatus():
				out = append(out, tlEntry{Time: t, F: f, Node: f.GetNode(), Change: prev + " → " + ctl.GetStatus()})
			}
			continue
		}
		summary = nil
		out = append(out, tlEntry{Time: t, F: f, Node: f.GetNode()})
	}
	// The agents' state: when each started reporting and whether it still does.
	for _, n := range involved {
		if fs := n.GetFirstSeen(); fs != nil && fs.AsTime().After(since) {
			out = append(out, tlEntry{Time: fs.AsTime(), Agent: "first report from the agent: nothing earlier is known", Node: n.GetName()})
		}
		if ls := n.GetLastSeen(); ls != nil && !n.GetConnected() {
			out = append(out, tlEntry{Time: ls.AsTime(), Agent: "last report from the agent (not connected now): nothing later is known", Node: n.GetName()})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	// Quiet stretches.
	var withGaps []tlEntry
	for i, e := range out {
		if i > 0 {
			if d := e.Time.Sub(out[i-1].Time); d >= gap {
				withGaps = append(withGaps, tlEntry{Time: out[i-1].Time, Gap: d.Round(time.Minute)})
			}
		}
		withGaps = append(withGaps, e)
	}
	if len(out) > 0 {
		if d := now.Sub(out[len(out)-1].Time); d >= gap {
			withGaps = append(withGaps, tlEntry{Time: out[len(out)-1].Time, Gap: d.Round(time.Minute)})
		}
	}
	return withGaps, involved
}

// silenceEntries are the timeline lines of the agents' silences between
// their sessions (store.Sessions): when each stopped reporting and when it
// reported again, and the count of silences per node.
func silenceEntries(sessions []store.Session) ([]tlEntry, map[string]int) {
	var out []tlEntry
	count := map[string]int{}
	for i := 1; i < len(sessions); i++ {
		prev, cur := sessions[i-1], sessions[i]
		if prev.Node != cur.Node {
			continue
		}
		d := cur.Start.Sub(prev.End).Round(time.Second)
		count[cur.Node]++
		out = append(out,
			tlEntry{Time: prev.End, Node: cur.Node, Silence: true,
				Agent: fmt.Sprintf("agent silent for %s (no report until %s): nothing in this stretch is known", d, cur.Start.UTC().Format("15:04:05Z"))},
			tlEntry{Time: cur.Start, Node: cur.Node, Agent: fmt.Sprintf("agent reporting again after %s of silence", d)})
	}
	return out, count
}

// mergeEntries inserts agent lines into timeline entries, by time (stable:
// at equal times the timeline's own line comes first).
func mergeEntries(entries, agent []tlEntry) []tlEntry {
	out := make([]tlEntry, 0, len(entries)+len(agent))
	i, j := 0, 0
	for i < len(entries) || j < len(agent) {
		if j == len(agent) || (i < len(entries) && !agent[j].Time.Before(entries[i].Time)) {
			out = append(out, entries[i])
			i++
		} else {
			out = append(out, agent[j])
			j++
		}
	}
	return out
}

// imageRow is one image of the images page.
type imageRow struct {
	Digest     string
	Refs       []string
	Profile    string
	OS         string
	Containers map[string]bool
	Nodes      map[string]bool
	LastSeen   time.Time
	Ref        *loupev1.ContainerRef
}

// Images: at most this many image profiles are read for the list.
const maxImageProfiles = 20000

// images: every image seen (an IMAGE_PROFILE per inspected container).
func (c *Console) images(w http.ResponseWriter, r *http.Request) error {
	now := c.cfg.Now()
	f, req, err := readFilter(r, filter.Filter{Since: "7d"}, maxImageProfiles, now)
	if err != nil {
		return err
	}
	req.Kinds, req.Limit = []loupev1.Kind{loupev1.Kind_KIND_IMAGE_PROFILE}, maxImageProfiles
	fs, err := c.collect(r.Context(), req)
	if err != nil {
		return err
	}
	m := map[string]*imageRow{}
	var order []*imageRow
	for _, f := range fs {
		ct := f.GetContainer()
		key := ct.GetImageDigest()
		if key == "" {
			key = ct.GetImage()
		}
		row := m[key]
		if row == nil {
			row = &imageRow{Digest: ct.GetImageDigest(), Containers: map[string]bool{}, Nodes: map[string]bool{}, Ref: ct,
				Profile: f.GetDetails()["profile"], OS: strings.TrimSpace(f.GetDetails()["os_id"] + " " + f.GetDetails()["os_version"])}
			m[key] = row
			order = append(order, row)
		}
		if ref := ct.GetImage(); ref != "" && !slices.Contains(row.Refs, ref) && len(row.Refs) < 10 {
			row.Refs = append(row.Refs, ref)
		}
		row.Containers[ct.GetId()] = true
		row.Nodes[f.GetNode()] = true
		if t := f.GetTime().AsTime(); t.After(row.LastSeen) {
			row.LastSeen = t
		}
	}
	return c.render(w, r, "images", http.StatusOK, map[string]any{"Title": "Images", "Now": now, "F": f, "Images": order,
		"Full": len(fs) == maxImageProfiles})
}

// imageFindings are the findings of one image: its reference (exact) and,
// when given, its digest.
func (c *Console) imageFindings(r *http.Request, kinds ...loupev1.Kind) (string, string, []*loupev1.Finding, error) {
	q := r.URL.Query()
	ref, digest := q.Get("ref"), q.Get("digest")
	if ref == "" || len(ref) > store.MaxFilterLen || len(digest) > store.MaxFilterLen {
		return "", "", nil, badRequest("an image is named by ref (its reference) and optionally digest")
	}
	fs, err := c.collect(r.Context(), &loupev1.QueryRequest{Image: strings.ReplaceAll(ref, "*", "?"), Kinds: kinds,
		Limit: store.MaxLimit, Order: loupev1.Order_ORDER_NEWEST_FIRST})
	if err != nil {
		return "", "", nil, err
	}
	out := fs[:0]
	for _, f := range fs {
		if f.GetContainer().GetImage() == ref && (digest == "" || f.GetContainer().GetImageDigest() == digest) {
			out = append(out, f)
		}
	}
	return ref, digest, out, nil
}

// controlRow is one control of an image, over the containers that ran it.
type controlRow struct {
	Profile, ID, Title, Message    string
	Impact                         float64
	Passed, Failed, Skipped, Error int
}

// image: one image's inventory, compliance results and containers.
func (c *Console) image(w http.ResponseWriter, r *http.Request) error {
	ref, digest, fs, err := c.imageFindings(r, loupev1.Kind_KIND_PACKAGE, loupev1.Kind_KIND_CONTROL_RESULT, loupev1.Kind_KIND_IMAGE_PROFILE)
	if err != nil {
		return err
	}
	type pkgKey struct{ eco, name, version, path string }
	var (
		pkgs       []*loupev1.Package
		seenPkg    = map[pkgKey]bool{}
		latest     = map[string]*loupev1.Finding{} // container/profile/control → newest result
		containers []*loupev1.Finding              // one finding per container, newest first
		seenCtr    = map[string]bool{}
		profile    *loupev1.Finding
	)
	for _, f := range fs { // newest first
		if id := f.GetContainer().GetId(); !seenCtr[id] {
			seenCtr[id] = true
			containers = append(containers, f)
		}
		switch f.GetKind() {
		case loupev1.Kind_KIND_PACKAGE:
			p := f.GetPackage()
			k := pkgKey{p.GetEcosystem(), p.GetName(), p.GetVersion(), p.GetPath()}
			if !seenPkg[k] {
				seenPkg[k] = true
				pkgs = append(pkgs, p)
			}
		case loupev1.Kind_KIND_CONTROL_RESULT:
			ctl := f.GetControl()
			k := f.GetContainer().GetId() + "\x00" + ctl.GetProfile() + "\x00" + ctl.GetId()
			if latest[k] == nil {
				latest[k] = f
			}
		case loupev1.Kind_KIND_IMAGE_PROFILE:
			if profile == nil {
				profile = f
			}
		}
	}
	sort.Slice(pkgs, func(i, j int) bool {
		if pkgs[i].GetEcosystem() != pkgs[j].GetEcosystem() {
			return pkgs[i].GetEcosystem() < pkgs[j].GetEcosystem()
		}
		return pkgs[i].GetName() < pkgs[j].GetName()
	})
	rows := map[string]*controlRow{}
	for _, f := range latest {
		ctl := f.GetControl()
		k := ctl.GetProfile() + "\x00" + ctl.GetId()
		row := rows[k]
		if row == nil {
			row = &controlRow{Profile: ctl.GetProfile(), ID: ctl.GetId(), Title: ctl.GetTitle(), Impact: ctl.GetImpact()}
			rows[k] = row
		}
		switch ctl.GetStatus() {
		case "passed":
			row.Passed++
		case "failed":
			row.Failed++
			row.Message = ctl.GetMessage()
		case "skipped":
			row.Skipped++
		default:
			row.Error++
			row.Message = ctl.GetMessage()
		}
	}
	controls := make([]*controlRow, 0, len(rows))
	for _, row := range rows {
		controls = append(controls, row)
	}
	sort.Slice(controls, func(i, j int) bool {
		a, b := controls[i], controls[j]
		if (a.Failed+a.Error > 0) != (b.Failed+b.Error > 0) {
			return a.Failed+a.Error > 0
		}
		if a.Profile != b.Profile {
			return a.Profile < b.Profile
		}
		return a.ID < b.ID
	})
	v := url.Values{"ref": {ref}}
	if digest != "" {
		v.Set("digest", digest)
	}
	return c.render(w, r, "image", http.StatusOK, map[string]any{
		"Title": "Image " + ref, "Now": c.cfg.Now(), "Ref": ref, "Digest": digest, "Packages": pkgs, "Controls": controls,
		"Containers": containers, "Profile": profile, "HDF": "/image/hdf.json?" + v.Encode(), "Full": len(fs) == store.MaxLimit,
		"Search": searchURL("since", "", "image", ref),
	})
}

// imageHDF: the image's compliance results as HDF, as `loupe report hdf` writes them.
func (c *Console) imageHDF(w http.ResponseWriter, r *http.Request) error {
	_, _, fs, err := c.imageFindings(r, loupev1.Kind_KIND_CONTROL_RESULT)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", `attachment; filename="loupe-image.hdf.json"`)
	return compliance.WriteHDF(w, compliance.RunsFromFindings(fs))
}

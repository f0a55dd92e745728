package grafana

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/loupe-dev/loupe/internal/testenv"
)

type target struct {
	RefID string `json:"refId"`
	Expr  string `json:"expr"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource json.RawMessage          `json:"datasource"`
	GridPos    struct{ X, Y, W, H int } `json:"gridPos"`
	Targets    []target                 `json:"targets"`
}

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
		} `json:"list"`
	} `json:"templating"`
}

func load(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("loupe-fleet.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	return d
}

// exprs returns every query with Grafana's variables replaced by values, so
// that the result is plain PromQL.
func exprs(d dashboard) map[string]string {
	r := strings.NewReplacer("$__rate_interval", "5m", "$node", ".*", "$agent_job", ".*loupe-agent.*")
	out := map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out[fmt.Sprintf("%s/%s", p.Title, tg.RefID)] = r.Replace(tg.Expr)
		}
	}
	return out
}

func TestDashboardStructure(t *testing.T) {
	d := load(t)
	if d.UID == "" || d.Title == "" {
		t.Fatal("uid and title are required")
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("duplicate panel id %d", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 || len(p.Datasource) == 0 {
			t.Errorf("panel %q has no query or no data source", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			for _, m := range regexp.MustCompile(`\$([a-z_]+)`).FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[m[1]] && !strings.HasPrefix(m[1], "__") {
					t.Errorf("panel %q uses undefined variable $%s", p.Title, m[1])
				}
			}
		}
	}
	// What the issue asks the dashboard to show.
	want := []string{"loupe_agent_findings_total", "loupe_agent_ready", "loupe_agent_bpf_events_lost_total",
		"loupe_agent_scan_duration_seconds", "loupe_agent_spool_findings", "loupe_collector_findings_ingested_total"}
	used := metricNames(exprs(d))
	for _, m := range want {
		if !used[m] {
			t.Errorf("dashboard does not show %s", m)
		}
	}
	if queries < 20 {
		t.Errorf("only %d queries", queries)
	}
}

var metricRE = regexp.MustCompile(`\bloupe_[a-z_]+`)

func metricNames(exprs map[string]string) map[string]bool {
	out := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricRE.FindAllString(e, -1) {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if strings.HasSuffix(m, "_seconds"+suf) {
					m = strings.TrimSuffix(m, suf)
				}
			}
			out[m] = true
		}
	}
	return out
}

// TestMetricsDocumented: every loupe_ metric used by the dashboard or the
// alert rules is in docs/metrics.md (whose completeness against the real
// binaries is checked by deploy/oci's test).
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile("../prometheus/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	used := metricNames(exprs(load(t)))
	for m := range metricNames(map[string]string{"rules": string(rules)}) {
		used[m] = true
	}
	for m := range used {
		if !strings.Contains(string(doc), "`"+m+"`") {
			t.Errorf("%s is used but not documented in docs/metrics.md", m)
		}
	}
}

// TestQueriesArePromQL has promtool parse every query, as recording rules.
func TestQueriesArePromQL(t *testing.T) {
	promtool := testenv.RequireCommand(t, "promtool")
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	ex := exprs(load(t))
	keys := make([]string, 0, len(ex))
	for k := range ex {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var rs []rule
	for i, k := range keys {
		rs = append(rs, rule{Record: fmt.Sprintf("dashboard:query%d", i), Expr: ex[k]})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rs}}})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", p).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules (dashboard queries): %v\n%s", err, out)
	}
}

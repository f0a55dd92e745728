package filter

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

func TestValuesRoundTrip(t *testing.T) {
	def := Filter{Since: "24h"} // a zero limit means "the default", so a default limit would not round-trip
	for _, f := range []Filter{
		{},
		{Since: "7d", Kinds: []string{"shell_exec", "exec_failed"}, Nodes: []string{"n1", "n2"}, Severity: "high",
			Namespace: "payments", Pod: "api-*", Container: "abcd", Image: "reg/x:*", Sha256: "ab", Grep: `"><img src=x>`,
			Limit: 5, OldestFirst: true, Until: "2026-01-02T15:04:05Z"},
	} {
		got, err := FromValues(f.Values(), def)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, f) {
			t.Errorf("round trip of %+v gave %+v (query %s)", f, got, f.Values().Encode())
		}
	}
}

func TestFromValuesDefaultsAndErrors(t *testing.T) {
	def := Filter{Since: "24h", Limit: 100}
	got, err := FromValues(url.Values{"pod": {" web "}, "other": {"x"}}, def)
	if err != nil || got.Since != "24h" || got.Limit != 100 || got.Pod != "web" {
		t.Fatalf("defaults not kept: %+v %v", got, err)
	}
	for q, want := range map[string]string{
		"limit=abc":         "--limit",
		"oldest-first=mebe": "--oldest-first",
		"kind=" + strings.Repeat("&kind=x", MaxValues): "at most",
	} {
		v, _ := url.ParseQuery(q)
		if _, err := FromValues(v, def); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one naming %q", q, err, want)
		}
	}
}

func TestRequest(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	req, err := Filter{Since: "2d", Kinds: []string{"shell_exec", "KIND_EXEC_FAILED"}, Severity: "high", Sha256: "ABCD", OldestFirst: true}.Request(now)
	if err != nil {
		t.Fatal(err)
	}
	if got := req.GetSince().AsTime(); !got.Equal(now.Add(-48 * time.Hour)) {
		t.Errorf("since %v", got)
	}
	if len(req.Kinds) != 2 || req.Kinds[0] != loupev1.Kind_KIND_SHELL_EXEC || req.Kinds[1] != loupev1.Kind_KIND_EXEC_FAILED {
		t.Errorf("kinds %v", req.Kinds)
	}
	if req.MinSeverity != loupev1.Severity_SEVERITY_HIGH || req.Order != loupev1.Order_ORDER_OLDEST_FIRST || req.Sha256 != "abcd" {
		t.Errorf("request %v", req)
	}
	for f, want := range map[*Filter]string{
		{Since: "yesterday"}:      "--since",
		{Until: "-5m"}:            "--until",
		{Kinds: []string{"nope"}}: "--kind",
		{Severity: "dire"}:        "--severity",
	} {
		if _, err := f.Request(now); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: error %v, want one naming %s", *f, err, want)
		}
	}
}

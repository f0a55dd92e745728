package store

import (
	"slices"
	"strings"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// Match reports whether f satisfies every filter of q the way the stores'
// Query does (limit and order aside), for findings the collector assembles
// itself (the node findings linked to a user's audit events). q must have
// passed CheckQuery.
func Match(q *loupev1.QueryRequest, f *loupev1.Finding) bool {
	t := f.GetTime().AsTime()
	if s := q.GetSince(); s != nil && t.Before(s.AsTime()) {
		return false
	}
	if u := q.GetUntil(); u != nil && !t.Before(u.AsTime()) {
		return false
	}
	if ks := q.GetKinds(); len(ks) > 0 && !slices.Contains(ks, f.GetKind()) {
		return false
	}
	if f.GetSeverity() < q.GetMinSeverity() {
		return false
	}
	if ns := q.GetNodes(); len(ns) > 0 && !slices.Contains(ns, f.GetNode()) {
		return false
	}
	c := f.GetContainer()
	if v := q.GetNamespace(); v != "" && c.GetNamespace() != v {
		return false
	}
	if v := q.GetPod(); v != "" && !starMatch(v, c.GetPod()) {
		return false
	}
	if v := q.GetContainerId(); v != "" && !strings.HasPrefix(c.GetId(), v) {
		return false
	}
	if v := q.GetImage(); v != "" && !starMatch(v, c.GetImage()) {
		return false
	}
	if v := q.GetSha256(); v != "" && (f.GetFile().GetSha256() == "" ||
		strings.ToLower(f.GetFile().GetSha256()) != strings.ToLower(strings.TrimPrefix(v, "sha256:"))) {
		return false
	}
	if v := q.GetGrep(); v != "" && !strings.Contains(SearchText(f), strings.ToLower(v)) {
		return false
	}
	if v := q.GetUser(); v != "" && (f.GetK8SUser() == "" || !starMatch(v, f.GetK8SUser())) {
		return false
	}
	return true
}

// starMatch matches the stores' patterns: '*' is any run of characters,
// every other character (also '?' and '[') is literal.
func starMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

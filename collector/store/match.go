package store

import (
	"slices"
	"strings"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/glob"
)

// Match reports whether f satisfies every filter of q the way the stores'
// Query does (limit and order aside), for findings the collector assembles
// itself (the node findings linked to a user's audit events). q must have
// passed CheckQuery. Pod, image and user patterns use internal/glob, whose
// '?' the stores take literally; none of those names can hold a '?'.
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
	if v := q.GetPod(); v != "" && !glob.Match(v, c.GetPod()) {
		return false
	}
	if v := q.GetContainerId(); v != "" && !strings.HasPrefix(c.GetId(), v) {
		return false
	}
	if v := q.GetImage(); v != "" && !glob.Match(v, c.GetImage()) {
		return false
	}
	if v := q.GetSha256(); v != "" && (f.GetFile().GetSha256() == "" ||
		strings.ToLower(f.GetFile().GetSha256()) != strings.ToLower(strings.TrimPrefix(v, "sha256:"))) {
		return false
	}
	if v := q.GetGrep(); v != "" && !strings.Contains(SearchText(f), strings.ToLower(v)) {
		return false
	}
	if v := q.GetUser(); v != "" && (f.GetK8SUser() == "" || !glob.Match(v, f.GetK8SUser())) {
		return false
	}
	return true
}

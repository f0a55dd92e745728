// Package filter is the one definition of a findings search as people write
// it: the flags of `loupe query` and the URL parameters of the collector's
// console carry the same fields under the same names (since, until, kind,
// severity, node, namespace, pod, container, image, sha256, grep, user,
// limit, oldest-first), and Request turns either into a QueryRequest.
package filter

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// Filter is a findings search with its fields as typed by a person.
type Filter struct {
	// Since and Until: a duration before now (90m, 24h, 7d) or an RFC 3339 time; "" for no bound.
	Since, Until string
	// Kinds are kind names (shell_exec, KIND_SHELL_EXEC, …); any of them matches.
	Kinds []string
	// Severity is the minimum severity name (info … critical).
	Severity string
	// Nodes are node names; any of them matches.
	Nodes []string
	// Namespace (exact), Pod (* matches any characters), Container (id or a
	// prefix), Image (* matches any characters), Sha256 (hex), Grep (text).
	Namespace, Pod, Container, Image, Sha256, Grep string
	// User is a Kubernetes user (* matches any characters): that user's
	// audit events and the node findings linked to them.
	User string
	// Limit is the maximum number of findings (0: the collector's default).
	Limit uint32
	// OldestFirst orders the result as a timeline.
	OldestFirst bool
}

// Request builds the QueryRequest of f, with relative times taken from now.
// Errors name the field at fault, with the flag spelling ("--since").
func (f Filter) Request(now time.Time) (*loupev1.QueryRequest, error) {
	req := &loupev1.QueryRequest{
		Nodes: f.Nodes, Namespace: f.Namespace, Pod: f.Pod, ContainerId: f.Container,
		Image: f.Image, Sha256: strings.ToLower(f.Sha256), Grep: f.Grep, User: f.User, Limit: f.Limit,
		Order: loupev1.Order_ORDER_NEWEST_FIRST,
	}
	var err error
	if req.Since, err = ParseTime("--since", f.Since, now); err != nil {
		return nil, err
	}
	if req.Until, err = ParseTime("--until", f.Until, now); err != nil {
		return nil, err
	}
	for _, k := range f.Kinds {
		kind, err := loupev1.ParseKind(k)
		if err != nil {
			return nil, fmt.Errorf("--kind: %w", err)
		}
		req.Kinds = append(req.Kinds, kind)
	}
	if f.Severity != "" {
		if req.MinSeverity, err = loupev1.ParseSeverity(f.Severity); err != nil {
			return nil, fmt.Errorf("--severity: %w", err)
		}
	}
	if f.OldestFirst {
		req.Order = loupev1.Order_ORDER_OLDEST_FIRST
	}
	return req, nil
}

// URL parameter names, the flag names of `loupe query` without dashes.
const (
	pSince, pUntil, pKind, pSeverity, pNode = "since", "until", "kind", "severity", "node"
	pNamespace, pPod, pContainer, pImage    = "namespace", "pod", "container", "image"
	pSha256, pGrep, pLimit, pOldestFirst    = "sha256", "grep", "limit", "oldest-first"
	pUser                                   = "user"
)

// MaxValues bounds the values a URL may carry for one parameter.
const MaxValues = 64

// FromValues reads a Filter from URL parameters named like the flags.
// A parameter absent from v keeps the field of def (the page's defaults);
// one present but empty clears it. Unknown parameters are ignored (a page
// may have its own).
func FromValues(v url.Values, def Filter) (Filter, error) {
	f := def
	str := func(name string, dst *string) {
		if vs, ok := v[name]; ok && len(vs) > 0 {
			*dst = strings.TrimSpace(vs[0])
		}
	}
	list := func(name string, dst *[]string) error {
		vs, ok := v[name]
		if !ok {
			return nil
		}
		if len(vs) > MaxValues { // before splitting: bounds the work as well as the result
			return fmt.Errorf("--%s: at most %d values", name, MaxValues)
		}
		*dst = nil
		for _, s := range vs {
			// Kind and node names hold no comma: a form's one text box may list several.
			for _, part := range strings.Split(s, ",") {
				if part = strings.TrimSpace(part); part != "" {
					*dst = append(*dst, part)
				}
			}
		}
		if len(*dst) > MaxValues {
			return fmt.Errorf("--%s: at most %d values", name, MaxValues)
		}
		return nil
	}
	str(pSince, &f.Since)
	str(pUntil, &f.Until)
	str(pSeverity, &f.Severity)
	str(pNamespace, &f.Namespace)
	str(pPod, &f.Pod)
	str(pContainer, &f.Container)
	str(pImage, &f.Image)
	str(pSha256, &f.Sha256)
	str(pGrep, &f.Grep)
	str(pUser, &f.User)
	if err := errors.Join(list(pKind, &f.Kinds), list(pNode, &f.Nodes)); err != nil {
		return Filter{}, err
	}
	if vs, ok := v[pLimit]; ok && len(vs) > 0 && strings.TrimSpace(vs[0]) != "" {
		n, err := strconv.ParseUint(strings.TrimSpace(vs[0]), 10, 32)
		if err != nil {
			return Filter{}, fmt.Errorf("--limit %q: want a whole number", vs[0])
		}
		f.Limit = uint32(n)
	}
	if vs, ok := v[pOldestFirst]; ok && len(vs) > 0 {
		s := strings.TrimSpace(vs[0])
		if s == "on" { // an HTML checkbox without a value
			s = "true"
		}
		b, err := strconv.ParseBool(s)
		if err != nil {
			return Filter{}, fmt.Errorf("--oldest-first %q: want true or false", vs[0])
		}
		f.OldestFirst = b
	}
	return f, nil
}

// Values is f as URL parameters (empty fields left out), so that a URL
// holds the whole search and FromValues(f.Values(), Filter{}) == f.
func (f Filter) Values() url.Values {
	v := url.Values{}
	set := func(name, s string) {
		if s != "" {
			v.Set(name, s)
		}
	}
	v.Set(pSince, f.Since) // always: "" means all time, which differs from a page's default
	set(pUntil, f.Until)
	set(pSeverity, f.Severity)
	set(pNamespace, f.Namespace)
	set(pPod, f.Pod)
	set(pContainer, f.Container)
	set(pImage, f.Image)
	set(pSha256, f.Sha256)
	set(pGrep, f.Grep)
	set(pUser, f.User)
	for _, k := range f.Kinds {
		v.Add(pKind, k)
	}
	for _, n := range f.Nodes {
		v.Add(pNode, n)
	}
	if f.Limit != 0 {
		v.Set(pLimit, strconv.FormatUint(uint64(f.Limit), 10))
	}
	if f.OldestFirst {
		v.Set(pOldestFirst, "true")
	}
	return v
}

// ParseTime accepts "", a duration before now (Go syntax plus a "d" suffix
// for days) or an RFC 3339 time; name is the flag named in errors.
func ParseTime(name, v string, now time.Time) (*timestamppb.Timestamp, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return timestamppb.New(t), nil
	}
	d, err := ParseDuration(v)
	if err != nil {
		return nil, fmt.Errorf("%s %q: want a duration like 90m, 24h or 7d, or an RFC 3339 time like 2026-01-02T15:04:05Z", name, v)
	}
	return timestamppb.New(now.Add(-d)), nil
}

// ParseDuration is time.ParseDuration plus whole days ("7d").
func ParseDuration(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err != nil || days < 0 || fmt.Sprint(days) != n {
			return 0, fmt.Errorf("bad day count %q", v)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err == nil && d < 0 {
		return 0, fmt.Errorf("negative duration %q", v)
	}
	return d, err
}

// Package store defines where the collector keeps findings: the Store
// interface every backend implements (SQLite now, PostgreSQL later), the
// query rules they share, and Open, which picks a backend from a DSN.
package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// Query limits shared by every backend.
const (
	// DefaultLimit applies when QueryRequest.limit is 0.
	DefaultLimit = 1000
	// MaxLimit is the largest limit a query may ask for.
	MaxLimit = 100000
	// MinContainerPrefix is the shortest container id prefix accepted.
	MinContainerPrefix = 4
	// MaxFilterLen bounds each text filter of a query, in bytes.
	MaxFilterLen = 1024
	// MaxFilterValues bounds the kinds and nodes lists of a query.
	MaxFilterValues = 256
)

// Sentinel errors.
var (
	// ErrInvalidQuery wraps every error caused by a bad QueryRequest.
	ErrInvalidQuery = errors.New("invalid query")
	// ErrNotFound is returned by Get for an id that is not stored.
	ErrNotFound = errors.New("not found")
	// ErrUnknownScheme is returned by Open for a DSN no backend handles.
	ErrUnknownScheme = errors.New("unknown database scheme")
)

// NodeInfo is the agent that sent a batch.
type NodeInfo struct {
	// Name is the node the sender speaks for.
	Name string
	// AgentVersion is the sender's version.
	AgentVersion string
	// Seen is when the batch arrived.
	Seen time.Time
}

// IngestResult says what one Ingest call did.
type IngestResult struct {
	// Stored counts findings inserted by this call.
	Stored int
	// Duplicates counts findings whose id was already stored.
	Duplicates int
	// Inserted[i] is true when findings[i] was inserted now (false: duplicate).
	Inserted []bool
}

// Count is the number of findings of one kind and severity in one hour.
type Count struct {
	Hour     time.Time // the hour's start, UTC
	Kind     loupev1.Kind
	Severity loupev1.Severity
	N        int64
}

// MaxCountSpan bounds the time range of Counts.
const MaxCountSpan = 31 * 24 * time.Hour

// CheckCountSpan validates the range of a Counts call.
func CheckCountSpan(since, until time.Time) error {
	if !since.Before(until) || until.Sub(since) > MaxCountSpan {
		return fmt.Errorf("%w: counts need since < until, at most %s apart", ErrInvalidQuery, MaxCountSpan)
	}
	return nil
}

// Store keeps findings. Implementations are safe for concurrent use.
type Store interface {
	// Ingest stores findings in one transaction: all of them or, on error,
	// none. Findings must already be valid (the collector validates them);
	// a finding whose id is already stored is counted as a duplicate and left
	// unchanged. The nodes table is updated in the same transaction: the
	// sender's version and last-seen time, and finding counts per node.
	Ingest(ctx context.Context, node NodeInfo, findings []*loupev1.Finding) (IngestResult, error)
	// Query calls fn for each finding matching q, in q's order, at most
	// q's limit. An error from fn stops the query and is returned. A bad
	// request returns an error wrapping ErrInvalidQuery.
	Query(ctx context.Context, q *loupev1.QueryRequest, fn func(*loupev1.Finding) error) error
	// Get returns the finding with id, or an error wrapping ErrNotFound.
	Get(ctx context.Context, id string) (*loupev1.Finding, error)
	// Counts returns how many findings there are per hour (UTC), kind and
	// severity with a time in [since, until).
	Counts(ctx context.Context, since, until time.Time) ([]Count, error)
	// Nodes lists the known nodes by name (Connected is left false: only
	// the server knows open streams).
	Nodes(ctx context.Context) ([]*loupev1.Node, error)
	// Sessions returns the sessions of these nodes' agents that overlap
	// [since, until), merged (MergeSessions); more than MaxSessions records
	// is ErrTooManySessions. Sessions
	// are recorded from the batches an agent sends (Ingest's NodeInfo), since
	// the store first had them: a store upgraded from an older schema has
	// none before its upgrade.
	Sessions(ctx context.Context, nodes []string, since, until time.Time) ([]Session, error)
	// Prune deletes findings older than before and returns how many
	// (and the agent sessions that ended before it).
	Prune(ctx context.Context, before time.Time) (int64, error)
	// Ping checks that the database answers (for /readyz).
	Ping(ctx context.Context) error
	// Close flushes and closes the store.
	Close() error
}

// Partitioned is implemented by stores that keep findings in time
// partitions of PartitionSize (aligned on UTC midnight for a day). The
// collector's retention then rounds its cut-off down to a partition boundary,
// so that pruning drops whole partitions instead of deleting rows: findings
// are kept up to one partition longer than the retention.
type Partitioned interface {
	PartitionSize() time.Duration
}

// Opener opens a store for a DSN of its scheme.
type Opener func(ctx context.Context, dsn string) (Store, error)

var (
	mu      sync.Mutex
	openers = map[string]Opener{}
)

// Register makes a backend available to Open for scheme (e.g. "sqlite").
// Backends call it from init.
func Register(scheme string, open Opener) {
	mu.Lock()
	defer mu.Unlock()
	openers[scheme] = open
}

// Open opens the store named by dsn, e.g. sqlite:///var/lib/loupe/collector.db.
func Open(ctx context.Context, dsn string) (Store, error) {
	scheme, _, ok := strings.Cut(dsn, "://")
	if !ok {
		return nil, fmt.Errorf("%w: %q: want sqlite:///path/to/collector.db or postgres://user@host:5432/database", ErrUnknownScheme, dsn)
	}
	scheme = strings.ToLower(scheme)
	mu.Lock()
	open := openers[scheme]
	var known []string
	for k := range openers {
		known = append(known, k+"://")
	}
	mu.Unlock()
	if open == nil {
		sort.Strings(known)
		return nil, fmt.Errorf("%w %q (supported: %s)", ErrUnknownScheme, scheme+"://", strings.Join(known, ", "))
	}
	return open(ctx, dsn)
}

// EffectiveLimit validates q.limit and returns the limit to apply.
func EffectiveLimit(q *loupev1.QueryRequest) (int, error) {
	switch l := q.GetLimit(); {
	case l == 0:
		return DefaultLimit, nil
	case l > MaxLimit:
		return 0, fmt.Errorf("%w: limit %d is above the maximum %d", ErrInvalidQuery, l, MaxLimit)
	default:
		return int(l), nil
	}
}

// CheckQuery validates the parts of q every backend interprets the same way.
func CheckQuery(q *loupev1.QueryRequest) error {
	if q == nil {
		return fmt.Errorf("%w: empty request", ErrInvalidQuery)
	}
	if _, err := EffectiveLimit(q); err != nil {
		return err
	}
	if s := q.GetSince(); s != nil {
		if err := s.CheckValid(); err != nil {
			return fmt.Errorf("%w: since: %v", ErrInvalidQuery, err)
		}
	}
	if u := q.GetUntil(); u != nil {
		if err := u.CheckValid(); err != nil {
			return fmt.Errorf("%w: until: %v", ErrInvalidQuery, err)
		}
	}
	for name, v := range map[string]string{"namespace": q.GetNamespace(), "pod": q.GetPod(), "container id": q.GetContainerId(),
		"image": q.GetImage(), "sha256": q.GetSha256(), "grep": q.GetGrep(), "user": q.GetUser()} {
		if len(v) > MaxFilterLen {
			return fmt.Errorf("%w: %s filter is %d bytes long (max %d)", ErrInvalidQuery, name, len(v), MaxFilterLen)
		}
	}
	if len(q.GetKinds()) > MaxFilterValues || len(q.GetNodes()) > MaxFilterValues {
		return fmt.Errorf("%w: at most %d kinds and %d nodes", ErrInvalidQuery, MaxFilterValues, MaxFilterValues)
	}
	if c := q.GetContainerId(); c != "" && len(c) < MinContainerPrefix {
		return fmt.Errorf("%w: container id prefix %q is shorter than %d characters", ErrInvalidQuery, c, MinContainerPrefix)
	}
	for _, k := range q.GetKinds() {
		if _, ok := loupev1.Kind_name[int32(k)]; !ok || k == loupev1.Kind_KIND_UNSPECIFIED {
			return fmt.Errorf("%w: unknown kind %d", ErrInvalidQuery, k)
		}
	}
	if s := q.GetMinSeverity(); s != 0 {
		if _, ok := loupev1.Severity_name[int32(s)]; !ok {
			return fmt.Errorf("%w: unknown severity %d", ErrInvalidQuery, s)
		}
	}
	if o := q.GetOrder(); o != 0 {
		if _, ok := loupev1.Order_name[int32(o)]; !ok {
			return fmt.Errorf("%w: unknown order %d", ErrInvalidQuery, o)
		}
	}
	return nil
}

// SearchText is the text a grep filter matches: argv, filename, file path,
// package name and purl, and summary, lower-cased and joined by newlines.
func SearchText(f *loupev1.Finding) string {
	var b strings.Builder
	add := func(s string) {
		if s == "" {
			return
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(s)
	}
	if p := f.GetProcess(); p != nil {
		add(strings.Join(p.GetArgv(), " "))
		add(p.GetFilename())
	}
	add(f.GetFile().GetPath())
	if p := f.GetPackage(); p != nil {
		add(p.GetName())
		add(p.GetPurl())
	}
	add(f.GetSummary())
	return strings.ToLower(b.String())
}

// GlobLiteral escapes s for an SQLite GLOB pattern so that every character
// matches literally.
func GlobLiteral(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[':
			b.WriteByte('[')
			b.WriteRune(r)
			b.WriteByte(']')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// GlobToSQLite turns a user pattern where '*' matches any run of characters
// into an SQLite GLOB pattern that matches every other character literally.
func GlobToSQLite(p string) string {
	var b strings.Builder
	for _, r := range p {
		switch r {
		case '?':
			b.WriteString("[?]")
		case '[':
			b.WriteString("[[]")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TimestampFromNanos is the timestamp of ns nanoseconds since 1970; 0 (never) is nil.
func TimestampFromNanos(ns int64) *timestamppb.Timestamp {
	if ns == 0 {
		return nil
	}
	return timestamppb.New(time.Unix(0, ns))
}

// ClampNanos is t.UnixNano() saturated at the int64 range (years 1678…2262)
// instead of overflowing, for query bounds such as year 9999.
func ClampNanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

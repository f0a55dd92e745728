package store

import (
	"fmt"
	"sort"
	"time"
)

// SessionGap is the longest silence inside one agent session: agents send a
// batch (a heartbeat when there is nothing to report) at least every 30 s,
// and a node counts as connected while its last batch is younger than this.
const SessionGap = 90 * time.Second

// MaxSessions bounds the sessions one Sessions call reads.
const MaxSessions = 10000

// ErrTooManySessions is returned by Sessions when more than MaxSessions
// records overlap the range.
var ErrTooManySessions = fmt.Errorf("%w: more than %d agent sessions in the range: narrow it or ask for fewer nodes", ErrInvalidQuery, MaxSessions)

// Session is a stretch of time during which a node's agent reported with no
// silence longer than SessionGap: from its first batch to its last.
type Session struct {
	Node       string
	Start, End time.Time
}

// CheckSessions validates the arguments of a Sessions call.
func CheckSessions(nodes []string, since, until time.Time) error {
	if len(nodes) == 0 || len(nodes) > MaxFilterValues {
		return fmt.Errorf("%w: sessions of 1 to %d nodes, got %d", ErrInvalidQuery, MaxFilterValues, len(nodes))
	}
	if !until.After(since) {
		return fmt.Errorf("%w: sessions: until %s is not after since %s", ErrInvalidQuery, until.Format(time.RFC3339), since.Format(time.RFC3339))
	}
	return nil
}

// MergeSessions sorts sessions by node and start and merges those of a node
// that overlap or are less than SessionGap apart (replicas that saw the
// same agent at nearly the same time record a session each).
func MergeSessions(ss []Session) []Session {
	sort.Slice(ss, func(i, j int) bool {
		if ss[i].Node != ss[j].Node {
			return ss[i].Node < ss[j].Node
		}
		return ss[i].Start.Before(ss[j].Start)
	})
	var out []Session
	for _, s := range ss {
		if n := len(out); n > 0 && out[n-1].Node == s.Node && s.Start.Sub(out[n-1].End) <= SessionGap {
			if s.End.After(out[n-1].End) {
				out[n-1].End = s.End
			}
			continue
		}
		out = append(out, s)
	}
	return out
}

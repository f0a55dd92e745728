package sqlite

import (
	"math"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

func tsFromNanos(ns int64) *timestamppb.Timestamp {
	if ns == 0 {
		return nil
	}
	return timestamppb.New(time.Unix(0, ns))
}

// clampNanos is t.UnixNano() saturated at the int64 range (years 1678…2262)
// instead of overflowing, for query bounds such as year 9999.
func clampNanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

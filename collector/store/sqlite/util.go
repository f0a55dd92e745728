package sqlite

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

func tsFromNanos(ns int64) *timestamppb.Timestamp {
	if ns == 0 {
		return nil
	}
	return timestamppb.New(time.Unix(0, ns))
}

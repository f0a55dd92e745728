//go:build !linux

package inspect

import (
	"context"
	"errors"
)

// Scan needs openat2 (Linux ≥ 5.6); elsewhere it reports so.
func (s *Scanner) Scan(ctx context.Context, t Target) (*Report, error) {
	return nil, errors.New("scan: container inspection needs Linux (openat2)")
}

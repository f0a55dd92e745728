//go:build !linux

package compliance

import (
	"errors"

	"github.com/loupe-dev/loupe/agent/inspect"
)

// LayeredFS is Linux-only.
type LayeredFS struct{ FS }

// NewFS is Linux-only.
func NewFS(t inspect.Target) (*LayeredFS, error) {
	return nil, errors.New("reading container filesystems is only supported on Linux")
}

// Close does nothing.
func (l *LayeredFS) Close() error { return nil }

//go:build !linux || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package bpf

import "context"

// Tracer is unavailable on this platform; NewTracer returns ErrUnsupported.
type Tracer struct{}

// NewTracer returns ErrUnsupported: the exec tracer needs Linux.
func NewTracer(Config) (*Tracer, error) { return nil, ErrUnsupported }

// Hooks returns nil.
func (*Tracer) Hooks() []string { return nil }

// TrackCgroup returns ErrUnsupported.
func (*Tracer) TrackCgroup(uint64) error { return ErrUnsupported }

// UntrackCgroup returns ErrUnsupported.
func (*Tracer) UntrackCgroup(uint64) error { return ErrUnsupported }

// TrackMntNS returns ErrUnsupported.
func (*Tracer) TrackMntNS(uint64) error { return ErrUnsupported }

// UntrackMntNS returns ErrUnsupported.
func (*Tracer) UntrackMntNS(uint64) error { return ErrUnsupported }

// KillShellsIn returns ErrUnsupported.
func (*Tracer) KillShellsIn(uint64) error { return ErrUnsupported }

// StopKillingIn returns ErrUnsupported.
func (*Tracer) StopKillingIn(uint64) error { return ErrUnsupported }

// Lost returns 0.
func (*Tracer) Lost() uint64 { return 0 }

// Count returns 0.
func (*Tracer) Count(EventType) uint64 { return 0 }

// Read returns ErrUnsupported.
func (*Tracer) Read(context.Context, func(*Event)) error { return ErrUnsupported }

// Close does nothing.
func (*Tracer) Close() error { return nil }

// Mode returns the zero Mode.
func (*Tracer) Mode() Mode { return Mode{} }

// Programs returns nil.
func (*Tracer) Programs() []ProgramStats { return nil }

//go:build !linux

package agent

import (
	"context"
	"errors"
)

type parts struct{}

func (a *Agent) setupSources(context.Context) error {
	return errors.New("loupe-agent needs Linux (containerd, eBPF, openat2)")
}

func (a *Agent) closeSources() {}

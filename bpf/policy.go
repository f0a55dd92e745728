package bpf

import (
	"fmt"
	"path"
)

// KillSelector selects containers by Kubernetes namespace, pod name and
// image. Empty fields match anything; Pod and Image are path.Match globs
// ("api-*", "registry.example.com/team/*").
type KillSelector struct {
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	Image     string `json:"image,omitempty"`
}

// KillPolicy says in which containers shells are killed (enforcement). A
// container matching any selector is enforced; an empty policy enforces
// nothing.
type KillPolicy struct {
	Selectors []KillSelector `json:"selectors"`
}

// Validate rejects malformed globs.
func (p KillPolicy) Validate() error {
	for i, s := range p.Selectors {
		for _, g := range []string{s.Pod, s.Image} {
			if _, err := path.Match(g, ""); err != nil {
				return fmt.Errorf("kill policy selector %d: bad pattern %q: %w", i, g, err)
			}
		}
	}
	return nil
}

// Matches reports whether a container with this namespace, pod name and
// image is enforced by the policy.
func (p KillPolicy) Matches(namespace, pod, image string) bool {
	for _, s := range p.Selectors {
		if s.Namespace != "" && s.Namespace != namespace {
			continue
		}
		if !glob(s.Pod, pod) || !glob(s.Image, image) {
			continue
		}
		return true
	}
	return false
}

func glob(pattern, s string) bool {
	if pattern == "" {
		return true
	}
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}

package bpf

import "github.com/loupe-dev/loupe/internal/glob"

// KillSelector selects containers by Kubernetes namespace, pod name and
// image. Empty fields match anything; Pod and Image are internal/glob
// patterns ("api-*", "registry.example.com/team/*", where '*' crosses '/').
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

// Matches reports whether a container with this namespace, pod name and
// image is enforced by the policy.
func (p KillPolicy) Matches(namespace, pod, image string) bool {
	for _, s := range p.Selectors {
		if s.Namespace != "" && s.Namespace != namespace {
			continue
		}
		if !glob.Match(s.Pod, pod) || !glob.Match(s.Image, image) {
			continue
		}
		return true
	}
	return false
}

package output

import (
	"slices"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/glob"
)

// Match reports whether the output pushes f: at or above MinSeverity, of
// one of Kinds (any when empty), in a namespace matching one of Namespaces
// (any when empty).
func (c *Config) Match(f *loupev1.Finding) bool {
	if f.GetSeverity() < c.MinSeverity {
		return false
	}
	if len(c.Kinds) > 0 && !slices.Contains(c.Kinds, f.GetKind()) {
		return false
	}
	if len(c.Namespaces) == 0 {
		return true
	}
	ns := f.GetContainer().GetNamespace()
	if ns == "" {
		return false
	}
	for _, p := range c.Namespaces {
		if glob.Match(p, ns) {
			return true
		}
	}
	return false
}

package glob

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	cases := []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"", "", true}, {"", "a", true}, {"x", "", false},
		{"api-*", "api-7d9f", true}, {"api-*", "web-1", false},
		{"*/nginx:*", "docker.io/library/nginx:1.27", true},
		{"a?c", "abc", true}, {"a?c", "ac", false},
		{"*a*b*c*", "xxaxxbxxcxx", true}, {"*a*b*c*", "xxaxxcxxbxx", false},
		{"exact", "exact", true}, {"exact", "exactly", false},
	}
	for _, c := range cases {
		if got := Match(c.p, c.s); got != c.want {
			t.Errorf("Match(%q, %q) = %v", c.p, c.s, got)
		}
	}
	// No exponential blow-up on adversarial input.
	if Match(strings.Repeat("*a", 50)+"b", strings.Repeat("a", 5000)) {
		t.Error("pathological pattern matched")
	}
}

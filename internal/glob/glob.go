// Package glob is the one wildcard syntax of Loupe's rules, policies and
// filters: '*' matches any run of characters, including '/', so "*/nginx:*"
// matches "docker.io/library/nginx:1.27"; '?' matches one character; an
// empty pattern matches anything. Matching is iterative (no exponential
// backtracking on hostile patterns).
package glob

// Match reports whether s matches pattern; "" matches anything.
func Match(pattern, s string) bool {
	if pattern == "" {
		return true
	}
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[n]):
			p++
			n++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

package bpf

import "testing"

func TestKillPolicy(t *testing.T) {
	p := KillPolicy{Selectors: []KillSelector{
		{Namespace: "payments", Pod: "api-*"},
		{Image: "registry.example.com/distroless/*"},
	}}
	for _, tc := range []struct {
		ns, pod, image string
		want           bool
	}{
		{"payments", "api-7d9", "x", true},
		{"payments", "worker-1", "x", false},
		{"default", "api-7d9", "x", false},
		{"default", "web", "registry.example.com/distroless/static:1", true},
		{"default", "web", "docker.io/library/debian:12", false},
		{"default", "web", "registry.example.com/distroless/nested/static:1", true}, // '*' crosses '/'
	} {
		if got := p.Matches(tc.ns, tc.pod, tc.image); got != tc.want {
			t.Errorf("Matches(%q, %q, %q) = %v, want %v", tc.ns, tc.pod, tc.image, got, tc.want)
		}
	}
	if (KillPolicy{}).Matches("a", "b", "c") {
		t.Error("empty policy matched")
	}
}

package kubernetes

import (
	"os"
	"slices"
	"strings"
	"testing"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"sigs.k8s.io/yaml"
)

// levelFor evaluates p as the API server does: the first rule that
// matches the request decides its level.
func levelFor(p *auditv1.Policy, verb, group, resource, subresource string) auditv1.Level {
	full := resource
	if subresource != "" {
		full += "/" + subresource
	}
	for _, r := range p.Rules {
		if len(r.Verbs) > 0 && !slices.Contains(r.Verbs, verb) && !slices.Contains(r.Verbs, "*") {
			continue
		}
		if len(r.Resources) > 0 && !slices.ContainsFunc(r.Resources, func(g auditv1.GroupResources) bool {
			return g.Group == group && (len(g.Resources) == 0 || slices.ContainsFunc(g.Resources, func(res string) bool {
				return res == full || res == "*" || res == "*/*" || (strings.HasSuffix(res, "/*") && strings.TrimSuffix(res, "/*") == resource) ||
					(strings.HasPrefix(res, "*/") && subresource != "" && strings.TrimPrefix(res, "*/") == subresource)
			}))
		}) {
			continue
		}
		if len(r.NonResourceURLs) > 0 || len(r.Users) > 0 || len(r.UserGroups) > 0 || len(r.Namespaces) > 0 {
			continue // this policy does not narrow by those
		}
		return r.Level
	}
	return auditv1.LevelNone
}

// TestAuditPolicy decodes the shipped policy strictly into the API server's
// own type and checks each request the collector keeps is recorded at the
// level its finding needs, and that nothing else is.
func TestAuditPolicy(t *testing.T) {
	b, err := os.ReadFile("apiserver/audit-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var p auditv1.Policy
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		t.Fatalf("audit-policy.yaml: %v", err)
	}
	if p.APIVersion != "audit.k8s.io/v1" || p.Kind != "Policy" || !slices.Contains(p.OmitStages, auditv1.StageRequestReceived) {
		t.Fatalf("policy header: %+v", p.TypeMeta)
	}
	rank := map[auditv1.Level]int{auditv1.LevelNone: 0, auditv1.LevelMetadata: 1, auditv1.LevelRequest: 2, auditv1.LevelRequestResponse: 3}
	for _, c := range []struct {
		verb, resource, sub string
		want                auditv1.Level
	}{
		{"create", "pods", "exec", auditv1.LevelMetadata}, {"get", "pods", "exec", auditv1.LevelMetadata}, // websocket exec is a GET
		{"create", "pods", "attach", auditv1.LevelMetadata}, {"create", "pods", "portforward", auditv1.LevelMetadata},
		{"get", "nodes", "proxy", auditv1.LevelMetadata}, {"patch", "pods", "ephemeralcontainers", auditv1.LevelRequest},
		{"create", "pods", "", auditv1.LevelRequest},
	} {
		if got := levelFor(&p, c.verb, "", c.resource, c.sub); rank[got] < rank[c.want] {
			t.Errorf("%s %s/%s audited at %q, need at least %q", c.verb, c.resource, c.sub, got, c.want)
		}
	}
	for _, c := range [][3]string{{"get", "secrets", ""}, {"list", "configmaps", ""}, {"update", "pods", ""}, {"get", "pods", "log"}} {
		if got := levelFor(&p, c[0], "", c[1], c[2]); got != auditv1.LevelNone {
			t.Errorf("%s %s/%s audited at %q: the policy sends only what Loupe keeps", c[0], c[1], c[2], got)
		}
	}
}

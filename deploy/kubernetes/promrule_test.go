package kubernetes

import (
	"os"
	"reflect"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	rulesPath          = "../prometheus/rules.yaml"
	prometheusRulePath = "components/monitoring/prometheusrule.yaml"
)

// TestPrometheusRuleMatchesRulesFile keeps one source of truth: the
// PrometheusRule is exactly what PrometheusRuleYAML makes of the plain rules
// file, and decodes to the same groups.
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	src, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := PrometheusRuleYAML(src)
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("LOUPE_UPDATE") == "1" {
		if err := os.WriteFile(prometheusRulePath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(prometheusRulePath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s is stale: run LOUPE_UPDATE=1 go test ./deploy/kubernetes/ -run PrometheusRule", prometheusRulePath)
	}
	var rf RulesFile
	var pr PrometheusRule
	if err := yaml.UnmarshalStrict(src, &rf); err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(got, &pr); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rf, pr.Spec) {
		t.Fatal("PrometheusRule spec differs from rules.yaml after decoding")
	}
	alerts := 0
	for _, g := range pr.Spec.Groups {
		alerts += len(g.Rules)
	}
	if alerts < 5 || pr.Kind != "PrometheusRule" || pr.Metadata.Namespace != "loupe" {
		t.Fatalf("unexpected PrometheusRule: kind %q namespace %q, %d rules", pr.Kind, pr.Metadata.Namespace, alerts)
	}
}

func TestPrometheusRuleYAMLRejectsBadInput(t *testing.T) {
	for _, in := range []string{"", "groups: []", "groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: up\n        bogus: 1\n", "\x00"} {
		if _, err := PrometheusRuleYAML([]byte(in)); err == nil {
			t.Errorf("PrometheusRuleYAML(%q) accepted bad input", in)
		}
	}
}

// FuzzPrometheusRuleYAML: any input either is refused or yields a
// PrometheusRule whose spec decodes to exactly the input's groups.
func FuzzPrometheusRuleYAML(f *testing.F) {
	if src, err := os.ReadFile(rulesPath); err == nil {
		f.Add(src)
	}
	f.Add([]byte("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n"))
	f.Add([]byte("# c\ngroups:\n- name: g\n  rules: []\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := PrometheusRuleYAML(in)
		if err != nil {
			return
		}
		var rf RulesFile
		var pr PrometheusRule
		if err := yaml.UnmarshalStrict(in, &rf); err != nil {
			t.Fatalf("accepted input does not decode: %v", err)
		}
		if err := yaml.UnmarshalStrict(out, &pr); err != nil {
			t.Fatalf("output does not decode: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(rf, pr.Spec) {
			t.Fatalf("spec differs from input\n--- in\n%s\n--- out\n%s", in, out)
		}
	})
}

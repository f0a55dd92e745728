package kubernetes

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"sigs.k8s.io/yaml"
)

// PrometheusRuleYAML wraps a plain Prometheus rules file (deploy/prometheus/rules.yaml)
// into a monitoring.coreos.com/v1 PrometheusRule named loupe in namespace loupe.
// The rules text is kept as it is (indented under spec), so the generated
// object is reviewable line by line against its source; when re-indenting
// would change its meaning (tabs, flow style, block scalars), the spec is
// encoded from the decoded rules instead. The rules file must decode
// strictly as a RulesFile.
func PrometheusRuleYAML(rules []byte) ([]byte, error) {
	var rf RulesFile
	if err := yaml.UnmarshalStrict(rules, &rf); err != nil {
		return nil, fmt.Errorf("decode rules file: %w", err)
	}
	if len(rf.Groups) == 0 {
		return nil, fmt.Errorf("decode rules file: no groups")
	}
	out := wrapText(rules)
	var pr PrometheusRule
	if err := yaml.UnmarshalStrict(out, &pr); err == nil && reflect.DeepEqual(pr.Spec, rf) {
		return out, nil
	}
	spec, err := yaml.Marshal(rf)
	if err != nil {
		return nil, fmt.Errorf("encode rules: %w", err)
	}
	return wrapText(spec), nil
}

func wrapText(rules []byte) []byte {
	var b bytes.Buffer
	b.WriteString("# Generated from deploy/prometheus/rules.yaml by PrometheusRuleYAML\n")
	b.WriteString("# (LOUPE_UPDATE=1 go test ./deploy/kubernetes/ -run PrometheusRule). Do not edit.\n")
	b.WriteString("apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: loupe\n  namespace: loupe\n")
	b.WriteString("  labels:\n    app.kubernetes.io/part-of: loupe\nspec:\n")
	for _, line := range strings.Split(strings.TrimRight(string(rules), "\n"), "\n") {
		if strings.HasPrefix(line, "#") {
			continue // the source's header comments
		}
		if line == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString("  " + line + "\n")
	}
	return b.Bytes()
}

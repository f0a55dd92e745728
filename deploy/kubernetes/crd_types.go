package kubernetes

// Minimal mirrors of the custom resources the manifests use (cert-manager,
// Prometheus Operator), with the upstream JSON field names. Only the fields
// Loupe sets are declared: a strict decode into them fails on any other
// field, which catches typos; upstream schemas accept a superset.

// ObjectMeta is the part of metav1.ObjectMeta the custom resources use.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// IssuerRef names a cert-manager issuer.
type IssuerRef struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
}

// Issuer is cert-manager.io/v1 Issuer.
type Issuer struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       struct {
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca,omitempty"`
	} `json:"spec"`
}

// Certificate is cert-manager.io/v1 Certificate.
type Certificate struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       struct {
		IsCA        bool     `json:"isCA,omitempty"`
		CommonName  string   `json:"commonName,omitempty"`
		SecretName  string   `json:"secretName"`
		DNSNames    []string `json:"dnsNames,omitempty"`
		Usages      []string `json:"usages,omitempty"`
		Duration    string   `json:"duration,omitempty"`
		RenewBefore string   `json:"renewBefore,omitempty"`
		PrivateKey  *struct {
			Algorithm string `json:"algorithm,omitempty"`
			Size      int    `json:"size,omitempty"`
		} `json:"privateKey,omitempty"`
		IssuerRef IssuerRef `json:"issuerRef"`
	} `json:"spec"`
}

// RelabelConfig is a Prometheus Operator relabeling.
type RelabelConfig struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
}

// Endpoint is a scrape endpoint of a PodMonitor or ServiceMonitor.
type Endpoint struct {
	Port        string          `json:"port"`
	Path        string          `json:"path,omitempty"`
	Interval    string          `json:"interval,omitempty"`
	Relabelings []RelabelConfig `json:"relabelings,omitempty"`
}

// LabelSelector is metav1.LabelSelector's matchLabels form.
type LabelSelector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

// PodMonitor is monitoring.coreos.com/v1 PodMonitor.
type PodMonitor struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       struct {
		JobLabel            string        `json:"jobLabel,omitempty"`
		Selector            LabelSelector `json:"selector"`
		PodMetricsEndpoints []Endpoint    `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// ServiceMonitor is monitoring.coreos.com/v1 ServiceMonitor.
type ServiceMonitor struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       struct {
		JobLabel  string        `json:"jobLabel,omitempty"`
		Selector  LabelSelector `json:"selector"`
		Endpoints []Endpoint    `json:"endpoints"`
	} `json:"spec"`
}

// Rule is one alerting or recording rule.
type Rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// RuleGroup is a group of rules (same shape in a Prometheus rules file and a PrometheusRule).
type RuleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []Rule `json:"rules"`
}

// RulesFile is a plain Prometheus rules file.
type RulesFile struct {
	Groups []RuleGroup `json:"groups"`
}

// PrometheusRule is monitoring.coreos.com/v1 PrometheusRule.
type PrometheusRule struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       RulesFile  `json:"spec"`
}

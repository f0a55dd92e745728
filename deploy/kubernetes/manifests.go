package kubernetes

import (
	"bytes"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Object is one built manifest: its kind and name, and the typed value it
// decoded into (a k8s.io/api type or one of this package's CRD mirrors).
type Object struct {
	Kind, Namespace, Name string
	Value                 any
}

// Build runs kustomize on dir (as `kubectl kustomize dir`) and decodes every
// object strictly: an unknown kind or an unknown field is an error.
func Build(dir string) ([]Object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []Object
	for _, r := range rm.Resources() {
		js, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", r.GetKind(), r.GetName(), err)
		}
		v, err := decodeStrict(r.GetApiVersion(), r.GetKind(), js)
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", r.GetKind(), r.GetNamespace(), r.GetName(), err)
		}
		out = append(out, Object{Kind: r.GetKind(), Namespace: r.GetNamespace(), Name: r.GetName(), Value: v})
	}
	return out, nil
}

func newTyped(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}, nil
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "v1/Secret":
		return &corev1.Secret{}, nil
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1/PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, nil
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}, nil
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, nil
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "cert-manager.io/v1/Issuer":
		return &Issuer{}, nil
	case "cert-manager.io/v1/Certificate":
		return &Certificate{}, nil
	case "monitoring.coreos.com/v1/PodMonitor":
		return &PodMonitor{}, nil
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &ServiceMonitor{}, nil
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &PrometheusRule{}, nil
	}
	return nil, fmt.Errorf("unexpected kind %s %s", apiVersion, kind)
}

func decodeStrict(apiVersion, kind string, js []byte) (any, error) {
	v, err := newTyped(apiVersion, kind)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return nil, fmt.Errorf("strict decode: %w", err)
	}
	return v, nil
}

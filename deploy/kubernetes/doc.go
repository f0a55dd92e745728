// Package kubernetes holds Loupe's Kubernetes manifests (a kustomize base,
// overlays and components) and the tests that build them with kustomize,
// decode every object strictly into its API type and check the security
// policy (see docs/install.md).
package kubernetes

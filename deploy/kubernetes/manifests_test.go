package kubernetes

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// privilegedOverlays may run containers privileged: true; each is
// documented in docs/install.md and docs/threat-model.md.
var privilegedOverlays = map[string]bool{"overlays/privileged": true}

// buildDirs copies deploy/kubernetes to a temporary directory, writes a
// generated PKI where overlays/secret-tls expects its PEM files, and returns
// the directories to build (base and every overlay) under that copy.
func buildDirs(t *testing.T) (root string, dirs []string) {
	t.Helper()
	root = t.TempDir()
	if err := os.CopyFS(root, os.DirFS(".")); err != nil {
		t.Fatal(err)
	}
	tlsDir := filepath.Join(root, "overlays/secret-tls/tls")
	pki, err := tlsutil.GeneratePKI(filepath.Join(root, "pki"), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	for dst, src := range map[string]string{"ca.crt": pki.CAFile, "collector.crt": pki.ServerCert, "collector.key": pki.ServerKey,
		"agent.crt": pki.Clients["node-1"][0], "agent.key": pki.Clients["node-1"][1]} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tlsDir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dirs = []string{"base"}
	ents, err := os.ReadDir(filepath.Join(root, "overlays"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		dirs = append(dirs, "overlays/"+e.Name())
	}
	return root, dirs
}

func TestManifestsBuildAndDecodeStrictly(t *testing.T) {
	root, dirs := buildDirs(t)
	if len(dirs) < 5 {
		t.Fatalf("expected base and at least 4 overlays, got %v", dirs)
	}
	for _, d := range dirs {
		t.Run(d, func(t *testing.T) {
			objs, err := Build(filepath.Join(root, d))
			if err != nil {
				t.Fatal(err)
			}
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[o.Kind]++
				if o.Kind != "Namespace" && o.Namespace != "loupe" {
					t.Errorf("%s %s is in namespace %q, want loupe", o.Kind, o.Name, o.Namespace)
				}
			}
			for _, k := range []string{"Namespace", "ServiceAccount", "DaemonSet", "Deployment", "Service", "PersistentVolumeClaim", "NetworkPolicy"} {
				if k == "PersistentVolumeClaim" && d == "overlays/postgres" {
					continue // the collectors keep nothing on disk
				}
				if kinds[k] == 0 {
					t.Errorf("no %s in %s", k, d)
				}
			}
			checkPolicy(t, objs, privilegedOverlays[d])
			checkSecretsExist(t, d, objs)
		})
	}
}

// checkSecretsExist: every overlay that provides TLS provides both Secrets
// the pods mount (as a Secret or a cert-manager Certificate).
func checkSecretsExist(t *testing.T, dir string, objs []Object) {
	if dir == "base" {
		return
	}
	have := map[string]bool{}
	for _, o := range objs {
		switch v := o.Value.(type) {
		case *corev1.Secret:
			have[v.Name] = true
		case *Certificate:
			have[v.Spec.SecretName] = true
		}
	}
	for _, o := range objs {
		spec := podSpec(o)
		if spec == nil {
			continue
		}
		for _, vol := range spec.Volumes {
			if vol.Secret != nil && !have[vol.Secret.SecretName] {
				t.Errorf("%s %s mounts Secret %s that %s does not provide", o.Kind, o.Name, vol.Secret.SecretName, dir)
			}
		}
	}
}

func podSpec(o Object) *corev1.PodSpec {
	switch v := o.Value.(type) {
	case *appsv1.DaemonSet:
		return &v.Spec.Template.Spec
	case *appsv1.Deployment:
		return &v.Spec.Template.Spec
	}
	return nil
}

// checkPolicy: images pinned, resources set, read-only root filesystems,
// no privileged containers (unless allowed), no token automount, probes.
func checkPolicy(t *testing.T, objs []Object, allowPrivileged bool) {
	t.Helper()
	for _, o := range objs {
		spec := podSpec(o)
		if spec == nil {
			continue
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s %s: automountServiceAccountToken must be false (no Kubernetes API access)", o.Kind, o.Name)
		}
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			where := o.Kind + " " + o.Name + " container " + c.Name
			if !pinned(c.Image) {
				t.Errorf("%s: image %q is not pinned to a version tag or digest", where, c.Image)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: cpu/memory requests and a memory limit are required", where)
			}
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: readOnlyRootFilesystem must be true", where)
			}
			if sc != nil && sc.Privileged != nil && *sc.Privileged && !allowPrivileged {
				t.Errorf("%s: privileged: true outside a documented overlay", where)
			}
			if !allowPrivileged && (sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL")) {
				t.Errorf("%s: capabilities must drop ALL and add back only what is needed", where)
			}
			if c.LivenessProbe == nil || c.ReadinessProbe == nil {
				t.Errorf("%s: liveness and readiness probes are required", where)
			}
		}
	}
}

func pinned(image string) bool {
	if strings.Contains(image, "@sha256:") {
		return true
	}
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return false
	}
	tag := image[i+1:]
	return tag != "" && tag != "latest"
}

func TestPinned(t *testing.T) {
	for img, want := range map[string]bool{"a/b:v1.2.3": true, "a/b@sha256:0123": true, "a/b": false, "a/b:latest": false,
		"registry:5000/b": false, "registry:5000/b:v1": true} {
		if pinned(img) != want {
			t.Errorf("pinned(%q) = %v, want %v", img, !want, want)
		}
	}
}

// TestAgentDaemonSet checks what the agent needs from the node and what it
// must not get, in the base every overlay builds on.
func TestAgentDaemonSet(t *testing.T) {
	ds := AgentDaemonSet(t, "base")
	spec := ds.Spec.Template.Spec
	if !spec.HostPID || spec.PriorityClassName != "system-node-critical" {
		t.Errorf("hostPID %v priorityClassName %q", spec.HostPID, spec.PriorityClassName)
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "" {
		t.Errorf("tolerations %+v: want one that tolerates every taint", spec.Tolerations)
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		t.Errorf("update strategy %q", ds.Spec.UpdateStrategy.Type)
	}
	c := spec.Containers[0]
	var nodeEnv bool
	for _, e := range c.Env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			nodeEnv = true
		}
	}
	if !nodeEnv {
		t.Error("NODE_NAME must come from the downward API (spec.nodeName)")
	}
	if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("probes %s %s", c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
	}
	caps := c.SecurityContext.Capabilities.Add
	for _, forbidden := range []corev1.Capability{"SYS_ADMIN", "NET_ADMIN", "SYS_MODULE", "ALL"} {
		if slices.Contains(caps, forbidden) {
			t.Errorf("capability %s must not be added", forbidden)
		}
	}
	for _, need := range []corev1.Capability{"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"} {
		if !slices.Contains(caps, need) {
			t.Errorf("capability %s missing", need)
		}
	}
	// Every capability is explained in the threat model.
	doc, err := os.ReadFile("../../docs/threat-model.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range caps {
		if !strings.Contains(string(doc), "`CAP_"+string(cp)+"`") {
			t.Errorf("docs/threat-model.md does not explain CAP_%s", cp)
		}
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	writable := map[string]bool{}
	for _, m := range c.VolumeMounts {
		v := vols[m.Name]
		if v.HostPath != nil && !m.ReadOnly {
			writable[v.HostPath.Path] = true
		}
	}
	if m := vols["tls"].Secret; m == nil || m.DefaultMode == nil || *m.DefaultMode != 0o400 {
		t.Errorf("the TLS Secret must be mounted with mode 0400: %+v", m)
	}
	if len(writable) != 1 || !writable["/var/lib/loupe"] {
		t.Errorf("writable host paths %v: only /var/lib/loupe (spool, layer cache) may be writable", writable)
	}
	for _, host := range []string{"/proc", "/run/containerd", "/var/lib/containerd", "/sys/fs/cgroup", "/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/bpf"} {
		if _, ok := HostMount(ds, host); !ok {
			t.Errorf("host path %s is not mounted", host)
		}
	}
}

func TestNetworkPolicyAdmitsOnlyAgentsToGRPC(t *testing.T) {
	objs, err := Build("base")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		np, ok := o.Value.(*networkingv1.NetworkPolicy)
		if !ok {
			continue
		}
		if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "loupe-collector" {
			t.Fatalf("policy selects %v", np.Spec.PodSelector.MatchLabels)
		}
		for _, r := range np.Spec.Ingress {
			for _, p := range r.Ports {
				if p.Port.IntValue() != 7443 {
					continue
				}
				for _, f := range r.From {
					if f.NamespaceSelector != nil || (f.PodSelector != nil && f.PodSelector.MatchLabels["app.kubernetes.io/name"] != "loupe-agent") {
						t.Errorf("gRPC port admits %+v", f)
					}
				}
			}
		}
		return
	}
	t.Fatal("no NetworkPolicy")
}

// TestMonitorsMatchAlertRules: the scrape jobs and the node label are what
// deploy/prometheus/rules.yaml selects on.
func TestMonitorsMatchAlertRules(t *testing.T) {
	root, _ := buildDirs(t)
	objs, err := Build(filepath.Join(root, "overlays/full"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile("../prometheus/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pm *PodMonitor
	var podLabels map[string]string
	for _, o := range objs {
		switch v := o.Value.(type) {
		case *PodMonitor:
			pm = v
		case *appsv1.DaemonSet:
			podLabels = v.Spec.Template.Labels
		}
	}
	if pm == nil {
		t.Fatal("no PodMonitor in overlays/full")
	}
	job := podLabels[pm.Spec.JobLabel]
	if !strings.Contains(string(rules), `job="`+job+`"`) {
		t.Errorf("agent scrape job %q (pod label %q) is not the job the alert rules select", job, pm.Spec.JobLabel)
	}
	node := false
	for _, r := range pm.Spec.PodMetricsEndpoints[0].Relabelings {
		node = node || (r.TargetLabel == "node" && slices.Contains(r.SourceLabels, "__meta_kubernetes_pod_node_name"))
	}
	if !node || !strings.Contains(string(rules), "by (node)") {
		t.Error("the PodMonitor must set the node label the alert rules group by")
	}
}

// TestPostgresOverlay: N stateless collectors on the DSN of a Secret, no
// volume claim, spread over nodes, rolling one at a time, with a
// disruption budget.
func TestPostgresOverlay(t *testing.T) {
	root, _ := buildDirs(t)
	objs, err := Build(filepath.Join(root, "overlays/postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var dep *appsv1.Deployment
	pdb := false
	for _, o := range objs {
		switch v := o.Value.(type) {
		case *appsv1.Deployment:
			if v.Name == "loupe-collector" {
				dep = v
			}
		case *corev1.PersistentVolumeClaim:
			t.Errorf("the postgres overlay still claims a volume: %s", v.Name)
		case *policyv1.PodDisruptionBudget:
			pdb = v.Spec.Selector.MatchLabels["app.kubernetes.io/name"] == "loupe-collector"
		}
	}
	if dep == nil || dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 || dep.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
		t.Fatalf("collector Deployment = %+v, want ≥ 2 replicas rolling", dep)
	}
	if !pdb {
		t.Error("no PodDisruptionBudget for the collectors")
	}
	c := dep.Spec.Template.Spec.Containers[0]
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--db") {
			t.Errorf("collector args still set %s", a)
		}
	}
	dsn := false
	for _, e := range c.Env {
		if e.Name == "LOUPE_DB" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == "loupe-collector-db" && e.ValueFrom.SecretKeyRef.Key == "dsn" {
			dsn = true
		}
	}
	if !dsn {
		t.Errorf("collector env %v: want LOUPE_DB from Secret loupe-collector-db key dsn", c.Env)
	}
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			t.Errorf("collector mounts the claim %s", v.PersistentVolumeClaim.ClaimName)
		}
	}
	if len(dep.Spec.Template.Spec.TopologySpreadConstraints) == 0 {
		t.Error("replicas are not spread over nodes")
	}
}

// TestConsoleComponent builds components/console on the base and on the
// postgres overlay (which replaces the collector's args, so the order of
// components matters): the console flags, its port on the Pod and the
// Service, the token Secret mounted read-only, and a NetworkPolicy rule.
// TestListenerComponents builds the components that open a port of the
// collector (the web console, the audit webhook) on base and on the
// PostgreSQL overlay (which replaces the collector's args): the flags, the
// port on the pod and the Service, the token Secret mounted read-only, and
// the NetworkPolicy rule for the port.
func TestListenerComponents(t *testing.T) {
	root, _ := buildDirs(t)
	for _, c := range []struct {
		component, port, secret, mount string
		number                         int32
		args                           []string
		from                           func(networkingv1.NetworkPolicyPeer) bool
	}{
		{"console", "console", "loupe-console-tokens", "/etc/loupe/console", 8443,
			[]string{"--console-listen=:8443", "--console-token-file=/etc/loupe/console/tokens"},
			func(p networkingv1.NetworkPolicyPeer) bool {
				return p.NamespaceSelector != nil && p.NamespaceSelector.MatchLabels["loupe.dev/console"] == "allow"
			}},
		{"audit", "audit", "loupe-audit-tokens", "/etc/loupe/audit", 8444,
			[]string{"--audit-listen=:8444", "--audit-token-file=/etc/loupe/audit/tokens"},
			func(p networkingv1.NetworkPolicyPeer) bool { return p.IPBlock != nil && p.IPBlock.CIDR != "" }},
	} {
		for _, parent := range []string{"base", "overlays/postgres"} {
			t.Run(c.component+" on "+parent, func(t *testing.T) {
				dir := filepath.Join(root, "test-"+c.component+"-"+strings.ReplaceAll(parent, "/", "-"))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../" + parent +
					"\ncomponents:\n  - ../components/" + c.component + "\n"
				if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
					t.Fatal(err)
				}
				objs, err := Build(dir)
				if err != nil {
					t.Fatal(err)
				}
				var (
					dep *appsv1.Deployment
					svc *corev1.Service
					np  *networkingv1.NetworkPolicy
				)
				for _, o := range objs {
					switch v := o.Value.(type) {
					case *appsv1.Deployment:
						if v.Name == "loupe-collector" {
							dep = v
						}
					case *corev1.Service:
						if v.Name == "loupe-collector" {
							svc = v
						}
					case *networkingv1.NetworkPolicy:
						if v.Name == "loupe-collector" {
							np = v
						}
					}
				}
				if dep == nil || svc == nil || np == nil {
					t.Fatalf("missing objects: deployment %v service %v networkpolicy %v", dep != nil, svc != nil, np != nil)
				}
				ctr := dep.Spec.Template.Spec.Containers[0]
				for _, want := range append(c.args, "--tls-cert=/etc/loupe/tls/tls.crt") {
					if !slices.Contains(ctr.Args, want) {
						t.Errorf("collector args %v lack %s", ctr.Args, want)
					}
				}
				if !slices.ContainsFunc(ctr.Ports, func(p corev1.ContainerPort) bool { return p.Name == c.port && p.ContainerPort == c.number }) {
					t.Errorf("container ports %v: no %s %d", ctr.Ports, c.port, c.number)
				}
				vol := c.component + "-tokens"
				if !slices.ContainsFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool {
					return m.Name == vol && m.MountPath == c.mount && m.ReadOnly
				}) {
					t.Errorf("volume mounts %v: no read-only %s at %s", ctr.VolumeMounts, vol, c.mount)
				}
				if !slices.ContainsFunc(dep.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
					return v.Name == vol && v.Secret != nil && v.Secret.SecretName == c.secret
				}) {
					t.Errorf("volumes %v: no Secret %s", dep.Spec.Template.Spec.Volumes, c.secret)
				}
				if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == c.port && p.Port == c.number }) {
					t.Errorf("service ports %v: no %s %d", svc.Spec.Ports, c.port, c.number)
				}
				if !slices.ContainsFunc(np.Spec.Ingress, func(r networkingv1.NetworkPolicyIngressRule) bool {
					return len(r.Ports) == 1 && r.Ports[0].Port.IntValue() == int(c.number) && len(r.From) == 1 && c.from(r.From[0])
				}) {
					t.Errorf("network policy %+v: no rule for port %d", np.Spec.Ingress, c.number)
				}
			})
		}
	}
}

package kubernetes

import (
	"path/filepath"
	"runtime"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// Dir is the directory of these manifests in the source tree.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// AgentDaemonSet builds dir (relative to Dir()) and returns the loupe-agent
// DaemonSet; tests elsewhere (the CRI test that runs the agent image) take
// the pod's mounts, capabilities and env from it.
func AgentDaemonSet(t testing.TB, dir string) *appsv1.DaemonSet {
	t.Helper()
	objs, err := Build(filepath.Join(Dir(), dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if ds, ok := o.Value.(*appsv1.DaemonSet); ok && ds.Name == "loupe-agent" {
			return ds
		}
	}
	t.Fatalf("no loupe-agent DaemonSet in %s", dir)
	return nil
}

// HostMount returns the agent container's mount of hostPath.
func HostMount(ds *appsv1.DaemonSet, hostPath string) (corev1.VolumeMount, bool) {
	vols := map[string]corev1.Volume{}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, m := range ds.Spec.Template.Spec.Containers[0].VolumeMounts {
		if v := vols[m.Name]; v.HostPath != nil && v.HostPath.Path == hostPath {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

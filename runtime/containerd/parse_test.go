package containerd

import (
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/loupe-dev/loupe/runtime"
)

func TestParseOverlayOptions(t *testing.T) {
	m, err := ParseOverlayOptions([]string{"index=off", "workdir=/s/3/work", "upperdir=/s/3/fs", "lowerdir=/s/2/fs:/s/1/fs"})
	if err != nil || !slices.Equal(m.Lower, []string{"/s/2/fs", "/s/1/fs"}) || m.Upper != "/s/3/fs" || m.Work != "/s/3/work" {
		t.Fatalf("got %+v, %v", m, err)
	}
	// Read-only view (no upper), escaped colon, the new-mount-API form.
	m, err = ParseOverlayOptions([]string{"ro", `lowerdir=/a\:b:/c`})
	if err != nil || !slices.Equal(m.Lower, []string{"/a:b", "/c"}) || m.Upper != "" {
		t.Fatalf("got %+v, %v", m, err)
	}
	m, err = ParseOverlayOptions([]string{"lowerdir+=/x", "lowerdir+=/y", "upperdir=/u", "workdir=/w"})
	if err != nil || !slices.Equal(m.Lower, []string{"/x", "/y"}) {
		t.Fatalf("got %+v, %v", m, err)
	}
	for _, bad := range [][]string{
		nil,
		{"upperdir=/u", "workdir=/w"},
		{"lowerdir=relative/path"},
		{"lowerdir=/a", "upperdir=/u"},
		{"lowerdir=/a", "lowerdir=/b"},
		{"lowerdir=/a::/b"},
		{"lowerdir=" + strings.Repeat("/l:", 600) + "/l"},
	} {
		if m, err := ParseOverlayOptions(bad); err == nil {
			t.Errorf("%q: accepted as %+v", bad, m)
		}
	}
}

func FuzzParseOverlayOptions(f *testing.F) {
	f.Add("lowerdir=/a:/b", "upperdir=/u", "workdir=/w")
	f.Add(`lowerdir=/a\:b`, "lowerdir+=/c", "index=off")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		m, err := ParseOverlayOptions([]string{a, b, c})
		if err != nil {
			return
		}
		if len(m.Lower) == 0 || len(m.Lower) > maxLowerDirs {
			t.Fatalf("accepted %d lower dirs", len(m.Lower))
		}
		for _, p := range append(m.Lower, m.Upper, m.Work) {
			if p != "" && !strings.HasPrefix(p, "/") {
				t.Fatalf("accepted relative path %q", p)
			}
		}
	})
}

const runcLog = `{"level":"warning","msg":"something harmless","time":"2026-11-22T07:00:00Z"}
{"level":"error","msg":"exec failed: unable to start container process: exec: \"/old\": stat /old: no such file or directory","time":"2026-11-22T07:00:01Z"}
not json at all
{"level":"error","msg":"exec failed: unable to start container process: exec: \"/bin/sh\": stat /bin/sh: no such file or directory","time":"2026-11-22T07:05:00Z"}
`

func TestLastRuncError(t *testing.T) {
	e, ok := LastRuncError([]byte(runcLog), time.Time{})
	if !ok || !strings.Contains(e.Msg, `"/bin/sh"`) {
		t.Fatalf("got %+v %v", e, ok)
	}
	path, reason, ok := ParseExecError(e.Msg)
	if !ok || path != "/bin/sh" || reason != "stat /bin/sh: no such file or directory" {
		t.Fatalf("ParseExecError: %q %q %v", path, reason, ok)
	}
	// Entries older than the exec are not blamed on it.
	if e, ok := LastRuncError([]byte(runcLog), time.Date(2026, 11, 22, 7, 6, 0, 0, time.UTC)); ok {
		t.Errorf("old entry returned: %+v", e)
	}
	if _, ok := LastRuncError(nil, time.Time{}); ok {
		t.Error("error found in an empty log")
	}
	// Only the tail of a huge log is read, and still parsed.
	big := strings.Repeat(`{"level":"info","msg":"x"}`+"\n", maxRuncLog/20) + runcLog
	if e, ok := LastRuncError([]byte(big), time.Time{}); !ok || !strings.Contains(e.Msg, "/bin/sh") {
		t.Errorf("tail of a big log: %+v %v", e, ok)
	}
	for _, msg := range []string{
		`exec failed: exec: "sh": executable file not found in $PATH`,
		`exec: "/with \"quote\"": permission denied`,
	} {
		if p, r, ok := ParseExecError(msg); !ok || p == "" || r == "" {
			t.Errorf("%s: %q %q %v", msg, p, r, ok)
		}
	}
	if _, _, ok := ParseExecError("container_linux.go:380: starting container process caused: something"); ok {
		t.Error("non-exec error parsed as exec error")
	}
}

func FuzzRuncLog(f *testing.F) {
	f.Add([]byte(runcLog))
	f.Add([]byte(`{"level":"error","msg":"exec: \"\\x\": y","time":"bad"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, ok := LastRuncError(data, time.Time{})
		if ok && e.Level != "error" && e.Level != "fatal" {
			t.Fatalf("non-error entry %+v", e)
		}
		_, _, _ = ParseExecError(string(data))
	})
}

func TestSystemdCgroupPath(t *testing.T) {
	for in, want := range map[string]string{
		"/kubepods/besteffort/pod1/abc":                     "/kubepods/besteffort/pod1/abc",
		"kubepods-besteffort-pod1.slice:cri-containerd:abc": "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope",
		"system.slice:docker:abc":                           "/system.slice/docker-abc.scope",
		":cri-containerd:abc":                               "/cri-containerd-abc.scope",
	} {
		if got, err := SystemdCgroupPath(in); err != nil || got != want {
			t.Errorf("%s: got %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a:b", "x.slice:p:", "a--b.slice:p:n", "notaslice:p:n", "a.slice:p:../../etc"} {
		if got, err := SystemdCgroupPath(bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}

func FuzzSystemdCgroupPath(f *testing.F) {
	f.Add("kubepods-burstable-podx.slice:cri-containerd:abc")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := SystemdCgroupPath(s)
		if err == nil && !strings.HasPrefix(p, "/") {
			t.Fatalf("relative result %q", p)
		}
		if err != nil || strings.HasPrefix(s, "/") {
			return
		}
		for _, comp := range strings.Split(p[1:], "/") {
			if comp == "" || comp == "." || comp == ".." {
				t.Fatalf("%q → %q has component %q", s, p, comp)
			}
		}
	})
}

func TestIdentity(t *testing.T) {
	var c runtime.Container
	identity(&c, map[string]string{
		labelKind: "container", labelPodName: "api-7d9f.abc", labelPodNamespace: "payments",
		labelPodUID: "6f1c1a8e-0a0b-4c4d-9e9f-0123456789ab", labelContainerName: "app",
	})
	if c.Kind != runtime.KindContainer || c.Pod.Name != "api-7d9f.abc" || c.ContainerName != "app" || len(c.Warnings) != 0 {
		t.Errorf("good labels: %+v", c)
	}
	c = runtime.Container{}
	identity(&c, map[string]string{labelKind: "sandbox", labelPodName: "UPPER", labelPodNamespace: "ns\x00evil", labelPodUID: "uid with spaces"})
	if c.Kind != runtime.KindSandbox || c.Pod != (runtime.Pod{}) || len(c.Warnings) != 3 {
		t.Errorf("bad labels: %+v", c)
	}
	// Not a CRI container: nothing is missing.
	c = runtime.Container{}
	identity(&c, nil)
	if c.Kind != runtime.KindUnknown || len(c.Warnings) != 0 {
		t.Errorf("no labels: %+v", c)
	}
	c = runtime.Container{}
	identity(&c, map[string]string{labelKind: strings.Repeat("k", 1000)})
	if len(c.Warnings) == 0 || len(c.Warnings[0]) > 200 {
		t.Errorf("long unknown kind: %q", c.Warnings)
	}
}

func TestSpecFacts(t *testing.T) {
	s := &specs.Spec{
		Process: &specs.Process{
			User: specs.User{UID: 65532, GID: 65532},
			Args: []string{"/app", "--serve"},
			Env:  []string{"PATH=/bin", "TOKEN=secret", "NOVALUE"},
			Capabilities: &specs.LinuxCapabilities{
				Bounding: []string{"CAP_CHOWN", "CAP_SYS_ADMIN"}, Effective: []string{"CAP_CHOWN"},
			},
		},
		Root:  &specs.Root{Readonly: true},
		Linux: &specs.Linux{CgroupsPath: "/p/c"},
	}
	f := specFacts(s)
	if f.UID != 65532 || !f.ReadOnlyRootfs || !slices.Equal(f.EnvNames, []string{"PATH", "TOKEN", "NOVALUE"}) || f.CgroupsPath != "/p/c" {
		t.Errorf("%+v", f)
	}
	if !f.Privileged {
		t.Error("CAP_SYS_ADMIN and nothing masked should count as privileged")
	}
	s.Linux.MaskedPaths = []string{"/proc/kcore"}
	if specFacts(s).Privileged {
		t.Error("masked paths: not privileged")
	}
	if f := specFacts(nil); f.Args != nil {
		t.Error("nil spec")
	}
}

// TestSystemdDriverShapes checks the conversion on the shapes a kubelet and
// containerd with the systemd cgroup driver (SystemdCgroup = true) produce:
// kubelet's CgroupParent per QoS class with the pod UID's dashes as
// underscores, containerd's "<parent>:cri-containerd:<id>" cgroupsPath, and
// the unified line of /proc/<pid>/cgroup that the container's process shows
// on pure-v2 and hybrid hosts — the spec fallback must name the same cgroup.
func TestSystemdDriverShapes(t *testing.T) {
	const (
		uid = "8a4a5e3c_1f2b_4c3d_9e8f_7a6b5c4d3e2f" // pod UID 8a4a5e3c-1f2b-4c3d-9e8f-7a6b5c4d3e2f
		id  = "3f6c0a9d2b8e4f71a5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345"
	)
	for qos, parent := range map[string]string{
		"guaranteed": "kubepods-pod" + uid + ".slice",
		"burstable":  "kubepods-burstable-pod" + uid + ".slice",
		"besteffort": "kubepods-besteffort-pod" + uid + ".slice",
	} {
		var want string
		switch qos {
		case "guaranteed":
			want = "/kubepods.slice/kubepods-pod" + uid + ".slice/cri-containerd-" + id + ".scope"
		default:
			want = "/kubepods.slice/kubepods-" + qos + ".slice/kubepods-" + qos + "-pod" + uid + ".slice/cri-containerd-" + id + ".scope"
		}
		got, err := SystemdCgroupPath(parent + ":cri-containerd:" + id)
		if err != nil || got != want {
			t.Errorf("%s: got %q %v, want %q", qos, got, err, want)
			continue
		}
		for name, procCgroup := range map[string]string{
			"pure v2": "0::" + want + "\n",
			"hybrid":  "12:pids:" + want + "\n11:memory:" + want + "\n1:name=systemd:" + want + "\n0::" + want + "\n",
		} {
			pc, err := runtime.ParseProcCgroup([]byte(procCgroup))
			if err != nil || pc.Unified != got {
				t.Errorf("%s, %s: /proc/<pid>/cgroup gives %q %v, the spec %q", qos, name, pc.Unified, err, got)
			}
		}
	}
	// k3s and RKE2 with the systemd driver use the same kubepods slices; an
	// agent-run container outside Kubernetes (ctr, nerdctl) gets system.slice.
	if got, err := SystemdCgroupPath("system.slice:nerdctl:" + id); err != nil || got != "/system.slice/nerdctl-"+id+".scope" {
		t.Errorf("nerdctl: %q %v", got, err)
	}
}

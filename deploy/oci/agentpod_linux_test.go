package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/deploy/kubernetes"
	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// TestAgentImageRunsAsDaemonSetPod is the deployment end to end without a
// cluster: the agent image built by `make oci` is imported into a real
// containerd and started through CRI the way kubelet starts the DaemonSet's
// pod — host PID and network, the manifest's host mounts, capabilities,
// read-only root filesystem, seccomp/AppArmor settings and env (NODE_NAME
// from the downward API) — and must become ready and report a shell attempt
// in a neighbouring distroless pod to a collector running on the host.
func TestAgentImageRunsAsDaemonSetPod(t *testing.T) {
	env := testenv.StartContainerd(t)
	bin := buildBinaries(t)
	out := t.TempDir()
	if err := run(bin, out, "loupe.test", testVersion, "0c1test", "amd64", slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	names := env.ImportImageTar(t, filepath.Join(out, "loupe-agent.tar"))
	if want := "loupe.test/loupe-agent:" + testVersion; len(names) != 1 || names[0] != want {
		t.Fatalf("imported %v, want [%s]", names, want)
	}

	// The collector runs on the host, plaintext on loopback.
	grpcAddr, httpAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	coll := exec.Command(filepath.Join(bin, "loupe-collector"), "--insecure", "--grpc-listen", grpcAddr, "--http-listen", httpAddr,
		"--db", "sqlite://"+filepath.Join(t.TempDir(), "c.db"))
	var collLog strings.Builder
	coll.Stdout, coll.Stderr = &collLog, &collLog
	if err := coll.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		coll.Process.Signal(syscall.SIGTERM)
		coll.Wait()
		if t.Failed() {
			t.Logf("---- collector ----\n%s", collLog.String())
		}
	})
	testenv.WaitHTTP200(t, "http://"+httpAddr+"/readyz", 20*time.Second, nil)

	ds := kubernetes.AgentDaemonSet(t, "base")
	if !ds.Spec.Template.Spec.HostPID || !ds.Spec.Template.Spec.HostNetwork {
		t.Fatal("the DaemonSet must use hostPID and hostNetwork (RunPod with HostPID gives both)")
	}
	agentHTTP := testenv.FreeAddr(t)
	cfg := containerFromManifest(t, env, &ds.Spec.Template.Spec.Containers[0], ds.Spec.Template.Spec.Volumes, map[string]string{
		"--collector":             grpcAddr,
		"--containerd-socket":     env.Address(),
		"--containerd-state":      env.State(),
		"--containerd-namespace":  env.Namespace(),
		"--http-listen":           agentHTTP,
		"--ca":                    "",
		"--tls-cert":              "",
		"--tls-key":               "",
		"--collector-server-name": "",
		"--insecure":              "true",
	})
	cfg.Image = names[0]
	// The harness's containerd keeps its root, state and socket below env.Dir():
	// the node's /run/containerd and /var/lib/containerd, seen at the same place.
	cfg.Mounts = append(cfg.Mounts, testenv.HostMount{HostPath: env.Dir(), ContainerPath: "/host" + env.Dir(), ReadOnly: true})

	pod := env.RunPod(t, testenv.PodConfig{Name: "loupe-agent-x7k2p", Namespace: "loupe", HostPID: true})
	agent := pod.StartHost(t, cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- agent container log ----\n%s", agent.Logs(t))
		}
	})
	testenv.WaitHTTP200(t, "http://"+agentHTTP+"/readyz", 60*time.Second, func() error {
		if st := agent.Status(t).GetStatus(); st.GetState() == 2 { // CONTAINER_EXITED
			return fmt.Errorf("agent container exited (code %d): %s\n%s", st.GetExitCode(), st.GetReason(), agent.Logs(t))
		}
		return nil
	})
	checkCaps(t, agent.PID(t), cfg.AddCapabilities)
	metrics := testenv.HTTPGet(t, "http://"+agentHTTP+"/metrics")
	if !strings.Contains(metrics, `version="`+testVersion+`"`) {
		t.Errorf("loupe_build_info does not report %s", testVersion)
	}

	// A neighbouring distroless pod, and a kubectl-exec-style shell attempt.
	dlPod := env.RunPod(t, testenv.PodConfig{Name: "api-0", Namespace: "payments"})
	app := dlPod.Start(t, testenv.ContainerConfig{Name: "api", Image: env.Image(t, testenv.Distroless)})
	conn, err := collector.Dial(context.Background(), grpcAddr, tlsutil.ClientOptions{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := app.Exec(t, []string{"/bin/sh", "-c", "id"}, 5*time.Second); err == nil {
			t.Fatal("exec of /bin/sh succeeded in the distroless container")
		}
		f := findShellAttempt(t, conn)
		if f != nil {
			if f.GetNode() != "oci-node" {
				t.Errorf("finding node %q, want oci-node (NODE_NAME from the downward API)", f.GetNode())
			}
			t.Logf("finding: %s %s %s", f.GetKind().ShortName(), f.GetSeverity().ShortName(), f.GetSummary())
			checkDocumented(t, testenv.HTTPGet(t, "http://"+agentHTTP+"/metrics")+testenv.HTTPGet(t, "http://"+httpAddr+"/metrics"))
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no RUNTIME_EXEC_FAILED finding for /bin/sh in payments/api-0 after 60 s")
		}
		time.Sleep(2 * time.Second)
	}
}

func findShellAttempt(t *testing.T, conn *grpc.ClientConn) *loupev1.Finding {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := loupev1.NewCollectorClient(conn).Query(ctx, &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_RUNTIME_EXEC_FAILED}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range r.GetFindings() {
			c := f.GetContainer()
			if c.GetPod() == "api-0" && c.GetNamespace() == "payments" &&
				(f.GetProcess().GetFilename() == "/bin/sh" || strings.Contains(f.GetSummary(), "/bin/sh")) {
				return f
			}
		}
	}
}

// containerFromManifest turns the DaemonSet's container into what kubelet
// would ask of CRI: host mounts (hostPath volumes, emptyDirs as fresh
// directories; the state dir in a temporary directory instead of the node's),
// capabilities, security settings, env with the downward API resolved, and
// args with the values in override replaced ("" removes a flag).
func containerFromManifest(t *testing.T, env *testenv.Env, c *corev1.Container, vols []corev1.Volume, override map[string]string) testenv.HostContainerConfig {
	t.Helper()
	cfg := testenv.HostContainerConfig{Name: c.Name, Command: c.Command}
	seen := map[string]bool{}
	for _, a := range c.Args {
		k, _, _ := strings.Cut(a, "=")
		if v, ok := override[k]; ok {
			seen[k] = true
			if v != "" {
				cfg.Args = append(cfg.Args, k+"="+v)
			}
			continue
		}
		cfg.Args = append(cfg.Args, a)
	}
	for k, v := range override {
		if !seen[k] && v != "" {
			cfg.Args = append(cfg.Args, k+"="+v)
		}
	}
	cfg.Env = map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			cfg.Env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			cfg.Env[e.Name] = "oci-node"
		case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
			cfg.Env[e.Name] = strconv.FormatInt(c.Resources.Limits.Memory().Value(), 10)
		default:
			t.Fatalf("env %s: downward API source %+v not handled by this test", e.Name, e.ValueFrom)
		}
	}
	byName := map[string]corev1.Volume{}
	for _, v := range vols {
		byName[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v := byName[m.Name]
		hm := testenv.HostMount{ContainerPath: m.MountPath, ReadOnly: m.ReadOnly,
			HostToContainer: m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationHostToContainer}
		switch {
		case v.HostPath != nil && v.HostPath.Path == "/var/lib/loupe":
			hm.HostPath = t.TempDir()
		case v.HostPath != nil:
			if _, err := os.Stat(v.HostPath.Path); err != nil {
				t.Logf("host path %s absent on this machine: not mounted (%v)", v.HostPath.Path, err)
				continue
			}
			hm.HostPath = v.HostPath.Path
		case v.EmptyDir != nil:
			hm.HostPath = t.TempDir()
			os.Chmod(hm.HostPath, 0o1777)
		case v.Secret != nil:
			continue // TLS material: this test talks plaintext to the collector
		default:
			t.Fatalf("volume %s: source not handled by this test", v.Name)
		}
		cfg.Mounts = append(cfg.Mounts, hm)
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("agent container has no securityContext")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Fatal("the base DaemonSet must not be privileged")
	}
	if sc.Capabilities != nil {
		for _, cp := range sc.Capabilities.Add {
			cfg.AddCapabilities = append(cfg.AddCapabilities, string(cp))
		}
		for _, cp := range sc.Capabilities.Drop {
			cfg.DropCapabilities = append(cfg.DropCapabilities, string(cp))
		}
	}
	cfg.RunAsUser = sc.RunAsUser
	cfg.ReadOnlyRootfs = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	cfg.NoNewPrivs = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
	cfg.SeccompUnconfined = sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeUnconfined
	cfg.AppArmorUnconfined = sc.AppArmorProfile != nil && sc.AppArmorProfile.Type == corev1.AppArmorProfileTypeUnconfined
	return cfg
}

// capNumbers are the capabilities the DaemonSet may add, by number (linux/capability.h).
var capNumbers = map[string]uint{"DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "KILL": 5, "SYS_PTRACE": 19, "SYS_ADMIN": 21,
	"SYS_RESOURCE": 24, "PERFMON": 38, "BPF": 39}

// checkCaps reads the agent process's effective capabilities from the host:
// exactly the manifest's, nothing more.
func checkCaps(t *testing.T, pid int, add []string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var eff uint64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			if eff, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64); err != nil {
				t.Fatal(err)
			}
		}
	}
	var want uint64
	for _, c := range add {
		n, ok := capNumbers[c]
		if !ok {
			t.Fatalf("capability %s: number unknown to this test", c)
		}
		want |= 1 << n
	}
	if eff != want {
		t.Errorf("agent CapEff %#x, want %#x (exactly %v)", eff, want, add)
	}
}

// checkDocumented: every loupe_ metric family the real agent and collector
// expose is listed in docs/metrics.md.
func checkDocumented(t *testing.T, exposition string) {
	t.Helper()
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	n, reported := 0, map[string]bool{}
	for _, line := range strings.Split(exposition, "\n") {
		if !strings.HasPrefix(line, "loupe_") {
			continue
		}
		name := strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0]
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(name, "_seconds"+suf) {
				name = strings.TrimSuffix(name, suf)
			}
		}
		n++
		if !strings.Contains(string(doc), "`"+name+"`") && !reported[name] {
			reported[name] = true
			t.Errorf("metric %s is exposed but not documented in docs/metrics.md", name)
		}
	}
	if n < 20 {
		t.Errorf("only %d loupe_ samples scraped", n)
	}
}

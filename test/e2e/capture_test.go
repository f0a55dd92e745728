package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loupe-dev/loupe/agent/capture"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/testenv"
)

// loupeCLI runs the loupe CLI with the given certificate (a PKI client name;
// "" for an offline command).
func (s *stack) loupeCLI(t *testing.T, client string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	if c, ok := s.pki.Clients[client]; ok {
		args = append(args, "--collector", s.collectorAddr, "--ca", s.pki.CAFile, "--tls-cert", c[0], "--tls-key", c[1])
	}
	cmd := exec.Command(filepath.Join(binaries(t), "loupe"), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func untar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name], _ = io.ReadAll(tr)
	}
}

func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// TestCapture is loupe capture end to end: CLI → collector (mTLS, admin
// identity) → the agent's Control stream → a bundle of a real CRI
// distroless container after a dropped binary was started in it → stored,
// recorded as a CAPTURE finding, listed, downloaded and verified.
func TestCapture(t *testing.T) {
	env := testenv.StartContainerd(t)
	distroless := env.Image(t, testenv.Distroless)
	s := &stack{env: env, node: "e2e-node", dbDir: t.TempDir(), agentState: t.TempDir()}
	s.init(t)
	s.startCollector(t)
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rules, []byte("version: 1\nrules: []\ncapture:\n  enabled: true\n  namespaces: [payments]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.startAgent(t, "--rules", rules)

	listen := testenv.FreeAddr(t)
	api := env.RunPod(t, testenv.PodConfig{Name: "api-7d9f", Namespace: "payments"})
	app := api.Start(t, testenv.ContainerConfig{Name: "app", Image: distroless, Env: map[string]string{"LOUPE_TESTAPP_LISTEN": listen}})
	other := env.RunPod(t, testenv.PodConfig{Name: "web-1", Namespace: "frontend"})
	web := other.Start(t, testenv.ContainerConfig{Name: "web", Image: distroless})
	for _, c := range []*testenv.Container{app, web} {
		s.waitFinding(t, "IMAGE_PROFILE of "+c.Name(), 60*time.Second, &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_IMAGE_PROFILE}, ContainerId: c.ID()},
			func(*loupev1.Finding) bool { return true })
	}

	// The attack: kubectl exec sh (fails on distroless), then a dropped binary started as a second process.
	if _, err := app.Exec(t, []string{"/bin/sh", "-c", "id"}, 10*time.Second); err == nil {
		t.Fatal("exec of /bin/sh succeeded in the distroless container")
	}
	root := fmt.Sprintf("/proc/%d/root", app.PID(t))
	bin, err := os.ReadFile(root + testenv.Distroless.AppPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root+"/tmp/dropped", bin, 0o755); err != nil {
		t.Fatal(err)
	}
	app.RequestStart(t, "/tmp/dropped")
	for _, k := range []loupev1.Kind{loupev1.Kind_KIND_RUNTIME_EXEC_FAILED, loupev1.Kind_KIND_DRIFT_EXEC} {
		s.waitFinding(t, k.ShortName(), 30*time.Second, &loupev1.QueryRequest{Kinds: []loupev1.Kind{k}, ContainerId: app.ID()}, func(*loupev1.Finding) bool { return true })
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", listen); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app does not listen on %s", listen)
		}
	}

	dir := t.TempDir()
	bundle := filepath.Join(dir, "api.tar.gz")
	out, errOut, err := s.loupeCLI(t, "loupe-admin", "capture", "--pod", "payments/api-7d9f", "--reason", "INC-4711: shell attempt on api",
		"--save", bundle, "-o", "json")
	if err != nil {
		t.Fatalf("loupe capture: %v\nstderr:\n%s", err, errOut)
	}
	for _, stage := range []string{"requested", "collecting", "uploading", "stored"} {
		if !strings.Contains(errOut, stage) {
			t.Errorf("progress lacks stage %q:\n%s", stage, errOut)
		}
	}
	var info struct {
		ID          string `json:"id"`
		Sha256      string `json:"sha256"`
		Size        string `json:"size"`
		RequestedBy string `json:"requested_by"`
		FindingID   string `json:"finding_id"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(strings.Trim(strings.TrimSpace(out), "[]"))), &info); err != nil {
		t.Fatalf("capture output: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if sha256hex(raw) != info.Sha256 || !strings.Contains(info.RequestedBy, "CN=loupe-admin") {
		t.Errorf("result %+v; bundle sha256 %s", info, sha256hex(raw))
	}

	t.Run("the bundle holds the evidence", func(t *testing.T) {
		files := untar(t, bundle)
		var upper []capture.FileEntry
		json.Unmarshal(files["files.json"], &upper)
		okDropped := false
		for _, e := range upper {
			okDropped = okDropped || (e.Path == "/tmp/dropped" && e.SHA256 == sha256hex(bin) && bytes.Equal(files[e.Content], bin))
		}
		if !okDropped {
			t.Errorf("upper dir: /tmp/dropped with sha256 %s not captured: %+v", sha256hex(bin), upper)
		}
		var ps capture.Processes
		json.Unmarshal(files["processes.json"], &ps)
		exes := map[string]capture.Process{}
		for _, p := range ps.Processes {
			exes[p.Exe] = p
		}
		if p := exes["/app"]; p.ExeSHA256 != sha256hex(bin) || p.ExeFromUpper {
			t.Errorf("app process: %+v", p)
		}
		if p := exes["/tmp/dropped"]; p.ExeSHA256 != sha256hex(bin) || !p.ExeFromUpper {
			t.Errorf("dropped process: %+v", p)
		}
		listening := false
		for _, so := range ps.Sockets {
			listening = listening || (so.Local == listen && so.State == "LISTEN" && len(so.PIDs) > 0 && so.PIDs[0] == exes["/app"].PID)
		}
		if !listening {
			t.Errorf("no LISTEN socket on %s of the app: %+v", listen, ps.Sockets)
		}
		tl := string(files["timeline.jsonl"])
		for _, k := range []string{"KIND_RUNTIME_EXEC_FAILED", "KIND_DRIFT_EXEC", "KIND_IMAGE_PROFILE"} {
			if !strings.Contains(tl, k) {
				t.Errorf("timeline lacks %s", k)
			}
		}
		var m capture.Manifest
		json.Unmarshal(files[capture.ManifestName], &m)
		if m.Requester.Reason != "INC-4711: shell attempt on api" || m.Node != s.node || m.Container.Namespace != "payments" || m.AgentVersion == "" {
			t.Errorf("manifest custody: %+v %+v", m.Requester, m.Container)
		}
	})

	t.Run("verify passes, and fails after one changed byte", func(t *testing.T) {
		if out, errOut, err := s.loupeCLI(t, "", "capture", "verify", bundle, "--sha256", info.Sha256); err != nil ||
			!strings.Contains(errOut, "OK") || !strings.Contains(out, "INC-4711") {
			t.Fatalf("verify: %v\n%s\n%s", err, out, errOut)
		}
		bad := bytes.Clone(raw)
		bad[len(bad)/2] ^= 0x01
		badPath := filepath.Join(dir, "bad.tar.gz")
		os.WriteFile(badPath, bad, 0o600)
		_, errOut, err := s.loupeCLI(t, "", "capture", "verify", badPath)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(errOut, "verification failed") {
			t.Errorf("verify of a changed bundle: %v\n%s", err, errOut)
		}
	})

	t.Run("CAPTURE finding, list and get", func(t *testing.T) {
		f := s.waitFinding(t, "CAPTURE", 10*time.Second, kinds(loupev1.Kind_KIND_CAPTURE), func(f *loupev1.Finding) bool { return f.GetDetails()["capture_id"] == info.ID })
		if f.GetFile().GetSha256() != info.Sha256 || f.GetContainer().GetId() != app.ID() || f.GetDetails()["reason"] != "INC-4711: shell attempt on api" || f.GetId() != info.FindingID {
			t.Errorf("CAPTURE finding: %v", f)
		}
		out, errOut, err := s.loupeCLI(t, "loupe-admin", "capture", "list")
		if err != nil || !strings.Contains(out, info.ID) || !strings.Contains(out, "payments/api-7d9f") {
			t.Errorf("capture list: %v\n%s%s", err, out, errOut)
		}
		got := filepath.Join(dir, "got.tar.gz")
		if _, errOut, err := s.loupeCLI(t, "loupe-admin", "capture", "get", info.ID, "-o", got); err != nil {
			t.Fatalf("capture get: %v\n%s", err, errOut)
		}
		if b, _ := os.ReadFile(got); !bytes.Equal(b, raw) {
			t.Error("downloaded bundle differs from the one saved at capture time")
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, c := range []struct {
			name, client string
			args         []string
			want         string
		}{
			{"a node certificate", s.node, []string{"--pod", "payments/api-7d9f", "--reason", "x"}, "admin certificate"},
			{"no reason", "loupe-admin", []string{"--pod", "payments/api-7d9f"}, "--reason is required"},
			{"namespace not allowed by the agent's rules", "loupe-admin", []string{"--pod", "frontend/web-1", "--reason", "x"}, "allow-list"},
			{"unknown pod", "loupe-admin", []string{"--pod", "payments/nope", "--reason", "x"}, "no findings name"},
		} {
			_, errOut, err := s.loupeCLI(t, c.client, append([]string{"capture"}, c.args...)...)
			if err == nil || !strings.Contains(errOut, c.want) {
				t.Errorf("%s: err %v, stderr %q; want an error with %q", c.name, err, errOut, c.want)
			}
		}
		if _, errOut, err := s.loupeCLI(t, s.node, "capture", "list"); err == nil || !strings.Contains(errOut, "admin") {
			t.Errorf("capture list with a node certificate: %v %s", err, errOut)
		}
	})

	t.Run("--freeze, by container id", func(t *testing.T) {
		out, errOut, err := s.loupeCLI(t, "loupe-admin", "capture", "--container", app.ID()[:12], "--reason", "frozen capture", "--freeze", "-o", "json")
		if err != nil {
			t.Fatalf("%v\n%s", err, errOut)
		}
		if !strings.Contains(out, `"frozen_ms"`) {
			t.Errorf("no frozen time in the result: %s", out)
		}
		b, err := os.ReadFile(fmt.Sprintf("/sys/fs/cgroup/unified%s/cgroup.freeze", cgroupOf(t, app.PID(t))))
		if err == nil && strings.TrimSpace(string(b)) != "0" {
			t.Errorf("container left frozen: cgroup.freeze=%q", b)
		}
		// Still running after the thaw: it answers on its port.
		c, err := net.DialTimeout("tcp", listen, 2*time.Second)
		if err != nil {
			t.Fatalf("the app does not answer after the frozen capture: %v", err)
		}
		c.Close()
	})
}

// cgroupOf is the cgroup v2 path of a host process.
func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	t.Fatal("no cgroup v2 line")
	return ""
}

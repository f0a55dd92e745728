package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/testenv"
)

// TestCompliance: the agent runs distroless-baseline (from --profiles DIR)
// on every container; the distroless pod passes every control, the
// debian-like pod fails the no-shell control naming /bin/sh; a profile added
// to the directory is picked up without a restart; `loupe report hdf`
// returns HDF that validates against MITRE's exec-json schema.
func TestCompliance(t *testing.T) {
	env := testenv.StartContainerd(t)
	distroless, debian := env.Image(t, testenv.Distroless), env.Image(t, testenv.DebianLike)
	profiles := t.TempDir()
	shipped, err := os.ReadFile("../../agent/compliance/profiles/distroless-baseline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(profiles, "distroless-baseline.yaml"), shipped, 0o644); err != nil {
		t.Fatal(err)
	}
	s := &stack{env: env, node: "e2e-node", dbDir: t.TempDir(), agentState: t.TempDir()}
	s.init(t)
	s.startCollector(t)
	s.startAgent(t, "--profiles", profiles)

	nonroot := int64(65532)
	app := env.RunPod(t, testenv.PodConfig{Name: "api-7d9f", Namespace: "payments"}).
		Start(t, testenv.ContainerConfig{Name: "app", Image: distroless, RunAsUser: &nonroot})
	web := env.RunPod(t, testenv.PodConfig{Name: "web-1", Namespace: "frontend"}).
		Start(t, testenv.ContainerConfig{Name: "web", Image: debian})

	controls := func(id string) map[string]*loupev1.Control {
		out := map[string]*loupev1.Control{}
		for _, f := range s.query(t, &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_CONTROL_RESULT}, ContainerId: id}) {
			out[f.GetControl().GetProfile()+"/"+f.GetControl().GetId()] = f.GetControl()
		}
		return out
	}
	const nControls = 9
	t.Run("the distroless pod passes distroless-baseline", func(t *testing.T) {
		s.waitFinding(t, "all distroless-baseline results of the distroless pod", 60*time.Second,
			&loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_CONTROL_RESULT}, ContainerId: app.ID()},
			func(*loupev1.Finding) bool { return len(controls(app.ID())) >= nControls })
		for id, c := range controls(app.ID()) {
			if c.GetStatus() != "passed" {
				t.Errorf("%s: %s: %s (%s)", id, c.GetStatus(), c.GetMessage(), c.GetCodeDesc())
			}
			if len(c.GetNist()) == 0 || c.GetProfileVersion() == "" {
				t.Errorf("%s: no NIST tags or profile version", id)
			}
		}
	})

	t.Run("the debian-like pod fails no-shell naming /bin/sh", func(t *testing.T) {
		f := s.waitFinding(t, "loupe-dl-001 failed on the debian-like pod", 60*time.Second,
			&loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_CONTROL_RESULT}, ContainerId: web.ID()},
			func(f *loupev1.Finding) bool { return f.GetControl().GetId() == "loupe-dl-001" })
		c := f.GetControl()
		if c.GetStatus() != "failed" || !strings.Contains(c.GetCodeDesc(), "/bin/sh") || !strings.Contains(c.GetMessage(), "/bin/sh") {
			t.Errorf("loupe-dl-001: status %s code_desc %q message %q", c.GetStatus(), c.GetCodeDesc(), c.GetMessage())
		}
		if f.GetSeverity() != loupev1.Severity_SEVERITY_HIGH || f.GetContainer().GetPod() != "web-1" {
			t.Errorf("finding severity %v pod %q", f.GetSeverity(), f.GetContainer().GetPod())
		}
		// The debian-like image runs as root: loupe-dl-003 fails as well.
		s.waitFinding(t, "loupe-dl-003 failed on the debian-like pod", 30*time.Second,
			&loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_CONTROL_RESULT}, ContainerId: web.ID()},
			func(f *loupev1.Finding) bool {
				return f.GetControl().GetId() == "loupe-dl-003" && f.GetControl().GetStatus() == "failed"
			})
	})

	t.Run("a profile added to --profiles is loaded without a restart", func(t *testing.T) {
		extra := "name: site-extra\nversion: 0.1.0\ncontrols:\n  - id: site-001\n    title: os-release names Debian\n    impact: 0.3\n" +
			"    tags: {nist: [CM-2]}\n    tests:\n      - os_release: {field: ID, equals: debian}\n"
		if err := os.WriteFile(filepath.Join(profiles, "site-extra.yaml"), []byte(extra), 0o644); err != nil {
			t.Fatal(err)
		}
		s.waitFinding(t, "site-extra result on the distroless pod", 60*time.Second,
			&loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_CONTROL_RESULT}, ContainerId: app.ID()},
			func(f *loupev1.Finding) bool {
				return f.GetControl().GetProfile() == "site-extra" && f.GetControl().GetStatus() == "passed"
			})
		metrics := httpGet(t, "http://"+s.agentHTTP+"/metrics")
		if !strings.Contains(metrics, `loupe_agent_controls_total{profile="distroless-baseline",status="passed"}`) {
			t.Errorf("no loupe_agent_controls_total for distroless-baseline in /metrics")
		}
	})

	t.Run("loupe report hdf validates against the exec-json schema", func(t *testing.T) {
		admin := s.pki.Clients["loupe-admin"]
		cmd := exec.Command(filepath.Join(binaries(t), "loupe"), "report", "hdf", "--collector", s.collectorAddr,
			"--tls-cert", admin[0], "--tls-key", admin[1], "--ca", s.pki.CAFile, "--namespace", "payments")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("loupe report hdf: %v\n%s", err, stderr.String())
		}
		sch, err := jsonschema.NewCompiler().Compile("../../agent/compliance/testdata/exec-json.schema.json")
		if err != nil {
			t.Fatal(err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(inst); err != nil {
			t.Fatalf("HDF does not validate: %v\n%s", err, out)
		}
		doc := inst.(map[string]any)
		if n := len(doc["profiles"].([]any)); n != 2 { // distroless-baseline and site-extra on the one payments container
			t.Errorf("%d profile runs in the report, want 2:\n%s", n, out)
		}
		if p := doc["platform"].(map[string]any); p["name"] != distroless {
			t.Errorf("platform %v, want the image %s", p, distroless)
		}
	})
}

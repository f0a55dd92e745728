package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"google.golang.org/protobuf/encoding/protojson"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// TestScanProfileHDF: `loupe scan IMAGE.tar --profile distroless-baseline
// --hdf FILE` on an image with busybox: CONTROL_RESULT findings in the
// output, the no-shell control failed naming /bin/sh, the image's user unset
// (root) fails loupe-dl-003, and the HDF file validates against the
// exec-json schema. Then the findings go through a real collector (loupe
// ingest) and come back with `loupe report hdf`, valid again.
func TestScanProfileHDF(t *testing.T) {
	img := busyboxImage(t)
	hdf := filepath.Join(t.TempDir(), "out.hdf.json")
	out, _, err := run(t, "scan", img, "-q", "-o", "jsonl", "--profile", "distroless-baseline", "--hdf", hdf)
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]*loupev1.Control{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var f loupev1.Finding
		if err := protojson.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if f.GetKind() == loupev1.Kind_KIND_CONTROL_RESULT {
			status[f.GetControl().GetId()] = f.GetControl()
		}
	}
	if len(status) != 9 {
		t.Fatalf("%d control results, want 9", len(status))
	}
	if c := status["loupe-dl-001"]; c.GetStatus() != "failed" || !strings.Contains(c.GetMessage(), "/bin/sh") {
		t.Errorf("loupe-dl-001: %s %q", c.GetStatus(), c.GetMessage())
	}
	if c := status["loupe-dl-003"]; c.GetStatus() != "failed" || !strings.Contains(c.GetMessage(), "uid 0") {
		t.Errorf("loupe-dl-003 (image user unset = root): %s %q", c.GetStatus(), c.GetMessage())
	}
	data, err := os.ReadFile(hdf)
	if err != nil {
		t.Fatal(err)
	}
	sch, err := jsonschema.NewCompiler().Compile("../../agent/compliance/testdata/exec-json.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Fatalf("HDF: %v", err)
	}

	jsonl := filepath.Join(t.TempDir(), "controls.jsonl")
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(line, "KIND_CONTROL_RESULT") {
			lines = append(lines, line)
		}
	}
	os.WriteFile(jsonl, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	addr := startCollector(t, nil)
	conn := []string{"--collector", addr, "--insecure"}
	if _, stderr, err := run(t, append([]string{"ingest", jsonl}, conn...)...); err != nil {
		t.Fatalf("ingest: %v %s", err, stderr)
	}
	rep, _, err := run(t, append([]string{"report", "hdf", "--since", ""}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	if inst, err = jsonschema.UnmarshalJSON(strings.NewReader(rep)); err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Fatalf("report hdf: %v\n%s", err, rep)
	}
	if stats := inst.(map[string]any)["statistics"].(map[string]any)["controls"].(map[string]any); stats["failed"].(map[string]any)["total"] == nil {
		t.Errorf("statistics: %v", stats)
	}
	if !strings.Contains(rep, `"loupe-dl-001"`) || !strings.Contains(rep, "/bin/sh") {
		t.Errorf("report lacks loupe-dl-001 naming /bin/sh:\n%s", rep)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("name: x\ncontrols:\n  - id: a\n    impact: 3\n    tests: [{no_shell: {}}]\n"), 0o644)
	if _, _, err := run(t, "scan", img, "-q", "--profile", bad); err == nil || !strings.Contains(err.Error(), bad+":4:") {
		t.Errorf("bad profile: %v", err)
	}
	if _, _, err := run(t, "scan", img, "-q", "--profile", "nope"); err == nil || !strings.Contains(err.Error(), "distroless-baseline") {
		t.Errorf("unknown profile name: %v", err)
	}
}

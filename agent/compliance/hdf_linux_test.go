package compliance

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

func hdfSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	sch, err := jsonschema.NewCompiler().Compile(filepath.Join("testdata", "exec-json.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

func validate(t *testing.T, sch *jsonschema.Schema, b []byte) map[string]any {
	t.Helper()
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Fatalf("HDF does not validate against exec-json.schema.json: %v\n%s", err, b)
	}
	var doc map[string]any
	json.Unmarshal(b, &doc)
	return doc
}

// TestHDFValidates: the HDF of several scans (passing, failing, skipped and
// error controls; one and several targets; rebuilt from findings) validates
// against MITRE's schema, with statistics and roll-up as Heimdall expects.
func TestHDFValidates(t *testing.T) {
	sch := hdfSchema(t)
	prof, err := Shipped("distroless-baseline")
	if err != nil {
		t.Fatal(err)
	}
	good := distrolessTree(t)
	bad := distrolessTree(t)
	tree(t, bad, map[string]string{"bin/sh": "->busybox", "root/.ssh/id_rsa": "-----BEGIN RSA PRIVATE KEY-----\n"})
	os.WriteFile(filepath.Join(bad, "bin/busybox"), []byte("\x7fELF busybox BusyBox v1.36"), 0o755)
	os.Remove(filepath.Join(bad, "etc/passwd"))
	os.Mkdir(filepath.Join(bad, "etc/passwd"), 0o755) // a directory where a file should be: error results

	runGood := evalRun(t, good, prof, ContainerFacts{UserKnown: true, UID: 65532})
	runBad := evalRun(t, bad, prof, ContainerFacts{})
	count := map[Status]int{}
	for _, c := range runBad.Controls {
		count[c.Status()]++
	}
	if count[Failed] == 0 || count[Error] == 0 || count[Skipped] == 0 {
		t.Fatalf("the bad tree should give failed, error and skipped controls: %v", count)
	}
	for _, c := range runGood.Controls {
		if c.Status() != Passed {
			t.Errorf("good tree: %s %s: %+v", c.Control.ID, c.Status(), c.Results)
		}
	}

	for _, runs := range [][]*Run{{runGood}, {runBad}, {runGood, runBad}} {
		var b bytes.Buffer
		if err := WriteHDF(&b, runs); err != nil {
			t.Fatal(err)
		}
		doc := validate(t, sch, b.Bytes())
		stats := doc["statistics"].(map[string]any)["controls"].(map[string]any)
		total := 0
		for _, k := range []string{"passed", "failed", "skipped"} {
			total += int(stats[k].(map[string]any)["total"].(float64))
		}
		if want := len(prof.Controls) * len(runs); total != want {
			t.Errorf("statistics count %d controls, want %d", total, want)
		}
		if len(doc["profiles"].([]any)) != len(runs) {
			t.Errorf("%d profiles for %d runs", len(doc["profiles"].([]any)), len(runs))
		}
	}
	var b bytes.Buffer
	WriteHDF(&b, []*Run{runBad})
	if !strings.Contains(b.String(), `"skip_message"`) || !strings.Contains(b.String(), `"status": "error"`) {
		t.Error("HDF lacks skip_message or error results")
	}

	// From findings, as `loupe report hdf` rebuilds it from the collector.
	ref := &loupev1.ContainerRef{Id: "c0ffee", Name: "app", Pod: "api-1", Namespace: "payments", Image: "loupe.test/distroless:1"}
	var fs []*loupev1.Finding
	for i, r := range []*Run{runGood, runBad} {
		r.Container = ref
		for _, f := range r.Findings() {
			f.Time = timestamppb.New(time.Unix(1700000000+int64(i), 0))
			fs = append(fs, f)
		}
	}
	rebuilt := RunsFromFindings(fs)
	if len(rebuilt) != 1 || len(rebuilt[0].Controls) != len(prof.Controls) || rebuilt[0].Profile.SHA256 != prof.SHA256 {
		t.Fatalf("rebuilt %d runs", len(rebuilt))
	}
	for i, c := range rebuilt[0].Controls {
		if c.Status() != runBad.Controls[i].Status() || c.Control.ID != prof.Controls[i].ID {
			t.Errorf("rebuilt %s = %s, want the newest result %s", c.Control.ID, c.Status(), runBad.Controls[i].Status())
		}
	}
	b.Reset()
	if err := WriteHDF(&b, rebuilt); err != nil {
		t.Fatal(err)
	}
	validate(t, sch, b.Bytes())
	if err := WriteHDF(&b, nil); err != nil {
		t.Fatal(err)
	}
}

func evalRun(t *testing.T, root string, p *Profile, facts ContainerFacts) *Run {
	tgt, rep := scan(t, root)
	fsys, err := NewFS(tgt)
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	return Evaluate(t.Context(), p, &Target{Name: tgt.Name, Report: rep, FS: fsys, Facts: facts})
}

func TestSeverityBuckets(t *testing.T) {
	for imp, want := range map[float64]string{0: "none", 0.09: "none", 0.1: "low", 0.39: "low", 0.4: "medium", 0.7: "high", 0.89: "high", 0.9: "critical", 1: "critical"} {
		if got := Severity(imp); got != want {
			t.Errorf("Severity(%v) = %s, want %s", imp, got, want)
		}
	}
}

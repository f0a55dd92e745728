package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/filter"
)

func sampleFindings(now time.Time) []*loupev1.Finding {
	return []*loupev1.Finding{
		{
			Id: "0190a000-0000-7000-8000-000000000001", Time: timestamppb.New(now.Add(-3 * time.Minute)),
			Node: "node-a", Kind: loupev1.Kind_KIND_SHELL_EXEC, Severity: loupev1.Severity_SEVERITY_HIGH,
			Summary:   "shell /bin/sh ran\tin payments/api\nwith a newline",
			Container: &loupev1.ContainerRef{Id: "3f2c9a1be4d0a7c55e1f", Pod: "api-1", Namespace: "payments", Name: "app"},
			Process:   &loupev1.Process{Pid: 42, Argv: []string{"/bin/sh", "-c", "id"}},
		},
		{
			Id: "0190a000-0000-7000-8000-000000000002", Time: timestamppb.New(now.Add(-50 * time.Hour)),
			Node: "node-b", Kind: loupev1.Kind_KIND_PACKAGE, Severity: loupev1.Severity_SEVERITY_INFO,
			Container: &loupev1.ContainerRef{Id: "9a8b7c6d5e4f30211f2e"},
			Package:   &loupev1.Package{Name: "openssl", Version: "3.0.15", Ecosystem: "deb"},
		},
	}
}

func TestTableIsAlignedAndReadable(t *testing.T) {
	now := time.Now()
	var buf bytes.Buffer
	if err := findingsTable(&buf, sampleFindings(now), now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want header + 2 rows, got %d lines:\n%s", len(lines), buf.String())
	}
	if !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[0], "SEVERITY") {
		t.Fatalf("bad header %q", lines[0])
	}
	// Columns align: KIND starts at the same offset on every line.
	col := strings.Index(lines[0], "KIND")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "SHELL_EXEC") && !strings.HasPrefix(l[col:], "PACKAGE") {
			t.Errorf("KIND column misaligned in %q", l)
		}
	}
	for _, want := range []string{"3m ago", "HIGH", "payments/api-1", "app", "2d ago", "9a8b7c6d5e4f", "INFO"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	if strings.Contains(lines[1], "\t") {
		t.Errorf("a tab from the summary leaked into the table: %q", lines[1])
	}
}

func TestJSONAndJSONLRoundTrip(t *testing.T) {
	in := sampleFindings(time.Now())
	for _, format := range []string{formatJSON, formatJSONL} {
		var buf bytes.Buffer
		if err := printFindings(&buf, format, in); err != nil {
			t.Fatal(err)
		}
		var raw []json.RawMessage
		if format == formatJSON {
			if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
				t.Fatalf("json output is not one array: %v\n%s", err, buf.String())
			}
		} else {
			for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				raw = append(raw, json.RawMessage(l))
			}
		}
		if len(raw) != len(in) {
			t.Fatalf("%s: %d objects, want %d", format, len(raw), len(in))
		}
		for i, r := range raw {
			if !strings.Contains(string(r), `"pod_uid"`) && strings.Contains(string(r), "podUid") {
				t.Errorf("%s: camelCase field names: %s", format, r)
			}
			got := &loupev1.Finding{}
			if err := protojson.Unmarshal(r, got); err != nil {
				t.Fatalf("%s: object %d does not parse back: %v", format, i, err)
			}
			if !proto.Equal(got, in[i]) {
				t.Errorf("%s: object %d changed in the round trip:\n got %v\nwant %v", format, i, got, in[i])
			}
		}
	}
}

func TestEmptyJSONIsAnEmptyArray(t *testing.T) {
	var buf bytes.Buffer
	if err := printFindings(&buf, formatJSON, nil); err != nil {
		t.Fatal(err)
	}
	var v []any
	if err := json.Unmarshal(buf.Bytes(), &v); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("want [], got %q (%v)", buf.String(), err)
	}
}

func TestUnknownFormatIsRejected(t *testing.T) {
	err := printFindings(&bytes.Buffer{}, "yaml", nil)
	if err == nil || !strings.Contains(err.Error(), "table, json or jsonl") {
		t.Fatalf("want a clear error, got %v", err)
	}
}

func TestParseTimeFlag(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"90m": now.Add(-90 * time.Minute), "24h": now.Add(-24 * time.Hour), "7d": now.Add(-7 * 24 * time.Hour),
		"2026-11-01T00:00:00Z": time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
	} {
		ts, err := filter.ParseTime("--since", in, now)
		if err != nil || !ts.AsTime().Equal(want) {
			t.Errorf("%q: got %v, %v; want %v", in, ts, err, want)
		}
	}
	if ts, err := filter.ParseTime("--since", "", now); ts != nil || err != nil {
		t.Errorf("empty: %v %v", ts, err)
	}
	for _, bad := range []string{"yesterday", "-5h", "1.5d", "d", "5x"} {
		if _, err := filter.ParseTime("--since", bad, now); err == nil || !strings.Contains(err.Error(), "--since") {
			t.Errorf("%q: want an error naming the flag, got %v", bad, err)
		}
	}
}

func TestReadJSONLReportsBadLinesAndKeepsTheRest(t *testing.T) {
	good, _ := protojson.Marshal(sampleFindings(time.Now())[0])
	long := `{"id":"` + strings.Repeat("a", maxLineBytes) + `"}`
	input := string(good) + "\n\n{not json\n" + `{"no_such_field":1}` + "\n" + long + "\n" + string(good) // no final newline
	var lines []int
	var errs []int
	err := readJSONL(strings.NewReader(input), func(line int, f *loupev1.Finding, err error) error {
		if err != nil {
			errs = append(errs, line)
			return nil
		}
		if f.GetId() == "" {
			t.Errorf("line %d parsed without its id", line)
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0] != 1 || lines[1] != 6 {
		t.Errorf("good lines = %v, want [1 6]", lines)
	}
	if len(errs) != 3 || errs[0] != 3 || errs[1] != 4 || errs[2] != 5 {
		t.Errorf("bad lines = %v, want [3 4 5]", errs)
	}
}

func TestExampleFindingsParse(t *testing.T) {
	f, err := os.Open("../../docs/examples/findings.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	if err := readJSONL(f, func(line int, fd *loupev1.Finding, err error) error {
		if err != nil {
			t.Errorf("docs/examples/findings.jsonl:%d: %v", line, err)
		}
		if fd.GetKind() == loupev1.Kind_KIND_UNSPECIFIED || fd.GetTime() == nil || fd.GetId() == "" {
			t.Errorf("line %d lacks kind, time or id", line)
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("only %d example findings", n)
	}
}

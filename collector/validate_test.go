package collector

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store/storetest"
)

func TestValidateFinding(t *testing.T) {
	valid := func() *loupev1.Finding {
		return storetest.Finding(time.Now(), "n1", loupev1.Kind_KIND_SHELL_EXEC, loupev1.Severity_SEVERITY_HIGH)
	}
	cases := []struct {
		name    string
		mutate  func(f *loupev1.Finding)
		anyNode bool
		reason  string
	}{
		{"valid", func(*loupev1.Finding) {}, false, ""},
		{"empty node filled", func(f *loupev1.Finding) { f.Node = "" }, false, ""},
		{"missing id", func(f *loupev1.Finding) { f.Id = "" }, false, ReasonMissingID},
		{"invalid id", func(f *loupev1.Finding) { f.Id = "123" }, false, ReasonInvalidID},
		{"huge invalid id", func(f *loupev1.Finding) { f.Id = strings.Repeat("é", 10000) }, false, ReasonInvalidID},
		{"missing kind", func(f *loupev1.Finding) { f.Kind = 0 }, false, ReasonMissingKind},
		{"unknown kind", func(f *loupev1.Finding) { f.Kind = 999 }, false, ReasonInvalidKind},
		{"missing time", func(f *loupev1.Finding) { f.Time = nil }, false, ReasonMissingTime},
		{"invalid time", func(f *loupev1.Finding) { f.Time = &timestamppb.Timestamp{Seconds: 1, Nanos: -5} }, false, ReasonInvalidTime},
		{"time before 1970", func(f *loupev1.Finding) { f.Time = timestamppb.New(time.Date(1969, 1, 1, 0, 0, 0, 0, time.UTC)) }, false, ReasonInvalidTime},
		{"time after 2262", func(f *loupev1.Finding) { f.Time = timestamppb.New(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)) }, false, ReasonInvalidTime},
		{"missing severity", func(f *loupev1.Finding) { f.Severity = 0 }, false, ReasonMissingSeverity},
		{"unknown severity", func(f *loupev1.Finding) { f.Severity = 42 }, false, ReasonInvalidSeverity},
		{"other node", func(f *loupev1.Finding) { f.Node = "n2" }, false, ReasonNodeMismatch},
		{"other node allowed for admin", func(f *loupev1.Finding) { f.Node = "n2" }, true, ""},
		{"too many argv", func(f *loupev1.Finding) { f.Process = &loupev1.Process{Argv: make([]string, MaxArgv+1)} }, false, ReasonTooLarge},
		{"too many ancestors", func(f *loupev1.Finding) {
			f.Process = &loupev1.Process{Ancestors: make([]*loupev1.Ancestor, MaxAncestors+1)}
		}, false, ReasonTooLarge},
		{"too many details", func(f *loupev1.Finding) {
			f.Details = map[string]string{}
			for i := range MaxDetails + 1 {
				f.Details[strings.Repeat("k", i+1)] = "v"
			}
		}, false, ReasonTooLarge},
		{"oversized summary", func(f *loupev1.Finding) { f.Summary = strings.Repeat("x", MaxFindingBytes) }, false, ReasonTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := valid()
			c.mutate(f)
			rej := ValidateFinding(f, "n1", c.anyNode)
			switch {
			case c.reason == "" && rej != nil:
				t.Fatalf("rejected: %v", rej)
			case c.reason != "" && (rej == nil || rej.GetReason() != c.reason):
				t.Fatalf("rejection = %v, want reason %s", rej, c.reason)
			case rej != nil && (rej.GetMessage() == "" || len(rej.GetId()) > 70):
				t.Fatalf("rejection %v: needs a message and a bounded id", rej)
			case rej != nil:
				if _, err := proto.Marshal(rej); err != nil {
					t.Fatalf("rejection does not marshal: %v", err)
				}
			}
		})
	}
	if rej := ValidateFinding(nil, "n1", false); rej == nil || rej.GetReason() != ReasonEmpty {
		t.Fatalf("nil finding: %v", rej)
	}
	f := valid()
	f.Node = ""
	f.Id = "URN:UUID:" + strings.ToUpper(f.Id)
	if rej := ValidateFinding(f, "n1", false); rej != nil || f.Node != "n1" || f.Id != strings.ToLower(f.Id) || len(f.Id) != 36 {
		t.Fatalf("normalisation: %v, node %q id %q", rej, f.Node, f.Id)
	}
}

// FuzzValidateFinding feeds arbitrary protobuf bytes through decoding and
// validation: it must never panic, and whatever it accepts must satisfy the
// store's assumptions.
func FuzzValidateFinding(f *testing.F) {
	seed := func(fd *loupev1.Finding) {
		b, err := proto.Marshal(fd)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "n1", false)
	}
	rng := storetest.NewRand(3)
	for range 4 {
		seed(storetest.Realistic(rng, time.Now(), "n1"))
	}
	seed(storetest.Finding(time.Now(), "", loupev1.Kind_KIND_EXEC, loupev1.Severity_SEVERITY_INFO))
	seed(&loupev1.Finding{Id: "x", Kind: 77, Severity: 9, Time: &timestamppb.Timestamp{Seconds: -1 << 40}})
	seed(&loupev1.Finding{})
	f.Add([]byte{0x0a, 0x24}, "", true)
	f.Fuzz(func(t *testing.T, data []byte, node string, anyNode bool) {
		var fd loupev1.Finding
		if err := proto.Unmarshal(data, &fd); err != nil {
			return
		}
		rej := ValidateFinding(&fd, node, anyNode)
		if rej != nil {
			if rej.GetReason() == "" || rej.GetMessage() == "" {
				t.Fatalf("rejection without reason or message: %v", rej)
			}
			if _, err := proto.Marshal(rej); err != nil {
				t.Fatalf("rejection does not marshal: %v", err)
			}
			return
		}
		if _, err := uuid.Parse(fd.GetId()); err != nil || len(fd.GetId()) != 36 {
			t.Fatalf("accepted id %q", fd.GetId())
		}
		if _, ok := loupev1.Kind_name[int32(fd.GetKind())]; !ok || fd.GetKind() == 0 {
			t.Fatalf("accepted kind %d", fd.GetKind())
		}
		if _, ok := loupev1.Severity_name[int32(fd.GetSeverity())]; !ok || fd.GetSeverity() == 0 {
			t.Fatalf("accepted severity %d", fd.GetSeverity())
		}
		if ts := fd.GetTime(); ts.CheckValid() != nil || ts.AsTime().Before(minTime) || !ts.AsTime().Before(maxTime) {
			t.Fatalf("accepted time %v", ts)
		}
		if !anyNode && fd.GetNode() != node {
			t.Fatalf("accepted node %q on a stream for %q", fd.GetNode(), node)
		}
		if proto.Size(&fd) > MaxFindingBytes {
			t.Fatalf("accepted %d bytes", proto.Size(&fd))
		}
	})
}

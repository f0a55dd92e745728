package loupev1

import (
	"strings"
	"testing"
)

func TestParseKindAcceptsEverySpelling(t *testing.T) {
	for _, in := range []string{"shell_exec", "SHELL_EXEC", "KIND_SHELL_EXEC", " Shell_Exec "} {
		k, err := ParseKind(in)
		if err != nil || k != Kind_KIND_SHELL_EXEC {
			t.Errorf("ParseKind(%q) = %v, %v", in, k, err)
		}
	}
	for _, bad := range []string{"", "unspecified", "KIND_UNSPECIFIED", "shell", "KIND_"} {
		if _, err := ParseKind(bad); err == nil {
			t.Errorf("ParseKind(%q) accepted", bad)
		} else if !strings.Contains(err.Error(), "SHELL_EXEC") {
			t.Errorf("error does not list the kinds: %v", err)
		}
	}
	names := KindNames()
	if len(names) != len(Kind_name)-1 || names[0] != "SHELL_EXEC" {
		t.Errorf("KindNames = %v", names)
	}
	for _, n := range names {
		k, err := ParseKind(n)
		if err != nil || k.ShortName() != n {
			t.Errorf("round trip of %s: %v %v", n, k, err)
		}
	}
}

func TestParseSeverity(t *testing.T) {
	for in, want := range map[string]Severity{"high": Severity_SEVERITY_HIGH, "CRITICAL": Severity_SEVERITY_CRITICAL, "SEVERITY_INFO": Severity_SEVERITY_INFO} {
		if s, err := ParseSeverity(in); err != nil || s != want || s.ShortName() != strings.TrimPrefix(want.String(), "SEVERITY_") {
			t.Errorf("ParseSeverity(%q) = %v, %v", in, s, err)
		}
	}
	for _, bad := range []string{"", "urgent", "SEVERITY_UNSPECIFIED"} {
		if _, err := ParseSeverity(bad); err == nil {
			t.Errorf("ParseSeverity(%q) accepted", bad)
		}
	}
}

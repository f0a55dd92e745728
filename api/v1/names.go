package loupev1

import (
	"fmt"
	"strings"
)

// ShortName is the kind without its KIND_ prefix, as tables print it ("SHELL_EXEC").
func (k Kind) ShortName() string { return strings.TrimPrefix(k.String(), "KIND_") }

// ShortName is the severity without its SEVERITY_ prefix ("HIGH").
func (s Severity) ShortName() string { return strings.TrimPrefix(s.String(), "SEVERITY_") }

// ParseKind accepts "shell_exec", "SHELL_EXEC" or "KIND_SHELL_EXEC".
func ParseKind(s string) (Kind, error) {
	n := strings.ToUpper(strings.TrimSpace(s))
	if v, ok := Kind_value[n]; ok && v != 0 {
		return Kind(v), nil
	}
	if v, ok := Kind_value["KIND_"+n]; ok && v != 0 {
		return Kind(v), nil
	}
	return 0, fmt.Errorf("unknown kind %q (one of: %s)", s, strings.Join(KindNames(), ", "))
}

// ParseSeverity accepts "high", "HIGH" or "SEVERITY_HIGH".
func ParseSeverity(s string) (Severity, error) {
	n := strings.ToUpper(strings.TrimSpace(s))
	if v, ok := Severity_value[n]; ok && v != 0 {
		return Severity(v), nil
	}
	if v, ok := Severity_value["SEVERITY_"+n]; ok && v != 0 {
		return Severity(v), nil
	}
	return 0, fmt.Errorf("unknown severity %q (one of: info, low, medium, high, critical)", s)
}

// KindNames lists the short names of every kind, in enum order.
func KindNames() []string {
	var out []string
	for i := 1; ; i++ {
		name, ok := Kind_name[int32(i)]
		if !ok {
			return out
		}
		out = append(out, strings.TrimPrefix(name, "KIND_"))
	}
}

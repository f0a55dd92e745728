// Package audittest builds Kubernetes audit events the way the API server
// records them for kubectl exec, attach, port-forward and debug, with the
// upstream types (k8s.io/apiserver's audit/v1, k8s.io/api's core/v1), and
// posts them to an audit webhook as the API server's webhook backend does.
// The shapes follow events recorded from kubectl 1.31 against a 1.31 API
// server (Metadata level for subresources, Request level for pods).
package audittest

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/google/uuid"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
)

// Who is the client of a request.
type Who struct {
	User      string
	Groups    []string
	SourceIP  string
	UserAgent string
	As        string // kubectl --as
}

// Alice is a typical human user.
var Alice = Who{User: "alice@corp.example", Groups: []string{"sre", "system:authenticated"}, SourceIP: "10.1.2.3",
	UserAgent: "kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc"}

func base(who Who, at time.Time, stage auditv1.Stage, verb, uri string, ref *auditv1.ObjectReference, code int32) auditv1.Event {
	ev := auditv1.Event{
		TypeMeta: metav1.TypeMeta{Kind: "Event", APIVersion: "audit.k8s.io/v1"},
		Level:    auditv1.LevelMetadata, AuditID: types.UID(uuid.NewString()), Stage: stage,
		RequestURI: uri, Verb: verb,
		User:      authnv1.UserInfo{Username: who.User, Groups: who.Groups},
		SourceIPs: []string{who.SourceIP}, UserAgent: who.UserAgent, ObjectRef: ref,
		ResponseStatus:           &metav1.Status{Code: code},
		RequestReceivedTimestamp: metav1.NewMicroTime(at), StageTimestamp: metav1.NewMicroTime(at.Add(3 * time.Millisecond)),
		Annotations: map[string]string{"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": `RBAC: allowed by ClusterRoleBinding "sre"`},
	}
	if who.As != "" {
		ev.ImpersonatedUser = &authnv1.UserInfo{Username: who.As}
	}
	if code >= 400 {
		ev.Annotations["authorization.k8s.io/decision"] = "forbid"
		ev.ResponseStatus = &metav1.Status{Status: "Failure", Code: code, Reason: metav1.StatusReasonForbidden,
			Message: fmt.Sprintf(`pods "%s" is forbidden: User "%s" cannot create resource "pods/exec"`, ref.Name, who.User)}
	}
	return ev
}

// Exec is `kubectl exec -it POD -c CONTAINER -- CMD…` (ResponseStarted,
// code 101: the stream was upgraded). Stages returns the later one too.
func Exec(who Who, at time.Time, ns, pod, container string, cmd ...string) auditv1.Event {
	q := url.Values{"command": cmd, "container": {container}, "stdin": {"true"}, "stdout": {"true"}, "tty": {"true"}}
	uri := fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/exec?%s", ns, pod, q.Encode())
	return base(who, at, auditv1.StageResponseStarted, "create", uri,
		&auditv1.ObjectReference{Resource: "pods", Namespace: ns, Name: pod, APIVersion: "v1", Subresource: "exec"}, 101)
}

// Denied is ev refused by RBAC (403 at ResponseComplete).
func Denied(ev auditv1.Event) auditv1.Event {
	d := base(Who{User: ev.User.Username, Groups: ev.User.Groups, SourceIP: ev.SourceIPs[0], UserAgent: ev.UserAgent},
		ev.RequestReceivedTimestamp.Time, auditv1.StageResponseComplete, ev.Verb, ev.RequestURI, ev.ObjectRef, 403)
	return d
}

// Stages returns ev as the API server sends a long-running request: the
// RequestReceived stage (no response yet), ev, and its ResponseComplete.
func Stages(ev auditv1.Event) []auditv1.Event {
	rr, rc := *ev.DeepCopy(), *ev.DeepCopy()
	rr.Stage, rr.ResponseStatus, rr.StageTimestamp = auditv1.StageRequestReceived, nil, rr.RequestReceivedTimestamp
	rc.Stage, rc.StageTimestamp = auditv1.StageResponseComplete, metav1.NewMicroTime(ev.StageTimestamp.Add(5*time.Second))
	return []auditv1.Event{rr, ev, rc}
}

// Attach is `kubectl attach -it POD -c CONTAINER`.
func Attach(who Who, at time.Time, ns, pod, container string) auditv1.Event {
	q := url.Values{"container": {container}, "stdin": {"true"}, "stdout": {"true"}, "tty": {"true"}}
	return base(who, at, auditv1.StageResponseStarted, "create", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/attach?%s", ns, pod, q.Encode()),
		&auditv1.ObjectReference{Resource: "pods", Namespace: ns, Name: pod, APIVersion: "v1", Subresource: "attach"}, 101)
}

// PortForward is `kubectl port-forward POD 5432`.
func PortForward(who Who, at time.Time, ns, pod string, port string) auditv1.Event {
	return base(who, at, auditv1.StageResponseStarted, "create", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/portforward?ports=%s", ns, pod, port),
		&auditv1.ObjectReference{Resource: "pods", Namespace: ns, Name: pod, APIVersion: "v1", Subresource: "portforward"}, 101)
}

// Debug is `kubectl debug -it POD --image=IMAGE --target=TARGET -c NAME -- CMD…`:
// a strategic-merge patch of the pod's ephemeralcontainers (Request level).
func Debug(who Who, at time.Time, ns, pod, name, image, target string, cmd ...string) auditv1.Event {
	patch := map[string]any{"spec": map[string]any{"ephemeralContainers": []corev1.EphemeralContainer{{
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: name, Image: image, Command: cmd, Stdin: true, TTY: true,
			ImagePullPolicy: corev1.PullIfNotPresent, TerminationMessagePolicy: corev1.TerminationMessageReadFile},
		TargetContainerName: target,
	}}}}
	raw, _ := json.Marshal(patch)
	ev := base(who, at, auditv1.StageResponseComplete, "patch", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/ephemeralcontainers", ns, pod),
		&auditv1.ObjectReference{Resource: "pods", Namespace: ns, Name: pod, APIVersion: "v1", Subresource: "ephemeralcontainers"}, 200)
	ev.Level = auditv1.LevelRequest
	ev.RequestObject = &runtime.Unknown{Raw: raw, ContentType: runtime.ContentTypeJSON}
	return ev
}

// NodeProxy is a GET through nodes/proxy (e.g. the kubelet's /pods).
func NodeProxy(who Who, at time.Time, node, path string) auditv1.Event {
	return base(who, at, auditv1.StageResponseComplete, "get", fmt.Sprintf("/api/v1/nodes/%s/proxy/%s", node, path),
		&auditv1.ObjectReference{Resource: "nodes", Name: node, APIVersion: "v1", Subresource: "proxy"}, 200)
}

// CreatePod is the creation of pod with spec (Request level).
func CreatePod(who Who, at time.Time, ns, name string, spec corev1.PodSpec) auditv1.Event {
	raw, _ := json.Marshal(corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec})
	ev := base(who, at, auditv1.StageResponseComplete, "create", fmt.Sprintf("/api/v1/namespaces/%s/pods", ns),
		&auditv1.ObjectReference{Resource: "pods", Namespace: ns, Name: name, APIVersion: "v1"}, 201)
	ev.Level = auditv1.LevelRequest
	ev.RequestObject = &runtime.Unknown{Raw: raw, ContentType: runtime.ContentTypeJSON}
	return ev
}

// List wraps events in the EventList the webhook backend posts.
func List(evs ...auditv1.Event) []byte {
	b, err := json.Marshal(auditv1.EventList{TypeMeta: metav1.TypeMeta{Kind: "EventList", APIVersion: "audit.k8s.io/v1"}, Items: evs})
	if err != nil {
		panic(err)
	}
	return b
}

// Post sends body to the webhook at url as the API server does (with a
// bearer token when token is set) and returns the status code and body.
func Post(client *http.Client, url, token string, body []byte) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b), nil
}

// Client is an HTTPS client trusting tlsCfg's roots (with its client certificate, if any).
func Client(tlsCfg *tls.Config) *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
}

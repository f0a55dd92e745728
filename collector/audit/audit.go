// Package audit turns the Kubernetes API server's audit events
// (audit.k8s.io/v1, as its webhook backend posts them) into findings: who
// ran a command in a pod (pods/exec), attached to one (pods/attach),
// forwarded its ports (pods/portforward), added a debug container
// (pods/ephemeralcontainers), reached a kubelet (nodes/proxy), or created a
// pod with host namespaces or privileged containers. Every other event is
// dropped. Decoding uses the upstream types of k8s.io/apiserver; the
// request objects are read for the few fields that matter, with the same
// bounds as everything else the collector accepts.
package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/bpf"
)

// Bounds on what one batch may hold. The API server sends at most
// --audit-webhook-batch-max-size events (400 by default) per request.
const (
	MaxBatchBytes   = 32 << 20
	MaxEvents       = 10000
	maxCommand      = 256  // command words kept
	maxCommandBytes = 8192 // bytes kept of a command, all words
	maxText         = 1024 // bytes kept of any one string (Kubernetes names are at most 253)
	maxURI          = 4096 // bytes kept of the request URI
	maxSummary      = 2048 // bytes kept of the summary
	maxList         = 64   // groups, source IPs, privileges
	maxListBytes    = 4096 // bytes kept of a list, all entries
)

// Together these keep any finding of one event well under the collector's
// 64 KiB per finding: a padded command or a flood of groups is cut, never a
// reason for the event to be rejected and lost.

// ErrBadBatch wraps every error about a batch that cannot be decoded.
var ErrBadBatch = errors.New("bad audit batch")

// Decode reads one EventList (apiVersion audit.k8s.io/v1) of at most
// MaxBatchBytes and MaxEvents.
func Decode(r io.Reader) (*auditv1.EventList, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxBatchBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read: %v", ErrBadBatch, err)
	}
	if len(body) > MaxBatchBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes (lower --audit-webhook-batch-max-size on the API server)", ErrBadBatch, MaxBatchBytes)
	}
	var list auditv1.EventList
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("%w: not an audit.k8s.io/v1 EventList: %v", ErrBadBatch, err)
	}
	if list.APIVersion != "audit.k8s.io/v1" || list.Kind != "EventList" {
		return nil, fmt.Errorf("%w: got apiVersion %q kind %q, want audit.k8s.io/v1 EventList (set --audit-webhook-version=audit.k8s.io/v1)",
			ErrBadBatch, clip(list.APIVersion), clip(list.Kind))
	}
	if len(list.Items) > MaxEvents {
		return nil, fmt.Errorf("%w: %d events (max %d)", ErrBadBatch, len(list.Items), MaxEvents)
	}
	return &list, nil
}

// idSpace makes finding ids from audit ids: the stages of one request, and
// the same event sent to several collector replicas, become one finding.
var idSpace = uuid.MustParse("6c6f7570-652d-6175-6469-740000000001")

// Finding returns the finding for ev, or nil when the event is not one
// Loupe keeps. Only the stages that carry the response are kept
// (ResponseStarted for exec streams, ResponseComplete, Panic); a request's
// later stages map to the same finding id and are stored once.
func Finding(ev *auditv1.Event) *loupev1.Finding {
	switch ev.Stage {
	case auditv1.StageResponseStarted, auditv1.StageResponseComplete, auditv1.StagePanic:
	default:
		return nil
	}
	ref := ev.ObjectRef
	if ref == nil || ev.AuditID == "" || ref.APIGroup != "" {
		return nil
	}
	a := record(ev)
	f := &loupev1.Finding{Audit: a, K8SUser: a.GetUser(), Rule: "k8s-audit",
		Container: &loupev1.ContainerRef{Namespace: clip(ref.Namespace), Pod: clip(ref.Name)}}
	q := url.Values{}
	if u, err := url.ParseRequestURI(ev.RequestURI); err == nil {
		q = u.Query()
	}
	who := a.GetUser()
	if a.GetImpersonatedUser() != "" {
		who += " (as " + a.GetImpersonatedUser() + ")"
	}
	target := ref.Namespace + "/" + ref.Name
	switch {
	case ref.Resource == "pods" && ref.Subresource == "exec":
		f.Kind, f.Severity = loupev1.Kind_KIND_K8S_EXEC, loupev1.Severity_SEVERITY_MEDIUM
		a.Command = words(q["command"])
		f.Container.Name = clip(q.Get("container"))
		if isShell(a.GetCommand()) || (q.Get("tty") == "true" && q.Get("stdin") == "true") {
			f.Severity = loupev1.Severity_SEVERITY_HIGH
		}
		f.Summary = fmt.Sprintf("%s ran kubectl exec in %s%s: %s", who, target, containerSuffix(f.Container.Name), quote(a.GetCommand()))
	case ref.Resource == "pods" && ref.Subresource == "attach":
		f.Kind, f.Severity = loupev1.Kind_KIND_K8S_ATTACH, loupev1.Severity_SEVERITY_MEDIUM
		f.Container.Name = clip(q.Get("container"))
		f.Summary = fmt.Sprintf("%s attached to %s%s", who, target, containerSuffix(f.Container.Name))
	case ref.Resource == "pods" && ref.Subresource == "portforward":
		f.Kind, f.Severity = loupev1.Kind_KIND_K8S_PORTFORWARD, loupev1.Severity_SEVERITY_MEDIUM
		f.Summary = fmt.Sprintf("%s forwarded ports of %s %v", who, target, words(q["ports"]))
	case ref.Resource == "pods" && ref.Subresource == "ephemeralcontainers" && (ev.Verb == "patch" || ev.Verb == "update"):
		f.Kind, f.Severity = loupev1.Kind_KIND_K8S_DEBUG, loupev1.Severity_SEVERITY_HIGH
		if c, ok := ephemeral(ev); ok {
			f.Container.Name, f.Container.Image = clip(c.Name), clip(c.Image)
			a.Command = words(append(slices.Clone(c.Command), c.Args...))
			f.Details = map[string]string{"target_container": clip(c.TargetContainerName)}
		}
		f.Summary = fmt.Sprintf("%s added debug container %q (%s) to %s: %s", who, f.Container.Name, f.Container.Image, target, quote(a.GetCommand()))
	case ref.Resource == "nodes" && ref.Subresource == "proxy":
		f.Kind, f.Severity = loupev1.Kind_KIND_K8S_NODE_PROXY, loupev1.Severity_SEVERITY_HIGH
		f.Container = nil
		f.Details = map[string]string{"target_node": clip(ref.Name)}
		f.Summary = fmt.Sprintf("%s reached the kubelet of node %s through the API server (%s)", who, ref.Name, clipN(ev.RequestURI, maxURI))
	case ref.Resource == "pods" && ref.Subresource == "" && ev.Verb == "create":
		why := privileged(ev)
		if len(why) == 0 {
			return nil
		}
		f.Kind, f.Severity = loupev1.Kind_KIND_K8S_PRIVILEGED_POD, loupev1.Severity_SEVERITY_MEDIUM
		why = list(why)
		f.Details = map[string]string{"privileges": strings.Join(why, ",")}
		f.Summary = fmt.Sprintf("%s created pod %s with %s", who, target, strings.Join(why, ", "))
	default:
		return nil
	}
	if a.GetResponseCode() >= 400 {
		f.Summary += fmt.Sprintf(" — refused (%d)", a.GetResponseCode())
	}
	t := ev.RequestReceivedTimestamp.Time
	if t.IsZero() {
		t = ev.StageTimestamp.Time
	}
	f.Time = timestamppb.New(t)
	f.Summary = clipN(f.Summary, maxSummary)
	// The audit id alone would do, but a client may choose it (the API
	// server takes a request's Audit-ID header): reusing one must not make a
	// later request a "duplicate" of an earlier one. These fields are the
	// same in every stage of one request, on every replica.
	f.Id = uuid.NewSHA1(idSpace, []byte(strings.Join([]string{string(ev.AuditID),
		ev.RequestReceivedTimestamp.UTC().Format(time.RFC3339Nano), ev.User.Username, ev.Verb, ev.RequestURI}, "\x00"))).String()
	return f
}

// record copies who asked and how it went.
func record(ev *auditv1.Event) *loupev1.K8SAudit {
	a := &loupev1.K8SAudit{
		AuditId: clip(string(ev.AuditID)), User: clip(ev.User.Username), Groups: list(ev.User.Groups),
		SourceIps: list(ev.SourceIPs), UserAgent: clip(ev.UserAgent), Verb: clip(ev.Verb), RequestUri: clipN(ev.RequestURI, maxURI),
		Stage: string(ev.Stage), Decision: clip(ev.Annotations["authorization.k8s.io/decision"]),
	}
	if iu := ev.ImpersonatedUser; iu != nil {
		a.ImpersonatedUser, a.ImpersonatedGroups = clip(iu.Username), list(iu.Groups)
	}
	if rs := ev.ResponseStatus; rs != nil {
		a.ResponseCode, a.ResponseMessage = rs.Code, clip(rs.Message)
	}
	return a
}

// container is what Loupe reads of a container spec.
type container struct {
	Name                string   `json:"name"`
	Image               string   `json:"image"`
	Command             []string `json:"command"`
	Args                []string `json:"args"`
	TargetContainerName string   `json:"targetContainerName"`
	SecurityContext     *struct {
		Privileged *bool `json:"privileged"`
	} `json:"securityContext"`
}

// podSpec is what Loupe reads of a pod (a Pod, or a strategic-merge patch of one).
type podSpec struct {
	Spec struct {
		HostPID             bool        `json:"hostPID"`
		HostNetwork         bool        `json:"hostNetwork"`
		HostIPC             bool        `json:"hostIPC"`
		Containers          []container `json:"containers"`
		InitContainers      []container `json:"initContainers"`
		EphemeralContainers []container `json:"ephemeralContainers"`
	} `json:"spec"`
}

func requestPod(ev *auditv1.Event) (podSpec, bool) {
	var p podSpec
	if ev.RequestObject == nil || len(ev.RequestObject.Raw) == 0 {
		return p, false
	}
	return p, json.Unmarshal(ev.RequestObject.Raw, &p) == nil
}

// ephemeral returns the debug container a kubectl debug request adds: the
// last one of the update (a Pod) or strategic-merge patch it sends.
func ephemeral(ev *auditv1.Event) (container, bool) {
	p, ok := requestPod(ev)
	if !ok || len(p.Spec.EphemeralContainers) == 0 {
		// A JSON patch: [{"op":"add","path":"/spec/ephemeralContainers/-","value":{…}}].
		var ops []struct {
			Path  string    `json:"path"`
			Value container `json:"value"`
		}
		if ev.RequestObject == nil || json.Unmarshal(ev.RequestObject.Raw, &ops) != nil {
			return container{}, false
		}
		for i := len(ops) - 1; i >= 0; i-- {
			if strings.HasPrefix(ops[i].Path, "/spec/ephemeralContainers") && ops[i].Value.Name != "" {
				return ops[i].Value, true
			}
		}
		return container{}, false
	}
	return p.Spec.EphemeralContainers[len(p.Spec.EphemeralContainers)-1], true
}

// privileged lists the host namespaces and privileged containers a pod
// creation asks for (needs the Request audit level for pods).
func privileged(ev *auditv1.Event) []string {
	p, ok := requestPod(ev)
	if !ok {
		return nil
	}
	var why []string
	for _, c := range []struct {
		on   bool
		name string
	}{{p.Spec.HostPID, "hostPID"}, {p.Spec.HostNetwork, "hostNetwork"}, {p.Spec.HostIPC, "hostIPC"}} {
		if c.on {
			why = append(why, c.name)
		}
	}
	for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
		if sc := c.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged && len(why) < maxList {
			why = append(why, "privileged container "+clip(c.Name))
		}
	}
	return why
}

var shells = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range slices.Concat(bpf.DefaultShellNames, bpf.MultiCallNames) {
		m[n] = true
	}
	return m
}()

// isShell: the command starts a shell (or a multi-call binary that is one).
func isShell(cmd []string) bool {
	return len(cmd) > 0 && shells[path.Base(cmd[0])]
}

func containerSuffix(name string) string {
	if name == "" {
		return ""
	}
	return " (container " + name + ")"
}

// quote renders a command the way a shell would show it, for summaries.
func quote(cmd []string) string {
	if len(cmd) == 0 {
		return "(no command)"
	}
	b, _ := json.Marshal(cmd)
	return string(b)
}

// words is ws bounded to maxCommand entries and maxCommandBytes, each clipped.
func words(ws []string) []string { return bound(ws, maxCommand, maxCommandBytes) }

// list is ws bounded to maxList entries and maxListBytes, each clipped.
func list(ws []string) []string { return bound(ws, maxList, maxListBytes) }

// bound keeps at most n entries of ws, each clipped, and stops (the last
// one cut) when total bytes are reached.
func bound(ws []string, n, total int) []string {
	out := make([]string, 0, min(len(ws), n))
	for _, w := range ws[:min(len(ws), n)] {
		if total <= 0 {
			break
		}
		w = clipN(clip(w), total)
		total -= len(w)
		out = append(out, w)
	}
	return out
}

// clip makes s valid UTF-8 (protobuf strings must be) and bounds it to
// maxText bytes, cut on a rune boundary.
func clip(s string) string { return clipN(s, maxText) }

// clipN is clip with a bound of max bytes.
func clipN(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > max {
		n := max
		for n > 0 && s[n]&0xC0 == 0x80 {
			n--
		}
		s = s[:n]
	}
	return s
}

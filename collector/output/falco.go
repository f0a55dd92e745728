package output

import (
	"encoding/json"
	"strings"
	"time"
	"unicode"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// falcoEvent is the JSON falcosidekick reads on its root endpoint (its
// types.FalcoPayload). falcosidekick requires priority, rule, time and at
// least one output field, and type-asserts k8s.ns.name and k8s.pod.name as
// strings.
type falcoEvent struct {
	UUID         string         `json:"uuid,omitempty"`
	Output       string         `json:"output"`
	Priority     string         `json:"priority"`
	Rule         string         `json:"rule"`
	Time         string         `json:"time"`
	OutputFields map[string]any `json:"output_fields"`
	Source       string         `json:"source"`
	Tags         []string       `json:"tags,omitempty"`
	Hostname     string         `json:"hostname,omitempty"`
}

// falcoPriority maps a finding severity to a Falco priority, as syslog does.
func falcoPriority(s loupev1.Severity) string {
	switch s {
	case loupev1.Severity_SEVERITY_CRITICAL:
		return "Critical"
	case loupev1.Severity_SEVERITY_HIGH:
		return "Error"
	case loupev1.Severity_SEVERITY_MEDIUM:
		return "Warning"
	case loupev1.Severity_SEVERITY_LOW:
		return "Notice"
	default:
		return "Informational"
	}
}

// falcoJSON encodes f as a Falco event, within maxBodyBytes.
func falcoJSON(f *loupev1.Finding) ([]byte, error) {
	return fit(f, maxBodyBytes, func(f *loupev1.Finding) ([]byte, error) { return json.Marshal(toFalco(f)) })
}

func toFalco(f *loupev1.Finding) falcoEvent {
	t := time.Now().UTC()
	if f.GetTime().IsValid() {
		t = f.GetTime().AsTime().UTC()
	}
	prio := falcoPriority(f.GetSeverity())
	kind := f.GetKind().ShortName()
	rule := f.GetRule()
	if rule == "" {
		rule = kind
	}
	fields := falcoFields(f, t)
	summary := f.GetSummary()
	if summary == "" {
		summary = kind
	}
	return falcoEvent{
		UUID:         f.GetId(),
		Output:       falcoOutput(t, prio, summary, fields),
		Priority:     prio,
		Rule:         rule,
		Time:         t.Format(time.RFC3339Nano),
		OutputFields: fields,
		Source:       "loupe",
		Tags:         []string{"loupe", strings.ToLower(kind)},
		Hostname:     f.GetNode(),
	}
}

// falcoFields are the finding's facts under Falco's field names where one
// exists (k8s.*, container.*, proc.*, user.*, fd.*, ka.*), loupe.* otherwise.
func falcoFields(f *loupev1.Finding, t time.Time) map[string]any {
	m := map[string]any{
		"evt.time":       t.UnixNano(),
		"loupe.id":       f.GetId(),
		"loupe.kind":     f.GetKind().ShortName(),
		"loupe.severity": f.GetSeverity().ShortName(),
	}
	str := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	str("loupe.node", f.GetNode())
	str("loupe.action", f.GetAction())
	if c := f.GetContainer(); c != nil {
		str("k8s.ns.name", c.GetNamespace())
		str("k8s.pod.name", c.GetPod())
		str("k8s.pod.uid", c.GetPodUid())
		str("container.id", c.GetId())
		str("container.name", c.GetName())
		str("container.image", c.GetImage())
		repo, tag := splitImage(c.GetImage())
		str("container.image.repository", repo)
		str("container.image.tag", tag)
		str("container.image.digest", c.GetImageDigest())
	}
	if p := f.GetProcess(); p != nil {
		switch f.GetKind() {
		case loupev1.Kind_KIND_RUNTIME_EXEC, loupev1.Kind_KIND_RUNTIME_EXEC_FAILED:
		default:
			m["evt.type"] = "execve"
		}
		str("proc.name", p.GetComm())
		str("proc.exepath", p.GetFilename())
		if argv := p.GetArgv(); len(argv) > 0 {
			// As Falco: proc.cmdline is proc.name then proc.args.
			name := p.GetComm()
			if name == "" {
				name = argv[0]
			}
			m["proc.args"] = strings.Join(argv[1:], " ")
			m["proc.cmdline"] = strings.TrimSpace(name + " " + m["proc.args"].(string))
		}
		m["proc.pid"] = p.GetPid()
		m["proc.ppid"] = p.GetPpid()
		if a := p.GetAncestors(); len(a) > 0 {
			str("proc.pname", a[0].GetComm())
		}
		m["loupe.tty"] = p.GetTty()
		m["user.uid"] = p.GetUid()
		if p.GetUid() == 0 {
			m["user.name"] = "root"
		}
		if p.GetErrno() != 0 {
			m["loupe.errno"] = p.GetErrno()
		}
	}
	if fl := f.GetFile(); fl != nil {
		str("fd.name", fl.GetPath())
		str("loupe.file.change", fl.GetChange())
		str("loupe.file.sha256", fl.GetSha256())
	}
	if a := f.GetAudit(); a != nil {
		str("ka.user.name", a.GetUser())
		str("ka.verb", a.GetVerb())
		str("ka.uri", a.GetRequestUri())
		str("ka.useragent", a.GetUserAgent())
		if len(a.GetSourceIps()) > 0 {
			str("ka.sourceips", strings.Join(a.GetSourceIps(), ","))
		}
	}
	if u := f.GetK8SUser(); u != "" {
		str("ka.user.name", u)
	}
	return m
}

// outputKeys are the fields the output line shows, in order, when present.
var outputKeys = []string{"k8s.ns.name", "k8s.pod.name", "container.name", "container.id", "container.image",
	"proc.cmdline", "proc.pname", "user.name", "user.uid", "fd.name", "ka.user.name", "ka.verb", "ka.uri", "loupe.id"}

// falcoOutput is Falco's one-line output: "TIME: Priority summary (k=v …)".
func falcoOutput(t time.Time, prio, summary string, fields map[string]any) string {
	var b strings.Builder
	b.WriteString(t.Format("15:04:05.000000000") + ": " + prio + " " + oneLine(summary) + " (")
	sep := ""
	for _, k := range outputKeys {
		v, ok := fields[k]
		if !ok {
			continue
		}
		b.WriteString(sep + k + "=")
		sep = " "
		if s, ok := v.(string); ok {
			b.WriteString(oneLine(s))
		} else {
			j, _ := json.Marshal(v)
			b.Write(j)
		}
	}
	b.WriteString(")")
	return b.String()
}

// oneLine replaces control characters (newlines included) by spaces: the
// output line is what chat and paging outputs display.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
}

// splitImage splits "registry/repo:tag@sha256:…" into repository and tag.
func splitImage(ref string) (repo, tag string) {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}

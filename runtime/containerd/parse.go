package containerd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/loupe-dev/loupe/runtime"
)

// OverlayMount is the overlay filesystem of a snapshot's mounts.
type OverlayMount struct {
	Lower []string // topmost first, as overlayfs orders lowerdir
	Upper string   // empty for a read-only view
	Work  string
}

// maxLowerDirs bounds what a mount option may list (overlayfs allows 500).
const maxLowerDirs = 500

// ParseOverlayOptions parses overlay mount options: "lowerdir=a:b" (with
// "\:" escaping a colon in a path), repeated "lowerdir+=a" (the new mount
// API's form), "upperdir=", "workdir="; other options are ignored. Paths must
// be absolute.
func ParseOverlayOptions(opts []string) (OverlayMount, error) {
	var m OverlayMount
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			continue
		}
		switch k {
		case "lowerdir":
			if len(m.Lower) > 0 {
				return m, fmt.Errorf("parse overlay options: lowerdir given twice")
			}
			m.Lower = splitEscaped(v)
		case "lowerdir+":
			m.Lower = append(m.Lower, v)
		case "upperdir":
			m.Upper = v
		case "workdir":
			m.Work = v
		default:
			continue
		}
		if len(m.Lower) > maxLowerDirs {
			return m, fmt.Errorf("parse overlay options: more than %d lower dirs", maxLowerDirs)
		}
	}
	if len(m.Lower) == 0 {
		return m, fmt.Errorf("parse overlay options: no lowerdir")
	}
	for _, p := range m.Lower {
		if p == "" {
			return m, fmt.Errorf("parse overlay options: empty lowerdir entry")
		}
	}
	for _, p := range append(append([]string(nil), m.Lower...), m.Upper, m.Work) {
		if p != "" && (!strings.HasPrefix(p, "/") || strings.Contains(p, "\x00")) {
			return m, fmt.Errorf("parse overlay options: path %q is not absolute", p)
		}
	}
	if (m.Upper == "") != (m.Work == "") {
		return m, fmt.Errorf("parse overlay options: upperdir and workdir go together")
	}
	return m, nil
}

// splitEscaped splits on ':' not preceded by a backslash and removes the escapes.
func splitEscaped(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case s[i] == ':':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(out, cur.String())
}

// RuncLogEntry is one line of runc's JSON log (the task bundle's log.json).
type RuncLogEntry struct {
	Level string    `json:"level"`
	Msg   string    `json:"msg"`
	Time  time.Time `json:"time"`
}

// maxRuncLog caps how much of the end of log.json is read.
const maxRuncLog = 256 << 10

// LastRuncError returns the last error-level entry of a runc JSON log
// written at or after since (zero since: any). Lines that are not JSON are
// skipped; ok is false when no such entry exists.
func LastRuncError(data []byte, since time.Time) (e RuncLogEntry, ok bool) {
	if len(data) > maxRuncLog {
		data = data[len(data)-maxRuncLog:]
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxRuncLog)
	for sc.Scan() {
		var le RuncLogEntry
		if json.Unmarshal(sc.Bytes(), &le) != nil {
			continue
		}
		if le.Level != "error" && le.Level != "fatal" {
			continue
		}
		if !since.IsZero() && le.Time.Before(since) {
			continue
		}
		e, ok = le, true
	}
	return e, ok
}

var execErrRe = regexp.MustCompile(`exec: ("(?:[^"\\]|\\.)*"): (.+)$`)

// ParseExecError extracts the path and the error from a runc exec failure
// such as `exec failed: unable to start container process: exec: "/bin/sh":
// stat /bin/sh: no such file or directory`; ok is false if msg is not one.
func ParseExecError(msg string) (path, reason string, ok bool) {
	m := execErrRe.FindStringSubmatch(msg)
	if m == nil {
		return "", "", false
	}
	p, err := strconv.Unquote(m[1])
	if err != nil {
		return "", "", false
	}
	return p, m[2], true
}

var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	podUID       = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9_.]{0,127}$`)
)

// CRI labels and annotations read from containers.
const (
	labelKind          = "io.cri-containerd.kind"
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelPodUID        = "io.kubernetes.pod.uid"
	labelContainerName = "io.kubernetes.container.name"
	annSandboxID       = "io.kubernetes.cri.sandbox-id"
)

// identity fills kind, pod identity and container name from the CRI labels;
// malformed values are left out with a warning.
func identity(c *runtime.Container, labels map[string]string) {
	switch labels[labelKind] {
	case "sandbox":
		c.Kind = runtime.KindSandbox
	case "container":
		c.Kind = runtime.KindContainer
	case "":
		c.Kind = runtime.KindUnknown
	default:
		c.Kind = runtime.KindUnknown
		c.Warnings = append(c.Warnings, fmt.Sprintf("label %s: unknown value %s", labelKind, quoteShort(labels[labelKind])))
	}
	check := func(key string, re *regexp.Regexp, max int, dst *string, required bool) {
		v, ok := labels[key]
		switch {
		case !ok || v == "":
			if required {
				c.Warnings = append(c.Warnings, "label "+key+": missing")
			}
		case len(v) > max || !re.MatchString(v):
			c.Warnings = append(c.Warnings, fmt.Sprintf("label %s: malformed value %s", key, quoteShort(v)))
		default:
			*dst = v
		}
	}
	cri := c.Kind != runtime.KindUnknown
	check(labelPodName, dnsSubdomain, 253, &c.Pod.Name, cri)
	check(labelPodNamespace, dnsLabel, 63, &c.Pod.Namespace, cri)
	check(labelPodUID, podUID, 128, &c.Pod.UID, cri)
	check(labelContainerName, dnsLabel, 63, &c.ContainerName, c.Kind == runtime.KindContainer)
}

// quoteShort quotes v for a warning, cut to 64 bytes.
func quoteShort(v string) string {
	if len(v) > 64 {
		v = v[:64] + "…"
	}
	return strconv.Quote(v)
}

// specFacts extracts what the scanners need from an OCI spec.
func specFacts(s *specs.Spec) runtime.Spec {
	var f runtime.Spec
	if s == nil {
		return f
	}
	if p := s.Process; p != nil {
		f.UID, f.GID = p.User.UID, p.User.GID
		f.AdditionalGIDs = p.User.AdditionalGids
		f.Args = p.Args
		f.NoNewPrivileges = p.NoNewPrivileges
		for _, e := range p.Env {
			name, _, _ := strings.Cut(e, "=")
			f.EnvNames = append(f.EnvNames, name)
		}
		if p.Capabilities != nil {
			f.CapEffective = p.Capabilities.Effective
			f.CapBounding = p.Capabilities.Bounding
		}
	}
	if s.Root != nil {
		f.ReadOnlyRootfs = s.Root.Readonly
	}
	sysAdmin := false
	for _, c := range f.CapBounding {
		if c == "CAP_SYS_ADMIN" {
			sysAdmin = true
		}
	}
	if s.Linux != nil {
		f.CgroupsPath = s.Linux.CgroupsPath
		f.Privileged = sysAdmin && len(s.Linux.MaskedPaths) == 0
	}
	return f
}

// SystemdCgroupPath converts a systemd-driver cgroupsPath
// ("kubepods-besteffort-pod1.slice:cri-containerd:ID") to the cgroup path it
// denotes ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-ID.scope").
// A cgroupfs-style path (starting with "/") is returned unchanged.
func SystemdCgroupPath(p string) (string, error) {
	if strings.HasPrefix(p, "/") {
		return p, nil
	}
	parts := strings.Split(p, ":")
	if len(parts) != 3 || parts[2] == "" {
		return "", fmt.Errorf("parse cgroups path %s: want slice:prefix:name", quoteShort(p))
	}
	slice, prefix, name := parts[0], parts[1], parts[2]
	var b strings.Builder
	if slice != "" && slice != "-.slice" {
		if !strings.HasSuffix(slice, ".slice") || strings.Contains(slice, "/") {
			return "", fmt.Errorf("parse cgroups path %s: bad slice", quoteShort(p))
		}
		base := strings.TrimSuffix(slice, ".slice")
		acc := ""
		for _, comp := range strings.Split(base, "-") {
			if comp == "" {
				return "", fmt.Errorf("parse cgroups path %s: bad slice", quoteShort(p))
			}
			if acc != "" {
				acc += "-"
			}
			acc += comp
			b.WriteString("/" + acc + ".slice")
		}
	}
	unit := name
	if !strings.HasSuffix(name, ".slice") {
		if prefix != "" {
			unit = prefix + "-" + name
		}
		unit += ".scope"
	}
	if strings.Contains(unit, "/") {
		return "", fmt.Errorf("parse cgroups path %s: bad unit name", quoteShort(p))
	}
	b.WriteString("/" + unit)
	return b.String(), nil
}

package output

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// SDID is the structured-data element of Loupe's syslog messages. 32473 is
// the private enterprise number reserved for documentation (RFC 5612).
const SDID = "loupe@32473"

// maxSDValue bounds each SD-PARAM value (bytes before escaping).
const maxSDValue = 256

// syslogSeverity maps a finding severity to a syslog severity code.
func syslogSeverity(s loupev1.Severity) int {
	switch s {
	case loupev1.Severity_SEVERITY_CRITICAL:
		return 2 // crit
	case loupev1.Severity_SEVERITY_HIGH:
		return 3 // err
	case loupev1.Severity_SEVERITY_MEDIUM:
		return 4 // warning
	case loupev1.Severity_SEVERITY_LOW:
		return 5 // notice
	default:
		return 6 // info
	}
}

// syslogMessage encodes f as one RFC 5424 message of at most max bytes:
//
//	<PRI>1 TIMESTAMP NODE loupe - KIND [loupe@32473 id=".." rule=".." …] {finding JSON}
//
// Every header field is printable ASCII without spaces, every SD-PARAM value
// is escaped (RFC 5424 §6.3.3) and free of control characters, and the MSG
// is the finding's one-line JSON: whatever the container put in the
// finding, the result stays one well-formed message.
func syslogMessage(f *loupev1.Finding, facility, max int) ([]byte, error) {
	var b strings.Builder
	b.WriteString("<")
	b.WriteString(strconv.Itoa(facility*8 + syslogSeverity(f.GetSeverity())))
	b.WriteString(">1 ")
	if t := f.GetTime(); t != nil && t.IsValid() {
		b.WriteString(t.AsTime().UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	} else {
		b.WriteString("-")
	}
	b.WriteString(" ")
	b.WriteString(headerField(f.GetNode(), 255))
	b.WriteString(" loupe - ")
	b.WriteString(headerField(f.GetKind().ShortName(), 32))
	b.WriteString(" [" + SDID)
	c := f.GetContainer()
	for _, p := range [][2]string{
		{"id", f.GetId()}, {"rule", f.GetRule()}, {"severity", f.GetSeverity().ShortName()},
		{"namespace", c.GetNamespace()}, {"pod", c.GetPod()}, {"container", c.GetName()},
		{"container_id", c.GetId()}, {"image", c.GetImage()},
	} {
		if p[1] == "" && p[0] != "id" {
			continue
		}
		b.WriteString(" " + p[0] + `="`)
		b.WriteString(sdEscape(cut(p[1], maxSDValue)))
		b.WriteString(`"`)
	}
	b.WriteString("] ")
	head := b.String()
	msg, err := fit(f, max-len(head), findingJSON)
	if err != nil {
		return nil, err
	}
	return append([]byte(head), msg...), nil
}

// frame is RFC 6587 octet counting (RFC 5425 §4.3): "LEN SP MSG".
func frame(msg []byte) []byte {
	return append([]byte(strconv.Itoa(len(msg))+" "), msg...)
}

// headerField makes s a header field (1*n PRINTUSASCII): "-" when empty,
// anything else replaced by '_'.
func headerField(s string, n int) string {
	if s == "" {
		return "-"
	}
	out := []byte(cut(s, n))
	for i, c := range out {
		if c < 33 || c > 126 {
			out[i] = '_'
		}
	}
	return string(out)
}

// sdEscape escapes an SD-PARAM value: '"', '\' and ']' get a backslash (the
// only escapes RFC 5424 defines; strict parsers reject any other). Control
// characters become their Unicode control pictures (newline: U+240A '␊',
// DEL: '␡'), other controls and line separators U+FFFD, as does invalid UTF-8.
func sdEscape(s string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '"' || r == '\\' || r == ']':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			b.WriteRune(0x2400 + r)
		case r == 0x7f:
			b.WriteRune(0x2421)
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029':
			b.WriteRune(utf8.RuneError)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

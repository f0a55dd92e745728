package output

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// Output types, the TYPE of a --output spec.
const (
	TypeWebhook       = "webhook"
	TypeSyslog        = "syslog"
	TypeFalcosidekick = "falcosidekick"
)

// Defaults of a Config.
const (
	DefaultMinSeverity = loupev1.Severity_SEVERITY_HIGH
	DefaultMaxAge      = 24 * time.Hour
	DefaultMaxBytes    = 64 << 20
	DefaultFacility    = "local0"
)

// Config is one output, as parsed from a --output spec.
type Config struct {
	// Type is TypeWebhook, TypeSyslog or TypeFalcosidekick.
	Type string
	// Name labels the output's metrics and names its spool directory
	// ([a-z0-9-]{1,32}, unique); the type by default.
	Name string
	// URL is the receiver: http(s)://… for webhook and falcosidekick,
	// tcp://host:port or tls://host:port for syslog.
	URL string
	// MinSeverity is the lowest severity pushed (DefaultMinSeverity when unset).
	MinSeverity loupev1.Severity
	// Kinds, when set, are the only kinds pushed.
	Kinds []loupev1.Kind
	// Namespaces, when set, are glob patterns (internal/glob) of the
	// Kubernetes namespaces pushed; findings outside any pod do not match.
	Namespaces []string
	// CAFile is a PEM CA bundle that verifies the receiver (https, tls);
	// the system roots when empty.
	CAFile string
	// TokenFile holds the bearer token a webhook sends (re-read on change).
	TokenFile string
	// Facility is the syslog facility name (kern, user, daemon, auth,
	// local0 … local7, …); DefaultFacility when empty.
	Facility string
	// MaxAge is how old a finding (its event time) may get while its
	// delivery keeps failing before it is given up (DefaultMaxAge when 0).
	MaxAge time.Duration
	// MaxBytes bounds the output's spool; the oldest lowest-severity
	// findings are dropped (and counted) beyond it (DefaultMaxBytes when 0).
	MaxBytes int64
}

var nameRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// facilities are the syslog facility names (RFC 5424 table 1, common names).
var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// keysFor lists the keys each type accepts.
var keysFor = map[string][]string{
	TypeWebhook:       {"name", "min-severity", "kind", "namespace", "max-age", "max-bytes", "ca", "token-file"},
	TypeSyslog:        {"name", "min-severity", "kind", "namespace", "max-age", "max-bytes", "ca", "facility"},
	TypeFalcosidekick: {"name", "min-severity", "kind", "namespace", "max-age", "max-bytes", "ca"},
}

// ParseSpec parses one --output value: TYPE=URL[,key=value...], e.g.
//
//	webhook=https://soar.example/hook,min-severity=medium,token-file=/etc/loupe/hook.token
//	syslog=tls://siem.example:6514,facility=local3,kind=shell_exec,kind=drift_exec
//	falcosidekick=http://falcosidekick.falco:2801,namespace=prod-*
//
// kind and namespace may be repeated. A comma inside the URL must be written %2C.
func ParseSpec(spec string) (Config, error) {
	typ, rest, ok := strings.Cut(strings.TrimSpace(spec), "=")
	first, _, _ := strings.Cut(rest, ",")
	fail := func(format string, a ...any) (Config, error) {
		// Named by type and host only: a webhook URL's path may hold a secret.
		return Config{}, fmt.Errorf("output %q: %s", typ+"="+redact(first), fmt.Sprintf(format, a...))
	}
	if !ok || rest == "" {
		return fail("want TYPE=URL[,key=value...] with TYPE webhook, syslog or falcosidekick")
	}
	typ = strings.ToLower(typ)
	allowed, ok := keysFor[typ]
	if !ok {
		return fail("unknown type %q (webhook, syslog or falcosidekick)", typ)
	}
	parts := strings.Split(rest, ",")
	c := Config{Type: typ, URL: parts[0]}
	if err := checkURL(typ, c.URL); err != nil {
		return fail("%v", err)
	}
	seen := map[string]bool{}
	for _, kv := range parts[1:] {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if !ok || v == "" {
			return fail("%q: want key=value", kv)
		}
		if !slices.Contains(allowed, k) {
			return fail("unknown key %q for %s (one of: %s)", k, typ, strings.Join(allowed, ", "))
		}
		if seen[k] && k != "kind" && k != "namespace" {
			return fail("key %q given twice", k)
		}
		seen[k] = true
		if err := c.set(k, v); err != nil {
			return fail("%s: %v", k, err)
		}
	}
	return c.normalize()
}

// normalize fills in defaults and checks a Config (also one built in code).
func (c Config) normalize() (Config, error) {
	if _, ok := keysFor[c.Type]; !ok {
		return c, fmt.Errorf("output %q: unknown type %q (webhook, syslog or falcosidekick)", c.Name, c.Type)
	}
	if c.Name == "" {
		c.Name = c.Type
	}
	if !nameRE.MatchString(c.Name) {
		return c, fmt.Errorf("output name %q: want 1 to 32 of a-z, 0-9 and -", c.Name)
	}
	if err := checkURL(c.Type, c.URL); err != nil {
		return c, fmt.Errorf("output %s: %w", c.Name, err)
	}
	if c.MinSeverity == loupev1.Severity_SEVERITY_UNSPECIFIED {
		c.MinSeverity = DefaultMinSeverity
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Type == TypeSyslog && c.Facility == "" {
		c.Facility = DefaultFacility
	}
	if _, ok := facilities[c.Facility]; c.Facility != "" && !ok {
		return c, fmt.Errorf("output %s: unknown syslog facility %q", c.Name, c.Facility)
	}
	if c.TokenFile != "" && c.Type != TypeWebhook {
		return c, fmt.Errorf("output %s: a token file is for webhook outputs", c.Name)
	}
	return c, nil
}

func (c *Config) set(k, v string) error {
	var err error
	switch k {
	case "name":
		if !nameRE.MatchString(v) {
			return fmt.Errorf("%q: want 1 to 32 of a-z, 0-9 and -", v)
		}
		c.Name = v
	case "min-severity":
		c.MinSeverity, err = loupev1.ParseSeverity(v)
	case "kind":
		var kind loupev1.Kind
		if kind, err = loupev1.ParseKind(v); err == nil {
			c.Kinds = append(c.Kinds, kind)
		}
	case "namespace":
		c.Namespaces = append(c.Namespaces, v)
	case "max-age":
		c.MaxAge, err = time.ParseDuration(v)
		if err == nil && c.MaxAge <= 0 {
			err = errors.New("must be positive")
		}
	case "max-bytes":
		c.MaxBytes, err = parseBytes(v)
	case "ca":
		c.CAFile = v
	case "token-file":
		c.TokenFile = v
	case "facility":
		v = strings.ToLower(v)
		if _, ok := facilities[v]; !ok {
			return fmt.Errorf("unknown facility %q (local0 … local7, daemon, auth, user, …)", v)
		}
		c.Facility = v
	}
	return err
}

func checkURL(typ, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("bad URL: %v", err)
	}
	if u.User != nil {
		return errors.New("URL must not carry credentials (use token-file)")
	}
	switch typ {
	case TypeWebhook, TypeFalcosidekick:
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("URL %q: want http://HOST[:PORT]/PATH or https://…", raw)
		}
	case TypeSyslog:
		if u.Scheme != "tcp" && u.Scheme != "tls" {
			return fmt.Errorf("URL %q: want tcp://HOST:PORT or tls://HOST:PORT", raw)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" || port == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("URL %q: want tcp://HOST:PORT or tls://HOST:PORT", raw)
		}
	}
	return nil
}

// redact is a URL without what may be secret: scheme and host only.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "…"
	}
	if (u.Path == "" || u.Path == "/") && u.RawQuery == "" {
		return u.Scheme + "://" + u.Host + u.Path
	}
	return u.Scheme + "://" + u.Host + "/…"
}

// parseBytes reads 1048576, 64KiB, 64MiB or 1GiB.
func parseBytes(v string) (int64, error) {
	s, mult := v, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q: want a positive size such as 67108864, 512KiB or 64MiB", v)
	}
	return n * mult, nil
}

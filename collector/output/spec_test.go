package output

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want Config
	}{
		{"webhook=https://soar.example/hook", Config{Type: TypeWebhook, Name: "webhook", URL: "https://soar.example/hook",
			MinSeverity: loupev1.Severity_SEVERITY_HIGH, MaxAge: DefaultMaxAge, MaxBytes: DefaultMaxBytes}},
		{"webhook=https://soar.example/hook?team=a,name=soar-1,min-severity=MEDIUM,token-file=/etc/t,ca=/etc/ca.pem,max-age=2h,max-bytes=8MiB",
			Config{Type: TypeWebhook, Name: "soar-1", URL: "https://soar.example/hook?team=a", MinSeverity: loupev1.Severity_SEVERITY_MEDIUM,
				TokenFile: "/etc/t", CAFile: "/etc/ca.pem", MaxAge: 2 * time.Hour, MaxBytes: 8 << 20}},
		{"syslog=tls://siem.example:6514,facility=local3,kind=shell_exec,kind=KIND_DRIFT_EXEC,namespace=prod-*,namespace=payments",
			Config{Type: TypeSyslog, Name: "syslog", URL: "tls://siem.example:6514", MinSeverity: loupev1.Severity_SEVERITY_HIGH,
				Facility: "local3", Kinds: []loupev1.Kind{loupev1.Kind_KIND_SHELL_EXEC, loupev1.Kind_KIND_DRIFT_EXEC},
				Namespaces: []string{"prod-*", "payments"}, MaxAge: DefaultMaxAge, MaxBytes: DefaultMaxBytes}},
		{"syslog=tcp://siem.example:514", Config{Type: TypeSyslog, Name: "syslog", URL: "tcp://siem.example:514",
			MinSeverity: loupev1.Severity_SEVERITY_HIGH, Facility: "local0", MaxAge: DefaultMaxAge, MaxBytes: DefaultMaxBytes}},
		{"falcosidekick=http://falcosidekick.falco:2801,min-severity=critical", Config{Type: TypeFalcosidekick, Name: "falcosidekick",
			URL: "http://falcosidekick.falco:2801", MinSeverity: loupev1.Severity_SEVERITY_CRITICAL, MaxAge: DefaultMaxAge, MaxBytes: DefaultMaxBytes}},
	} {
		got, err := ParseSpec(tc.spec)
		if err != nil {
			t.Errorf("%s: %v", tc.spec, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.spec, got, tc.want)
		}
	}
}

func TestParseSpecErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"":                                "want TYPE=URL",
		"https://x":                       "want TYPE=URL",
		"kafka=tcp://x:1":                 `unknown type "kafka"`,
		"webhook=":                        "want TYPE=URL",
		"webhook=ftp://x/":                "want http://",
		"webhook=https://user:pw@x/":      "must not carry credentials",
		"syslog=udp://x:514":              "want tcp://HOST:PORT",
		"syslog=tcp://x":                  "want tcp://HOST:PORT",
		"syslog=https://x:6514":           "want tcp://HOST:PORT",
		"falcosidekick=tcp://x:2801":      "want http://",
		"webhook=http://x/,name=Bad_Name": "a-z, 0-9 and -",
		"webhook=http://x/,name=" + strings.Repeat("a", 33): "a-z, 0-9 and -",
		"webhook=http://x/,min-severity=urgent":             `unknown severity "urgent"`,
		"webhook=http://x/,kind=rootkit":                    `unknown kind "rootkit"`,
		"webhook=http://x/,facility=local0":                 `unknown key "facility" for webhook`,
		"syslog=tcp://x:1,token-file=/t":                    `unknown key "token-file" for syslog`,
		"webhook=http://x/,token=abc":                       `unknown key "token"`,
		"webhook=http://x/,max-age=soon":                    "max-age",
		"webhook=http://x/,max-age=-1h":                     "must be positive",
		"webhook=http://x/,max-bytes=lots":                  "positive size",
		"webhook=http://x/,name=a,name=b":                   `"name" given twice`,
		"webhook=http://x/,namespace":                       "want key=value",
		"syslog=tcp://x:1,facility=local9":                  `unknown facility "local9"`,
	} {
		_, err := ParseSpec(spec)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one containing %q", spec, err, want)
		}
	}
}

// A webhook URL's path may be a secret (chat webhooks): errors leave it out.
func TestParseSpecErrorsHideURLPath(t *testing.T) {
	_, err := ParseSpec("webhook=https://hooks.example/services/T0/S3CRET,kind=rootkit")
	if err == nil || strings.Contains(err.Error(), "S3CRET") || !strings.Contains(err.Error(), "hooks.example") {
		t.Errorf("error %v", err)
	}
}

// Open refuses two outputs of one name (they would share a spool) and
// unreadable CA or token files, before anything runs.
func TestOpenErrors(t *testing.T) {
	a, _ := ParseSpec("webhook=http://127.0.0.1:1/")
	b, _ := ParseSpec("webhook=http://127.0.0.1:2/")
	if _, err := Open(t.TempDir(), []Config{a, b}, prometheus.NewRegistry(), nil); err == nil || !strings.Contains(err.Error(), `two outputs named "webhook"`) {
		t.Errorf("duplicate names: %v", err)
	}
	c, _ := ParseSpec("webhook=https://127.0.0.1:1/,ca=/nonexistent/ca.pem")
	if _, err := Open(t.TempDir(), []Config{c}, prometheus.NewRegistry(), nil); err == nil || !strings.Contains(err.Error(), "ca.pem") {
		t.Errorf("missing CA: %v", err)
	}
	d, _ := ParseSpec("webhook=https://127.0.0.1:1/,token-file=/nonexistent/token")
	if _, err := Open(t.TempDir(), []Config{d}, prometheus.NewRegistry(), nil); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("missing token file: %v", err)
	}
	var none *Outputs // no output configured: every method is a no-op
	none.Enqueue([]*loupev1.Finding{high("x")})
	if err := none.Close(); err != nil {
		t.Error(err)
	}
}

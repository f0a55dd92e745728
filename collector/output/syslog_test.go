package output

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	syslog "github.com/leodido/go-syslog/v4"
	"github.com/leodido/go-syslog/v4/octetcounting"
	"github.com/leodido/go-syslog/v4/rfc5424"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// syslogReceiver accepts connections on l and parses what arrives with
// go-syslog's RFC 5425/6587 octet-counting parser and strict RFC 5424 machine.
type syslogReceiver struct {
	t    *testing.T
	l    net.Listener
	mu   sync.Mutex
	msgs []*rfc5424.SyslogMessage
	// closeAfter closes each connection after that many messages (0: never).
	closeAfter int
	conns      int
}

func newSyslogReceiver(t *testing.T, l net.Listener) *syslogReceiver {
	r := &syslogReceiver{t: t, l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns++
			r.mu.Unlock()
			go r.serve(c)
		}
	}()
	return r
}

func (r *syslogReceiver) serve(c net.Conn) {
	defer c.Close()
	n := 0
	p := octetcounting.NewParser(syslog.WithMaxMessageLength(maxSyslogBytes), syslog.WithListener(func(res *syslog.Result) {
		if res.Error != nil {
			r.t.Errorf("syslog parse: %v", res.Error)
			return
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, res.Message.(*rfc5424.SyslogMessage))
		r.mu.Unlock()
		if n++; r.closeAfter > 0 && n == r.closeAfter {
			c.Close()
		}
	}))
	p.Parse(c)
}

func (r *syslogReceiver) messages() []*rfc5424.SyslogMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*rfc5424.SyslogMessage(nil), r.msgs...)
}

// hostile is a finding whose container-controlled strings try to break the
// framing, the structured data and the header.
func hostile() *loupev1.Finding {
	f := finding(loupev1.Severity_SEVERITY_CRITICAL, loupev1.Kind_KIND_SHELL_EXEC, "pay\"ments]")
	f.Node = "evil node\n<0>1 forged"
	f.Container.Pod = "api-7d9\n<13>1 2026-01-01T00:00:00Z forged loupe - X - injected"
	f.Container.Image = `img\"]"` + "\x00\x1b[31m\u2028"
	f.Rule = `rule with "quotes" and \backslash\ and ]bracket[`
	f.Process.Argv = []string{"/bin/sh", "-c", "echo ']\"\\' \n\r\n 57 <1>1 - - - - - - fake"}
	return f
}

// Findings reach a syslog server over TCP as RFC 5424 messages in
// octet-counting frames; PRI, header, structured data and MSG carry the
// finding, hostile strings included, one well-formed message each.
func TestSyslogTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := newSyslogReceiver(t, l)
	o, _ := open(t, t.TempDir(), "syslog=tcp://"+l.Addr().String()+",facility=local3,min-severity=medium")
	defer o.Close()
	run(t, o)
	checkSyslog(t, o, r, 19)
}

// The same over TLS (RFC 5425), the server verified by the CA file.
func TestSyslogTLS(t *testing.T) {
	dir := t.TempDir()
	l, caFile := tlsListener(t, dir)
	r := newSyslogReceiver(t, l)
	o, _ := open(t, filepath.Join(dir, "state"), "syslog=tls://"+l.Addr().String()+",ca="+caFile+",min-severity=medium")
	defer o.Close()
	run(t, o)
	checkSyslog(t, o, r, 16)
}

// tlsListener listens on loopback with a certificate of a CA generated for
// the test, written to the returned file.
func tlsListener(t *testing.T, dir string) (net.Listener, string) {
	ca, err := tlsutil.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.IssueServer("syslog")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	return l, caFile
}

func checkSyslog(t *testing.T, o *Outputs, r *syslogReceiver, facility uint8) {
	t.Helper()
	plain := finding(loupev1.Severity_SEVERITY_MEDIUM, loupev1.Kind_KIND_DRIFT_EXEC, "payments")
	evil := hostile()
	huge := high("payments")
	for range 300 {
		huge.Process.Argv = append(huge.Process.Argv, strings.Repeat("A\n", 300))
	}
	low := finding(loupev1.Severity_SEVERITY_LOW, loupev1.Kind_KIND_SHELL_EXEC, "payments") // filtered out
	o.Enqueue([]*loupev1.Finding{plain, evil, huge, low})
	eventually(t, "3 syslog messages", func() bool { return len(r.messages()) >= 3 })

	byID := map[string]*rfc5424.SyslogMessage{}
	for _, m := range r.messages() {
		sd := *m.StructuredData
		byID[sd[SDID]["id"]] = m
	}
	if len(byID) != 3 || byID[low.GetId()] != nil {
		t.Fatalf("got messages for %v", byID)
	}
	for _, tc := range []struct {
		f   *loupev1.Finding
		sev uint8
	}{{plain, 4}, {evil, 2}, {huge, 3}} {
		m := byID[tc.f.GetId()]
		if m == nil {
			t.Errorf("no message for %s", tc.f.GetId())
			continue
		}
		if *m.Facility != facility || *m.Severity != tc.sev {
			t.Errorf("%s: facility %d severity %d, want %d %d", tc.f.GetSeverity(), *m.Facility, *m.Severity, facility, tc.sev)
		}
		if *m.Appname != "loupe" || *m.MsgID != tc.f.GetKind().ShortName() {
			t.Errorf("APP-NAME %q MSGID %q", *m.Appname, *m.MsgID)
		}
		if m.Timestamp == nil || !m.Timestamp.Truncate(1000).Equal(tc.f.GetTime().AsTime().Truncate(1000)) {
			t.Errorf("timestamp %v, want %v", m.Timestamp, tc.f.GetTime().AsTime())
		}
		sd := (*m.StructuredData)[SDID]
		c := tc.f.GetContainer()
		for k, want := range map[string]string{"rule": tc.f.GetRule(), "severity": tc.f.GetSeverity().ShortName(),
			"namespace": c.GetNamespace(), "pod": c.GetPod(), "container": c.GetName(), "container_id": c.GetId(), "image": c.GetImage()} {
			if got := sd[k]; got != visible(want) {
				t.Errorf("SD %s = %q, want %q", k, got, visible(want))
			}
		}
		back := &loupev1.Finding{}
		if err := protojson.Unmarshal([]byte(*m.Message), back); err != nil {
			t.Fatalf("MSG is not the finding's JSON: %v", err)
		}
		if tc.f == huge {
			if back.GetDetails()[TruncatedDetail] != "true" || back.GetId() != huge.GetId() {
				t.Errorf("oversized finding not marked truncated: %v", back.GetDetails())
			}
		} else if !proto.Equal(back, tc.f) {
			t.Errorf("MSG decodes to %v\nwant %v", back, tc.f)
		}
	}
	if h := *byID[evil.GetId()].Hostname; h != "evil_node_<0>1_forged" {
		t.Errorf("HOSTNAME %q", h)
	}
	if *byID[plain.GetId()].Hostname != "node-1" {
		t.Errorf("HOSTNAME %q", *byID[plain.GetId()].Hostname)
	}
}

// visible is what sdEscape shows of control characters once a parser has
// removed the escaping of '"', '\' and ']'.
func visible(s string) string {
	return strings.NewReplacer("\n", "\u240A", "\r", "\u240D", "\x00", "\u2400", "\x1b", "\u241B", "\u2028", "\uFFFD").Replace(s)
}

// A receiver that closes the connection (a restart) does not swallow the
// next finding: the sender notices and reconnects, over TCP and TLS.
func TestSyslogReconnectsAfterReceiverClose(t *testing.T) {
	for _, scheme := range []string{"tcp", "tls"} {
		t.Run(scheme, func(t *testing.T) {
			dir := t.TempDir()
			var l net.Listener
			spec := ""
			if scheme == "tls" {
				var ca string
				l, ca = tlsListener(t, dir)
				spec = "syslog=tls://" + l.Addr().String() + ",ca=" + ca
			} else {
				var err error
				if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
					t.Fatal(err)
				}
				spec = "syslog=tcp://" + l.Addr().String()
			}
			r := newSyslogReceiver(t, l)
			r.closeAfter = 1
			o, _ := open(t, filepath.Join(dir, "state"), spec)
			defer o.Close()
			run(t, o)
			for i := 1; i <= 3; i++ {
				o.Enqueue([]*loupev1.Finding{high("payments")})
				eventually(t, "the next message", func() bool { return len(r.messages()) == i })
				eventually(t, "the receiver's close", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.conns == i })
			}
		})
	}
}

// The syslog encoding alone: SD names are printable ASCII, a message never
// exceeds the bound, and an empty finding still makes a valid message.
func TestSyslogMessageBounds(t *testing.T) {
	for _, name := range []string{"id", "rule", "severity", "namespace", "pod", "container", "container_id", "image"} {
		for _, c := range name {
			if c < 33 || c > 126 || c == '=' || c == ']' || c == '"' {
				t.Fatalf("SD name %q", name)
			}
		}
	}
	huge := hostile()
	huge.Details = map[string]string{}
	for i := range 100 {
		huge.Details[strings.Repeat("k", i+1)] = strings.Repeat("\x01]", 2000)
	}
	for _, f := range []*loupev1.Finding{{}, huge} {
		msg, err := syslogMessage(f, 16, maxSyslogBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(msg) > maxSyslogBytes {
			t.Errorf("message of %d bytes", len(msg))
		}
		if _, err := rfc5424.NewParser().Parse(msg); err != nil {
			t.Errorf("invalid RFC 5424 message: %v: %.200s", err, msg)
		}
	}
}

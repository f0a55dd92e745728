package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPKIAndConfigs(t *testing.T) {
	dir := t.TempDir()
	files, err := GeneratePKI(dir, "node-a", "loupe-admin")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(files.ServerKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("server key mode: %v %v", fi.Mode(), err)
	}
	srv, err := ServerConfig(ServerOptions{CertFile: files.ServerCert, KeyFile: files.ServerKey, ClientCAFile: files.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	if srv.ClientAuth != tls.RequireAndVerifyClientCert || srv.MinVersion != tls.VersionTLS12 {
		t.Fatalf("server config: client auth %v, min version %x", srv.ClientAuth, srv.MinVersion)
	}
	cli, err := ClientConfig(ClientOptions{CAFile: files.CAFile, CertFile: files.Clients["node-a"][0], KeyFile: files.Clients["node-a"][1]})
	if err != nil {
		t.Fatal(err)
	}
	// A real handshake over loopback: the server sees the client's CN.
	l, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cn := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			cn <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			cn <- err.Error()
			return
		}
		cn <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), cli)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := <-cn; got != "node-a" {
		t.Fatalf("server saw client %q", got)
	}
	// The server certificate names localhost, 127.0.0.1 and ::1.
	pemBytes, _ := os.ReadFile(files.ServerCert)
	kp, _ := tls.X509KeyPair(pemBytes, mustRead(t, files.ServerKey))
	leaf, _ := x509.ParseCertificate(kp.Certificate[0])
	if err := leaf.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil || !leaf.IPAddresses[1].Equal(net.ParseIP("::1")) {
		t.Errorf("IP SANs %v: %v", leaf.IPAddresses, err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ServerConfig(ServerOptions{}); !errors.Is(err, ErrNoServerCert) {
		t.Fatalf("no cert: %v", err)
	}
	if _, err := ServerConfig(ServerOptions{CertFile: "/nope.crt", KeyFile: "/nope.key"}); err == nil || !strings.Contains(err.Error(), "/nope.crt") {
		t.Fatalf("missing files: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	if _, err := ClientConfig(ClientOptions{CAFile: garbage}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("garbage CA: %v", err)
	}
	if _, err := ClientConfig(ClientOptions{CertFile: "x.crt"}); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("cert without key: %v", err)
	}
	if cfg, err := ClientConfig(ClientOptions{Insecure: true, CAFile: garbage}); cfg != nil || err != nil {
		t.Fatalf("insecure: %v %v", cfg, err)
	}
}

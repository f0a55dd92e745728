package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// KeyPair is a PEM certificate and its PEM private key.
type KeyPair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// WriteFiles writes the pair to dir/name.crt and dir/name.key (key mode
// 0600) and returns both paths.
func (k *KeyPair) WriteFiles(dir, name string) (certFile, keyFile string, err error) {
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, k.CertPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("write %s: %w", certFile, err)
	}
	if err := os.WriteFile(keyFile, k.KeyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("write %s: %w", keyFile, err)
	}
	return certFile, keyFile, nil
}

// CA is a self-signed certificate authority for tests and demos.
type CA struct {
	KeyPair
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA creates a CA (ECDSA P-256, valid 10 years) named cn.
func NewCA(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Loupe"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	kp, err := encode(der, key)
	if err != nil {
		return nil, err
	}
	return &CA{KeyPair: *kp, cert: cert, key: key}, nil
}

// IssueServer issues a server certificate for hosts (DNS names or IP
// addresses); with no hosts, for localhost, 127.0.0.1 and ::1.
func (ca *CA) IssueServer(cn string, hosts ...string) (*KeyPair, error) {
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	return ca.issue(cn, hosts, x509.ExtKeyUsageServerAuth)
}

// IssueClient issues a client certificate with CommonName cn and optional
// DNS SANs (the collector accepts either as the node identity).
func (ca *CA) IssueClient(cn string, dnsNames ...string) (*KeyPair, error) {
	return ca.issue(cn, dnsNames, x509.ExtKeyUsageClientAuth)
}

func (ca *CA) issue(cn string, hosts []string, usage x509.ExtKeyUsage) (*KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key for %s: %w", cn, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Loupe"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(2 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", cn, err)
	}
	return encode(der, key)
}

func encode(der []byte, key *ecdsa.PrivateKey) (*KeyPair, error) {
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return &KeyPair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// PKIFiles are the paths GeneratePKI wrote.
type PKIFiles struct {
	CAFile     string
	ServerCert string
	ServerKey  string
	// Clients maps each client CommonName to its certificate and key paths.
	Clients map[string][2]string
}

// GeneratePKI writes a complete demo/test PKI into dir: ca.crt (+ ca.key),
// server.crt/.key for localhost and 127.0.0.1, and one <cn>.crt/.key client
// pair per clientCN.
func GeneratePKI(dir string, clientCNs ...string) (*PKIFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	ca, err := NewCA("Loupe test CA")
	if err != nil {
		return nil, err
	}
	out := &PKIFiles{Clients: map[string][2]string{}}
	if out.CAFile, _, err = ca.WriteFiles(dir, "ca"); err != nil {
		return nil, err
	}
	srv, err := ca.IssueServer("loupe-collector")
	if err != nil {
		return nil, err
	}
	if out.ServerCert, out.ServerKey, err = srv.WriteFiles(dir, "server"); err != nil {
		return nil, err
	}
	for _, cn := range clientCNs {
		kp, err := ca.IssueClient(cn)
		if err != nil {
			return nil, err
		}
		c, k, err := kp.WriteFiles(dir, "client-"+cn)
		if err != nil {
			return nil, err
		}
		out.Clients[cn] = [2]string{c, k}
	}
	return out, nil
}

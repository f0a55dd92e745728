// Package tlsutil loads the TLS configurations Loupe's gRPC servers and
// clients use (TLS, mTLS) and generates small test/demo PKIs: a CA, a server
// certificate and client certificates with a chosen CommonName.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ServerOptions are the PEM files of a TLS server.
type ServerOptions struct {
	// CertFile and KeyFile are the server's certificate (chain) and key.
	CertFile string
	KeyFile  string
	// ClientCAFile, when set, turns on mTLS: clients must present a
	// certificate signed by this CA.
	ClientCAFile string
}

// ClientOptions are the PEM files and mode of a TLS client.
type ClientOptions struct {
	// CertFile and KeyFile are the client certificate and key for mTLS (optional).
	CertFile string
	KeyFile  string
	// CAFile is the CA that signed the server's certificate; empty means the
	// system roots.
	CAFile string
	// ServerName overrides the name checked in the server certificate
	// (default: the host part of the address dialled).
	ServerName string
	// Insecure selects a plaintext connection (no TLS at all).
	Insecure bool
}

// ErrNoServerCert is returned when TLS is wanted but no certificate was given.
var ErrNoServerCert = errors.New("TLS needs --tls-cert and --tls-key (or --insecure for plaintext)")

// ServerConfig builds the server-side TLS configuration (TLS 1.2+). With a
// client CA, a verified client certificate is required.
func ServerConfig(o ServerOptions) (*tls.Config, error) {
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, ErrNoServerCert
	}
	cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load server certificate %s / key %s: %w", o.CertFile, o.KeyFile, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.NoClientCert,
	}
	if o.ClientCAFile != "" {
		pool, err := loadPool(o.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("load client CA: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientConfig builds the client-side TLS configuration. It returns nil, nil
// when o.Insecure is set (plaintext).
func ClientConfig(o ClientOptions) (*tls.Config, error) {
	if o.Insecure {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if o.CAFile != "" {
		pool, err := loadPool(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("load CA: %w", err)
		}
		cfg.RootCAs = pool
	}
	switch {
	case o.CertFile != "" && o.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s / key %s: %w", o.CertFile, o.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case o.CertFile != "" || o.KeyFile != "":
		return nil, errors.New("a client certificate needs both --tls-cert and --tls-key")
	}
	return cfg, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}

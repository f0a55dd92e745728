package collector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// MaxClientRecvBytes is the largest message a client made by Dial accepts
// (query chunks stay far below it).
const MaxClientRecvBytes = 64 << 20

// Dial connects to the collector at addr (HOST:PORT) with TLS, mTLS or, with
// o.Insecure, plaintext. It first checks that something listens there, so a
// stopped collector gives an error that says so instead of a timeout later.
func Dial(ctx context.Context, addr string, o tlsutil.ClientOptions) (*grpc.ClientConn, error) {
	tlsCfg, err := tlsutil.ClientConfig(o)
	if err != nil {
		return nil, fmt.Errorf("collector TLS settings: %w", err)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("collector address %q: want HOST:PORT, e.g. 127.0.0.1:7443", addr)
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot reach collector at %s: %s — is loupe-collector running?", addr, dialReason(err))
	}
	c.Close()
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxClientRecvBytes)))
	if err != nil {
		return nil, fmt.Errorf("connect to collector at %s: %w", addr, err)
	}
	return conn, nil
}

func dialReason(err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	case errors.As(err, &dnsErr):
		return "no such host " + dnsErr.Name
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	}
	return err.Error()
}

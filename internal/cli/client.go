package cli

import (
	"context"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// clientFlags are the connection flags every command that talks to a
// collector takes; each has an environment-variable fallback.
type clientFlags struct {
	addr     string
	cert     string
	key      string
	ca       string
	insecure bool
}

func (c *clientFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.addr, "collector", envOr("LOUPE_COLLECTOR", "127.0.0.1:7443"), "collector gRPC address HOST:PORT ($LOUPE_COLLECTOR)")
	f.StringVar(&c.cert, "tls-cert", os.Getenv("LOUPE_TLS_CERT"), "client certificate for mTLS, PEM ($LOUPE_TLS_CERT)")
	f.StringVar(&c.key, "tls-key", os.Getenv("LOUPE_TLS_KEY"), "client private key for mTLS, PEM ($LOUPE_TLS_KEY)")
	f.StringVar(&c.ca, "ca", os.Getenv("LOUPE_CA"), "CA certificate that signed the collector's certificate, PEM ($LOUPE_CA)")
	f.BoolVar(&c.insecure, "insecure", os.Getenv("LOUPE_INSECURE") == "1", "plaintext connection, for a collector run with --insecure ($LOUPE_INSECURE=1)")
}

// dial connects to the collector; errors say what to check.
func (c *clientFlags) dial(ctx context.Context) (*grpc.ClientConn, error) {
	return collector.Dial(ctx, c.addr, tlsutil.ClientOptions{
		CertFile: c.cert, KeyFile: c.key, CAFile: c.ca, Insecure: c.insecure,
	})
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

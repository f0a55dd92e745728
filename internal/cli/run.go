package cli

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/loupe-dev/loupe/agent"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/collector/console"
)

func newRunCmd() *cobra.Command {
	cfg := agent.DefaultConfig()
	var grpcListen, collectorHTTP, db, consoleListen, consoleTokens string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "All-in-one for a single node: the agent and an embedded collector (SQLite) in one process",
		Long: `Run the node agent and a collector with an embedded SQLite store in one process: the
quickest way to use Loupe on one machine. The agent delivers to the embedded collector over
loopback; "loupe query" and "loupe nodes" work against --grpc-listen as with a real collector.`,
		Example: `  loupe run --state-dir /var/lib/loupe
  loupe query --collector 127.0.0.1:7443 --insecure --kind shell_exec`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			if db == "" {
				db = "sqlite://" + filepath.Join(cfg.StateDir, "collector.db")
			}
			srv, err := collector.New(ctx, collector.Config{GRPCListen: grpcListen, HTTPListen: collectorHTTP, DB: db, Insecure: true,
				Retention: collector.DefaultRetention, ConsoleListen: consoleListen, ConsoleAuth: console.AuthConfig{TokenFile: consoleTokens}})
			if err != nil {
				return err
			}
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx) }()
			cfg.Collector = srv.GRPCAddr().String()
			cfg.TLS.Insecure = true
			err = agent.Run(ctx, cfg)
			cancel()
			if cerr := <-done; err == nil && cerr != nil {
				err = fmt.Errorf("embedded collector: %w", cerr)
			}
			return err
		},
	}
	agent.RegisterFlags(cmd.Flags(), &cfg)
	for _, f := range []string{"collector", "tls-cert", "tls-key", "ca", "collector-server-name", "insecure"} {
		cmd.Flags().MarkHidden(f)
	}
	cmd.Flags().StringVar(&grpcListen, "grpc-listen", "127.0.0.1:7443", "the embedded collector's gRPC address, for loupe query (plaintext: keep it on loopback)")
	cmd.Flags().StringVar(&collectorHTTP, "collector-http-listen", "", "the embedded collector's /metrics address (off when empty)")
	cmd.Flags().StringVar(&db, "db", "", "the embedded collector's store (default sqlite://<state-dir>/collector.db)")
	cmd.Flags().StringVar(&consoleListen, "console-listen", "", "the embedded collector's web console address, e.g. 127.0.0.1:8080 (off when empty; needs --console-token-file)")
	cmd.Flags().StringVar(&consoleTokens, "console-token-file", "", "console bearer tokens, one sha256 per line: printf %s \"$TOKEN\" | sha256sum > FILE")
	return cmd
}

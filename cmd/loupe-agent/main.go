// Command loupe-agent is Loupe's node agent (a privileged DaemonSet): it
// inspects containers from the host, traces exec attempts with eBPF and
// streams findings to the collector. See `loupe-agent --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/loupe-dev/loupe/agent"
	"github.com/loupe-dev/loupe/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := agent.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "loupe-agent",
		Short: "Loupe node agent: container inspection and exec tracing, streamed to the collector",
		Long: `loupe-agent runs on every node (as root, or with the capabilities listed in
docs/install.md). It follows containerd for containers, inspects their filesystems from the
host without executing anything in them, traces exec attempts with eBPF, and streams findings
to loupe-collector through an on-disk spool that survives restarts.`,
		Example: `  loupe-agent --collector collector.loupe:7443 --tls-cert agent.crt --tls-key agent.key --ca ca.crt
  loupe-agent --collector 127.0.0.1:7443 --insecure --state-dir /tmp/loupe --http-listen 127.0.0.1:9090`,
		Version:       version.String(),
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return agent.Run(cmd.Context(), cfg)
		},
	}
	agent.RegisterFlags(cmd.Flags(), &cfg)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "loupe-agent:", err)
		os.Exit(1)
	}
}

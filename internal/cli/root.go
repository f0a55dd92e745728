// Package cli implements the `loupe` command: queries and reports against a
// collector, ingestion of exported findings, and offline scans.
package cli

import (
	"github.com/spf13/cobra"

	"github.com/loupe-dev/loupe/internal/version"
)

// NewRootCommand builds the `loupe` command tree.
func NewRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "loupe",
		Short: "Loupe: container security findings, queries and offline scans",
		Long: `loupe talks to a Loupe collector (query, nodes, ingest) and scans images and
directories offline (scan). Collector address: --collector, else $LOUPE_COLLECTOR, else 127.0.0.1:7443.`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newQueryCmd(),
		newNodesCmd(),
		newIngestCmd(),
		newRunCmd(),
		newScanCmd(),
		newReportCmd(),
		newCaptureCmd(),
	)
	return root
}

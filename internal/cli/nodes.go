package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/humanize"
)

func newNodesCmd() *cobra.Command {
	var (
		cf     clientFlags
		format string
	)
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the agents known to the collector",
		Long:  "List the agents known to the collector: version, when each was last heard from, and how many findings it sent.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			conn, err := cf.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := loupev1.NewCollectorClient(conn).ListNodes(cmd.Context(), &loupev1.ListNodesRequest{})
			if err != nil {
				return rpcError(cf.addr, "list nodes", err)
			}
			if format == formatTable {
				return nodesTable(cmd.OutOrStdout(), resp.GetNodes(), time.Now())
			}
			msgs := make([]proto.Message, len(resp.GetNodes()))
			for i, n := range resp.GetNodes() {
				msgs[i] = n
			}
			return printMessages(cmd.OutOrStdout(), format, msgs)
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", formatTable, "output format: table, json or jsonl")
	cf.register(cmd)
	return cmd
}

func nodesTable(w io.Writer, nodes []*loupev1.Node, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tVERSION\tCONNECTED\tLAST SEEN\tFINDINGS\tTOP KINDS")
	for _, n := range nodes {
		connected := "no"
		if n.GetConnected() {
			connected = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", cell(n.GetName()), cell(n.GetAgentVersion()), connected,
			humanize.Ago(n.GetLastSeen().AsTime(), now), n.GetFindings(), cell(topKinds(n.GetFindingsByKind(), 3)))
	}
	return tw.Flush()
}

// topKinds renders the n most frequent kinds as "SHELL_EXEC=4 EXEC=2".
func topKinds(m map[string]int64, n int) string {
	type kv struct {
		k string
		v int64
	}
	var all []kv
	for k, v := range m {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].v != all[j].v {
			return all[i].v > all[j].v
		}
		return all[i].k < all[j].k
	})
	var parts []string
	for i := 0; i < len(all) && i < n; i++ {
		parts = append(parts, fmt.Sprintf("%s=%d", all[i].k, all[i].v))
	}
	return strings.Join(parts, " ")
}

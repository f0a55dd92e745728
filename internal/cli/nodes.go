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
	"github.com/loupe-dev/loupe/internal/filter"
	"github.com/loupe-dev/loupe/internal/humanize"
)

func newNodesCmd() *cobra.Command {
	var (
		cf           clientFlags
		format       string
		since, until string
	)
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the agents known to the collector",
		Long: `List the agents known to the collector: version, when each was last heard from, and how many findings it sent.

With --since, also each agent's silences in that range: the stretches in which it sent nothing
for more than 90 s (agents send a batch at least every 30 s) — a node down, an agent stopped or
cut off from the collector, a blind spot for an investigation. -o json/jsonl lists the sessions
(the stretches in which the agent reported) themselves.`,
		Example: `  loupe nodes
  loupe nodes --since 24h
  loupe nodes --since 2026-12-01T00:00:00Z --until 2026-12-02T00:00:00Z -o jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			now := time.Now()
			req := &loupev1.ListNodesRequest{}
			var err error
			if req.SessionsSince, err = filter.ParseTime("--since", since, now); err != nil {
				return err
			}
			if req.SessionsUntil, err = filter.ParseTime("--until", until, now); err != nil {
				return err
			}
			if req.SessionsUntil != nil && req.SessionsSince == nil {
				return fmt.Errorf("--until needs --since")
			}
			conn, err := cf.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			resp, err := loupev1.NewCollectorClient(conn).ListNodes(cmd.Context(), req)
			if err != nil {
				return rpcError(cf.addr, "list nodes", err)
			}
			if format == formatTable {
				return nodesTable(cmd.OutOrStdout(), resp.GetNodes(), now, req.SessionsSince != nil)
			}
			msgs := make([]proto.Message, len(resp.GetNodes()))
			for i, n := range resp.GetNodes() {
				msgs[i] = n
			}
			return printMessages(cmd.OutOrStdout(), format, msgs)
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", formatTable, "output format: table, json or jsonl")
	cmd.Flags().StringVar(&since, "since", "", "also show each agent's silences since this time: a duration before now (90m, 24h, 7d) or an RFC 3339 time")
	cmd.Flags().StringVar(&until, "until", "", "end of the --since range (default now)")
	cf.register(cmd)
	return cmd
}

func nodesTable(w io.Writer, nodes []*loupev1.Node, now time.Time, silences bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "NODE\tVERSION\tCONNECTED\tLAST SEEN\tFINDINGS\tTOP KINDS"
	if silences {
		head += "\tSILENCES\tLONGEST SILENCE"
	}
	fmt.Fprintln(tw, head)
	for _, n := range nodes {
		connected := "no"
		if n.GetConnected() {
			connected = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s", cell(n.GetName()), cell(n.GetAgentVersion()), connected,
			humanize.Ago(n.GetLastSeen().AsTime(), now), n.GetFindings(), cell(topKinds(n.GetFindingsByKind(), 3)))
		if silences {
			count, longest, at := silencesOf(n.GetSessions())
			if count == 0 {
				fmt.Fprint(tw, "\t0\t-")
			} else {
				fmt.Fprintf(tw, "\t%d\t%s from %s", count, longest, at.UTC().Format(time.RFC3339))
			}
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// silencesOf counts the silences between sessions (oldest first) and
// returns the longest and when it began.
func silencesOf(ss []*loupev1.AgentSession) (n int, longest time.Duration, at time.Time) {
	for i := 1; i < len(ss); i++ {
		end := ss[i-1].GetEnd().AsTime()
		d := ss[i].GetStart().AsTime().Sub(end).Round(time.Second)
		n++
		if d > longest {
			longest, at = d, end
		}
	}
	return n, longest, at
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

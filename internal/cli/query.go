package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/internal/filter"
)

// queryFilters are the collector query flags shared by `loupe query` and
// `loupe report`; the console's URL parameters carry the same filter.Filter.
type queryFilters struct {
	filter.Filter
}

func (q *queryFilters) register(f *pflag.FlagSet, defaultLimit uint32) {
	f.StringVar(&q.Since, "since", "24h", "only findings after this: a duration ago (90m, 24h, 7d) or RFC 3339 time; \"\" for all")
	f.StringVar(&q.Until, "until", "", "only findings before this: a duration ago or RFC 3339 time")
	f.StringArrayVar(&q.Kinds, "kind", nil, "finding kind, e.g. shell_exec, exec_failed, drift_exec (repeatable)")
	f.StringVar(&q.Severity, "severity", "", "minimum severity: info, low, medium, high, critical")
	f.StringArrayVar(&q.Nodes, "node", nil, "node name (repeatable)")
	f.StringVar(&q.Namespace, "namespace", "", "Kubernetes namespace")
	f.StringVar(&q.Pod, "pod", "", "pod name; * matches any characters (api-*)")
	f.StringVar(&q.Container, "container", "", "container id or a prefix of at least 4 characters")
	f.StringVar(&q.Image, "image", "", "image reference; * matches any characters")
	f.StringVar(&q.Sha256, "sha256", "", "file sha256 (hex)")
	f.StringVar(&q.Grep, "grep", "", "case-insensitive text in argv, file path, package or summary")
	f.StringVar(&q.User, "user", "", "Kubernetes user (* matches any characters): their audit events (kubectl exec, attach, debug, …) and the node findings those caused")
	f.Uint32Var(&q.Limit, "limit", defaultLimit, "maximum number of findings")
	f.BoolVar(&q.OldestFirst, "oldest-first", false, "oldest findings first (a timeline)")
}

// fetchFindings runs a query against the collector and collects the stream.
func fetchFindings(ctx context.Context, cf *clientFlags, req *loupev1.QueryRequest) ([]*loupev1.Finding, error) {
	conn, err := cf.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stream, err := loupev1.NewCollectorClient(conn).Query(ctx, req)
	if err != nil {
		return nil, rpcError(cf.addr, "query", err)
	}
	var out []*loupev1.Finding
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, rpcError(cf.addr, "query", err)
		}
		out = append(out, resp.GetFindings()...)
	}
}

func newQueryCmd() *cobra.Command {
	var (
		cf     clientFlags
		qf     queryFilters
		format string
		all    bool
	)
	cmd := &cobra.Command{
		Use:   "query",
		Short: "Search the findings stored by the collector",
		Long: `Search the findings stored by the collector. Every flag narrows the result;
--kind and --node may be repeated. Newest findings first unless --oldest-first.`,
		Example: `  loupe query --since 24h --kind shell_exec
  loupe query --kind exec_failed --kind runtime_exec_failed --namespace payments
  loupe query --pod 'api-*' --since 2h --oldest-first      # one pod's timeline
  loupe query --sha256 9f86d08…  -o jsonl > hits.jsonl
  loupe query --user alice@corp.example --since 7d          # what alice did, and what it caused on the nodes
  loupe query --kind k8s_exec --namespace payments --since 7d   # who ran kubectl exec there
  loupe query --since '' --all -o jsonl | loupe ingest - --collector new:7443   # move a store`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			req, err := qf.Request(time.Now())
			if err != nil {
				return err
			}
			if all {
				if format != formatJSONL {
					return errors.New("--all streams every match as JSONL: add -o jsonl")
				}
				if cmd.Flags().Changed("limit") || cmd.Flags().Changed("oldest-first") {
					return errors.New("--all pages through every match oldest first: drop --limit and --oldest-first")
				}
				return queryAll(cmd.Context(), &cf, req, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			out, err := fetchFindings(cmd.Context(), &cf, req)
			if err != nil {
				return err
			}
			if err := printFindings(cmd.OutOrStdout(), format, out); err != nil {
				return err
			}
			if format == formatTable {
				fmt.Fprintf(cmd.ErrOrStderr(), "%d finding(s)\n", len(out))
			}
			return nil
		},
	}
	f := cmd.Flags()
	qf.register(f, 1000)
	f.StringVarP(&format, "output", "o", formatTable, "output format: table, json or jsonl")
	f.BoolVar(&all, "all", false, "every match, oldest first, in pages of the collector's maximum limit (with -o jsonl; progress on stderr)")
	cf.register(cmd)
	return cmd
}

// allPageSize is the page size of --all: the collector's maximum limit.
var allPageSize uint32 = store.MaxLimit

// queryAll pages through every finding req matches, oldest first, writing
// JSONL to w. Each page starts at the last page's newest time (inclusive) and
// skips the findings of that instant already written, so nothing is lost or
// repeated between pages.
func queryAll(ctx context.Context, cf *clientFlags, req *loupev1.QueryRequest, w, progress io.Writer) error {
	conn, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := loupev1.NewCollectorClient(conn)
	req.Order, req.Limit = loupev1.Order_ORDER_OLDEST_FIRST, allPageSize
	bw := bufio.NewWriter(w)
	var (
		cursor *timestamppb.Timestamp
		atCur  map[string]bool // ids written at the cursor's instant
		total  int
		start  = time.Now()
	)
	for {
		if cursor != nil {
			req.Since = cursor
		}
		stream, err := c.Query(ctx, req)
		if err != nil {
			return rpcError(cf.addr, "query", err)
		}
		var (
			n        int
			last     *timestamppb.Timestamp
			atLast   = map[string]bool{}
			sameTime = func(a, b *timestamppb.Timestamp) bool {
				return a != nil && b != nil && a.GetSeconds() == b.GetSeconds() && a.GetNanos() == b.GetNanos()
			}
		)
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return rpcError(cf.addr, "query", err)
			}
			for _, f := range resp.GetFindings() {
				n++
				if !sameTime(f.GetTime(), last) {
					last, atLast = f.GetTime(), map[string]bool{}
				}
				atLast[f.GetId()] = true
				if sameTime(f.GetTime(), cursor) && atCur[f.GetId()] {
					continue
				}
				b, err := jsonOpts.Marshal(f)
				if err != nil {
					return fmt.Errorf("encode JSON: %w", err)
				}
				bw.Write(b)
				if err := bw.WriteByte('\n'); err != nil {
					return err
				}
				total++
			}
		}
		if n < int(allPageSize) {
			if err := bw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(progress, "%d finding(s) in %s\n", total, time.Since(start).Round(time.Millisecond))
			return nil
		}
		if sameTime(last, cursor) {
			return fmt.Errorf("more than %d findings share the instant %s: narrow the query (e.g. --node) and run it per part",
				allPageSize, last.AsTime().Format(time.RFC3339Nano))
		}
		cursor, atCur = last, atLast
		fmt.Fprintf(progress, "%d finding(s) so far, up to %s (%s)\n", total, last.AsTime().Format(time.RFC3339), time.Since(start).Round(time.Second))
	}
}

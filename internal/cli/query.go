package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

func newQueryCmd() *cobra.Command {
	var (
		cf                     clientFlags
		since, until, severity string
		kinds                  []string
		req                    loupev1.QueryRequest
		nodes                  []string
		oldestFirst            bool
		limit                  uint32
		format                 string
	)
	cmd := &cobra.Command{
		Use:   "query",
		Short: "Search the findings stored by the collector",
		Long: `Search the findings stored by the collector. Every flag narrows the result;
--kind and --node may be repeated. Newest findings first unless --oldest-first.`,
		Example: `  loupe query --since 24h --kind shell_exec
  loupe query --kind exec_failed --kind runtime_exec_failed --namespace payments
  loupe query --pod 'api-*' --since 2h --oldest-first      # one pod's timeline
  loupe query --sha256 9f86d08…  -o jsonl > hits.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			now := time.Now()
			var err error
			if req.Since, err = parseTimeFlag("--since", since, now); err != nil {
				return err
			}
			if req.Until, err = parseTimeFlag("--until", until, now); err != nil {
				return err
			}
			for _, k := range kinds {
				kind, err := loupev1.ParseKind(k)
				if err != nil {
					return fmt.Errorf("--kind: %w", err)
				}
				req.Kinds = append(req.Kinds, kind)
			}
			if severity != "" {
				if req.MinSeverity, err = loupev1.ParseSeverity(severity); err != nil {
					return fmt.Errorf("--severity: %w", err)
				}
			}
			req.Nodes = nodes
			req.Limit = limit
			req.Order = loupev1.Order_ORDER_NEWEST_FIRST
			if oldestFirst {
				req.Order = loupev1.Order_ORDER_OLDEST_FIRST
			}
			conn, err := cf.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			stream, err := loupev1.NewCollectorClient(conn).Query(cmd.Context(), &req)
			if err != nil {
				return rpcError(cf.addr, "query", err)
			}
			var out []*loupev1.Finding
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return rpcError(cf.addr, "query", err)
				}
				out = append(out, resp.GetFindings()...)
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
	f.StringVar(&since, "since", "24h", "only findings after this: a duration ago (90m, 24h, 7d) or RFC 3339 time; \"\" for all")
	f.StringVar(&until, "until", "", "only findings before this: a duration ago or RFC 3339 time")
	f.StringArrayVar(&kinds, "kind", nil, "finding kind, e.g. shell_exec, exec_failed, drift_exec (repeatable)")
	f.StringVar(&severity, "severity", "", "minimum severity: info, low, medium, high, critical")
	f.StringArrayVar(&nodes, "node", nil, "node name (repeatable)")
	f.StringVar(&req.Namespace, "namespace", "", "Kubernetes namespace")
	f.StringVar(&req.Pod, "pod", "", "pod name; * matches any characters (api-*)")
	f.StringVar(&req.ContainerId, "container", "", "container id or a prefix of at least 4 characters")
	f.StringVar(&req.Image, "image", "", "image reference; * matches any characters")
	f.StringVar(&req.Sha256, "sha256", "", "file sha256 (hex)")
	f.StringVar(&req.Grep, "grep", "", "case-insensitive text in argv, file path, package or summary")
	f.Uint32Var(&limit, "limit", 1000, "maximum number of findings")
	f.BoolVar(&oldestFirst, "oldest-first", false, "oldest findings first (a timeline)")
	f.StringVarP(&format, "output", "o", formatTable, "output format: table, json or jsonl")
	cf.register(cmd)
	return cmd
}

// parseTimeFlag accepts "", a duration before now (Go syntax plus a "d"
// suffix for days) or an RFC 3339 time.
func parseTimeFlag(name, v string, now time.Time) (*timestamppb.Timestamp, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return timestamppb.New(t), nil
	}
	d, err := parseDuration(v)
	if err != nil {
		return nil, fmt.Errorf("%s %q: want a duration like 90m, 24h or 7d, or an RFC 3339 time like 2026-01-02T15:04:05Z", name, v)
	}
	return timestamppb.New(now.Add(-d)), nil
}

// parseDuration is time.ParseDuration plus whole days ("7d").
func parseDuration(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err != nil || days < 0 || fmt.Sprint(days) != n {
			return 0, fmt.Errorf("bad day count %q", v)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err == nil && d < 0 {
		return 0, fmt.Errorf("negative duration %q", v)
	}
	return d, err
}

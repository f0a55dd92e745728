package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/loupe-dev/loupe/agent/capture"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

func newCaptureCmd() *cobra.Command {
	var (
		cf        clientFlags
		pod       string
		container string
		req       loupev1.CaptureRequest
		opts      loupev1.CaptureOptions
		format    string
		save      string
	)
	cmd := &cobra.Command{
		Use:   "capture (--pod NAMESPACE/POD [--container NAME] | --container ID) --reason TEXT",
		Short: "Capture forensic evidence of a running container (no exec, no stop)",
		Long: `capture asks the collector for an evidence bundle of one running container; the
collector passes the request down the Control stream the container's node agent holds
(no inbound port on the node), and the agent collects from the host side, touching
nothing in the container:

  - the upper dir (runtime changes): every added, changed or deleted entry with mode,
    owner, times, size and sha256, file contents within --max-file-bytes/--max-total-bytes;
  - with --path GLOB, files of the merged view, each with the layer it comes from;
  - every process of the container's cgroup: cmdline, exe and the sha256 of the
    executable as mapped (deleted? from the upper dir?), cwd, ids, capabilities, start
    time, parent, open fds, TCP/UDP sockets, memory maps (anonymous executable regions
    flagged), and with --env its environment;
  - the container's runtime record (image, digests, layers, spec facts, labels, mounts);
  - the container's finding timeline from the collector.

--freeze freezes the container's cgroup (cgroup v2) during collection and thaws it
after, always; the frozen time is recorded. The bundle (.tar.gz with manifest.json and
SHA256SUMS) stays at the collector; its sha256 is recorded in a CAPTURE finding. The
agent refuses unless its rules allow captures (capture.enabled, capture.namespaces);
the collector accepts requests only from its admin certificate. --reason is required.

Fetch bundles with "loupe capture list" and "loupe capture get ID -o FILE"; check one
offline with "loupe capture verify FILE".`,
		Example: `  loupe capture --pod payments/api-7d9f8b6c5d-x2k4p --reason "INC-4711: shell attempt" --save api.tar.gz
  loupe capture --container 3f2a9c --reason "drift alert" --path '/etc/*' --freeze`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != formatTable && format != formatJSON {
				return fmt.Errorf("unknown output format %q: use table or json", format)
			}
			switch {
			case pod != "":
				ns, name, ok := strings.Cut(pod, "/")
				if !ok || ns == "" || name == "" {
					return fmt.Errorf("--pod %q: want NAMESPACE/POD", pod)
				}
				req.Namespace, req.Pod, req.ContainerName = ns, name, container
			case container != "":
				req.ContainerId = container
			default:
				return errors.New("name the container: --pod NAMESPACE/POD [--container NAME] or --container ID")
			}
			if strings.TrimSpace(req.Reason) == "" {
				return errors.New("--reason is required: say why the evidence is taken (it is recorded in the bundle and the CAPTURE finding)")
			}
			req.Options = &opts
			conn, err := cf.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			stream, err := loupev1.NewCollectorClient(conn).Capture(cmd.Context(), &req)
			if err != nil {
				return rpcError(cf.addr, "capture", err)
			}
			errw := cmd.ErrOrStderr()
			start := time.Now()
			var info *loupev1.CaptureInfo
			for info == nil {
				ev, err := stream.Recv()
				if err == io.EOF {
					return errors.New("capture: the collector ended the stream without a result")
				}
				if err != nil {
					return rpcError(cf.addr, "capture", err)
				}
				if p := ev.GetProgress(); p != nil {
					msg := p.GetMessage()
					if p.GetStage() == "uploading" || msg == "" {
						msg = humanBytes(p.GetBytes())
					}
					fmt.Fprintf(errw, "[%5.1fs] %-10s %s\n", time.Since(start).Seconds(), p.GetStage(), msg)
				}
				info = ev.GetResult()
			}
			if save != "" {
				if err := download(cmd, &cf, info.GetId(), save); err != nil {
					return err
				}
				fmt.Fprintf(errw, "bundle saved to %s\n", save)
			}
			if format == formatJSON {
				return printMessages(cmd.OutOrStdout(), formatJSON, []proto.Message{info})
			}
			return captureInfoTable(cmd.OutOrStdout(), info)
		},
	}
	f := cmd.Flags()
	f.StringVar(&pod, "pod", "", "the pod, NAMESPACE/POD")
	f.StringVar(&container, "container", "", "with --pod: the container's name (needed when the pod has several); alone: a container id or unique prefix")
	f.StringVar(&req.Node, "node", "", "the node the container runs on (default: from the container's findings)")
	f.StringVar(&req.Reason, "reason", "", "why the evidence is taken (required; recorded)")
	f.StringArrayVar(&opts.Paths, "path", nil, "also copy merged-view files matching this absolute glob (repeatable), e.g. '/etc/*'")
	f.BoolVar(&opts.IncludeEnv, "env", false, "include each process's environment (off by default: secrets)")
	f.BoolVar(&opts.Freeze, "freeze", false, "freeze the container's cgroup during collection (thawed after, always)")
	f.Int64Var(&opts.MaxFileBytes, "max-file-bytes", 0, "largest file whose contents are copied (default 16 MiB)")
	f.Int64Var(&opts.MaxTotalBytes, "max-total-bytes", 0, "total file contents copied (default 512 MiB)")
	f.StringVar(&save, "save", "", "download the bundle to this file when it is stored")
	f.StringVarP(&format, "output", "o", formatTable, "output format of the result: table or json")
	cf.register(cmd)
	cmd.AddCommand(newCaptureListCmd(), newCaptureGetCmd(), newCaptureVerifyCmd())
	return cmd
}

func newCaptureListCmd() *cobra.Command {
	var (
		cf        clientFlags
		container string
		limit     uint32
		format    string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the evidence bundles stored at the collector",
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
			resp, err := loupev1.NewCollectorClient(conn).ListCaptures(cmd.Context(), &loupev1.ListCapturesRequest{ContainerId: container, Limit: limit})
			if err != nil {
				return rpcError(cf.addr, "list captures", err)
			}
			if format == formatTable {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tTIME\tNODE\tCONTAINER\tSIZE\tBY\tREASON")
				for _, c := range resp.GetCaptures() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.GetId(), c.GetCompletedAt().AsTime().Local().Format("2006-01-02 15:04:05"),
						cell(c.GetNode()), cell(podLabel(c.GetContainer())), humanBytes(c.GetSize()), cell(clip(c.GetRequestedBy(), 30)), cell(clip(c.GetReason(), 50)))
				}
				return tw.Flush()
			}
			msgs := make([]proto.Message, len(resp.GetCaptures()))
			for i, c := range resp.GetCaptures() {
				msgs[i] = c
			}
			return printMessages(cmd.OutOrStdout(), format, msgs)
		},
	}
	cmd.Flags().StringVar(&container, "container", "", "only bundles of this container id prefix")
	cmd.Flags().Uint32Var(&limit, "limit", 0, "at most this many, newest first (default 1000)")
	cmd.Flags().StringVarP(&format, "output", "o", formatTable, "output format: table, json or jsonl")
	cf.register(cmd)
	return cmd
}

func newCaptureGetCmd() *cobra.Command {
	var (
		cf  clientFlags
		out string
	)
	cmd := &cobra.Command{
		Use:   "get ID -o FILE",
		Short: "Download an evidence bundle and check it against the sha256 the collector recorded",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("-o FILE is required")
			}
			if err := download(cmd, &cf, args[0], out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: bundle %s saved, sha256 matches the collector's record\n", out, args[0])
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write the bundle to (.tar.gz)")
	cf.register(cmd)
	return cmd
}

// download fetches a bundle to path, checking size and sha256 against the
// collector's record; a mismatching file is removed.
func download(cmd *cobra.Command, cf *clientFlags, id, path string) error {
	conn, err := cf.dial(cmd.Context())
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := loupev1.NewCollectorClient(conn).GetCapture(cmd.Context(), &loupev1.GetCaptureRequest{Id: id})
	if err != nil {
		return rpcError(cf.addr, "get capture", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write bundle: %w (the file must not exist yet)", err)
	}
	ok := false
	defer func() {
		f.Close()
		if !ok {
			os.Remove(path)
		}
	}()
	h := sha256.New()
	var info *loupev1.CaptureInfo
	var n int64
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return rpcError(cf.addr, "get capture", err)
		}
		if c.GetInfo() != nil {
			info = c.GetInfo()
		}
		if _, err := f.Write(c.GetData()); err != nil {
			return fmt.Errorf("write bundle: %w", err)
		}
		h.Write(c.GetData())
		n += int64(len(c.GetData()))
	}
	if info == nil {
		return errors.New("get capture: the collector sent no record of the bundle")
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != info.GetSha256() || n != info.GetSize() {
		return fmt.Errorf("downloaded bundle has %d bytes with sha256 %s; the collector recorded %d bytes with sha256 %s", n, sum, info.GetSize(), info.GetSha256())
	}
	if err := f.Sync(); err != nil {
		return err
	}
	ok = true
	return nil
}

func newCaptureVerifyCmd() *cobra.Command {
	var (
		sum    string
		format string
	)
	cmd := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check an evidence bundle offline and print its manifest summary",
		Long: `verify reads a bundle and checks it needs nothing but the file: a well-formed gzip'd
tar of regular files; every artifact of manifest.json present with its size and sha256;
nothing the manifest does not list; SHA256SUMS consistent with the manifest. With
--sha256 it also checks the bundle's own hash (the one in the CAPTURE finding).
Exit status 1 when any check fails. After extracting, "sha256sum -c SHA256SUMS" checks
the artifacts with standard tools.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != formatTable && format != formatJSON {
				return fmt.Errorf("unknown output format %q: use table or json", format)
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			res, verr := capture.Verify(f)
			if verr == nil && sum != "" && !strings.EqualFold(strings.TrimPrefix(sum, "sha256:"), res.SHA256) {
				verr = fmt.Errorf("%w: the bundle's sha256 is %s, expected %s", capture.ErrVerify, res.SHA256, sum)
			}
			if format == formatJSON && res.Manifest != nil {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(res.Manifest); err != nil {
					return err
				}
			} else if res.Manifest != nil {
				manifestSummary(cmd.OutOrStdout(), res)
			}
			if verr != nil {
				return &ExitError{Code: 1, Err: fmt.Errorf("%s: %w", args[0], verr)}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: OK (%d entries, %s, sha256 %s)\n", args[0], res.Entries, humanBytes(res.Size), res.SHA256)
			return nil
		},
	}
	cmd.Flags().StringVar(&sum, "sha256", "", "expected sha256 of the bundle file (from the CAPTURE finding or capture list)")
	cmd.Flags().StringVarP(&format, "output", "o", formatTable, "output format of the manifest: table (summary) or json (the whole manifest)")
	return cmd
}

// manifestSummary prints what an investigator reads first.
func manifestSummary(w io.Writer, res *capture.Result) {
	m := res.Manifest
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := m.Container
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, cell(v)) }
	row("capture", m.CaptureID)
	row("container", fmt.Sprintf("%s/%s/%s (%s)", c.Namespace, c.Pod, c.Name, short(c.ID)))
	row("image", c.Image+" "+c.ImageDigest)
	row("node / agent", m.Node+" / "+m.AgentVersion)
	row("requested by", m.Requester.Identity)
	row("reason", m.Requester.Reason)
	row("requested at", m.Requester.RequestedAt.Format(time.RFC3339))
	row("collected", fmt.Sprintf("%s → %s (%s)", m.StartedAt.Format(time.RFC3339), m.CompletedAt.Format("15:04:05"), m.CompletedAt.Sub(m.StartedAt).Round(time.Millisecond)))
	if m.Freeze.Requested {
		fr := fmt.Sprintf("frozen %d ms", m.Freeze.DurationMS)
		if m.Freeze.Error != "" {
			fr += " — " + m.Freeze.Error
		}
		row("freeze", fr)
	}
	row("upper dir", fmt.Sprintf("%d entries, %s of contents copied", m.Counts.UpperEntries, humanBytes(m.Counts.ContentBytes)))
	if len(m.Options.Paths) > 0 {
		row("merged (--path)", fmt.Sprintf("%d files for %s", m.Counts.MergedFiles, strings.Join(m.Options.Paths, " ")))
	}
	row("processes", fmt.Sprintf("%d (%d gone during capture), %d sockets", m.Counts.Processes, m.Counts.ProcessesGone, m.Counts.Sockets))
	row("timeline", fmt.Sprintf("%d findings", m.Counts.TimelineFindings))
	row("artifacts", fmt.Sprintf("%d, each with size and sha256 in manifest.json and SHA256SUMS", len(m.Artifacts)))
	row("bundle", fmt.Sprintf("%s, sha256 %s", humanBytes(res.Size), res.SHA256))
	row("warnings", fmt.Sprint(len(m.Warnings)))
	tw.Flush()
}

func captureInfoTable(w io.Writer, c *loupev1.CaptureInfo) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, cell(v)) }
	row("capture", c.GetId())
	row("container", podLabel(c.GetContainer()))
	row("node", c.GetNode())
	row("requested by", c.GetRequestedBy())
	row("reason", c.GetReason())
	row("bundle", fmt.Sprintf("%s, sha256 %s", humanBytes(c.GetSize()), c.GetSha256()))
	row("contents", fmt.Sprintf("%d artifacts, %d processes", c.GetArtifacts(), c.GetProcesses()))
	if c.GetFrozenMs() > 0 {
		row("frozen", fmt.Sprintf("%d ms", c.GetFrozenMs()))
	}
	row("finding", c.GetFindingId())
	for _, wmsg := range c.GetWarnings() {
		row("warning", clip(wmsg, 160))
	}
	return tw.Flush()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// podLabel is namespace/pod/container (short id), else the container label.
func podLabel(c *loupev1.ContainerRef) string {
	if c.GetPod() == "" {
		return containerLabel(c)
	}
	return fmt.Sprintf("%s/%s/%s (%s)", c.GetNamespace(), c.GetPod(), c.GetName(), short(c.GetId()))
}

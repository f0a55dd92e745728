package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/loupe-dev/loupe/agent/inspect"
	"github.com/loupe-dev/loupe/agent/inspect/imagetar"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// exitFindings is the exit status of `scan --fail-on` when a finding at or
// above the threshold exists (1 stays "the scan itself failed").
const exitFindings = 3

func newScanCmd() *cobra.Command {
	var (
		format   string
		sbomFile string
		index    string
		failOn   string
		quiet    bool
		maxFiles int64
		hashCap  int64
		timeout  time.Duration
		user     string
		profiles []string // compliance: --profile (report.go)
		hdfFile  string
	)
	cmd := &cobra.Command{
		Use:   "scan DIR|IMAGE.tar",
		Short: "Inspect a root filesystem directory or an image tarball offline",
		Long: `Run the agent's inspection offline on a directory (an unpacked root filesystem) or an
image tarball (docker-archive as written by "docker save", or an OCI image layout tarball).
Nothing in the target is executed, followed out of the root, or changed; tarball layers are
unpacked safely into a temporary directory (entries with ".." or absolute names, hard links out
of the root and device nodes are rejected; whiteouts are applied).

Findings: SHELL_PRESENT, PKG_MANAGER_PRESENT, TOOL_PRESENT, IMAGE_PROFILE, PACKAGE, SUID,
WORLD_WRITABLE, RUNS_AS_ROOT (image tarballs: from the image config's User).

Exit status: 0 ok; 1 the scan failed; 3 with --fail-on when a finding at or above that severity
exists. A summary line (files, bytes, time) and progress go to stderr.`,
		Example: `  loupe scan ./rootfs
  loupe scan app.tar --sbom app.cdx.json -o json --fail-on high`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			var threshold loupev1.Severity
			if failOn != "" {
				s, err := loupev1.ParseSeverity(failOn)
				if err != nil {
					return fmt.Errorf("--fail-on: %w", err)
				}
				threshold = s
			}
			stderr := cmd.ErrOrStderr()
			opts := inspect.Options{MaxFiles: maxFiles, HashCap: hashCap, MaxDuration: timeout}
			if !quiet {
				start := time.Now()
				opts.Progress = func(p inspect.Progress) {
					if time.Since(start) > 2*time.Second {
						fmt.Fprintf(stderr, "scanning: %d files, %s\n", p.Files, mib(p.Bytes))
					}
				}
			}
			if index != "" {
				f, err := os.Create(index)
				if err != nil {
					return fmt.Errorf("create --index file: %w", err)
				}
				defer f.Close()
				bw := bufio.NewWriterSize(f, 1<<20)
				defer bw.Flush()
				opts.HashAll = true
				opts.OnFile = indexWriter(bw)
			}
			target, cleanup, err := scanTarget(args[0], stderr)
			if cleanup != nil {
				defer cleanup()
			}
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("user") {
				target.ImageUser, target.UserKnown = user, true
			}
			rep, err := inspect.New(opts, nil, nil).Scan(cmd.Context(), target)
			if err != nil {
				return err
			}
			controls, err := scanCompliance(cmd.Context(), target, rep, profiles, hdfFile)
			if err != nil {
				return err
			}
			rep.Findings = append(rep.Findings, controls...)
			if sbomFile != "" {
				if err := writeSBOM(sbomFile, rep); err != nil {
					return err
				}
			}
			fs := rep.Findings
			sort.SliceStable(fs, func(i, j int) bool { return fs[i].GetSeverity() > fs[j].GetSeverity() })
			if err := printFindings(cmd.OutOrStdout(), format, fs); err != nil {
				return err
			}
			for _, w := range rep.Warnings {
				fmt.Fprintln(stderr, "warning:", w)
			}
			fmt.Fprintln(stderr, scanSummary(rep))
			if threshold != loupev1.Severity_SEVERITY_UNSPECIFIED {
				n := 0
				for _, f := range fs {
					if f.GetSeverity() >= threshold {
						n++
					}
				}
				if n > 0 {
					return &ExitError{Code: exitFindings, Err: fmt.Errorf("%d finding(s) at or above %s", n, threshold.ShortName())}
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&format, "output", "o", formatTable, "output format: table, json or jsonl")
	f.StringVar(&sbomFile, "sbom", "", "write the package inventory as a CycloneDX JSON SBOM to `FILE`")
	f.StringVar(&index, "index", "", "hash every regular file and write a JSONL file index (path, layer, mode, size, sha256) to `FILE`")
	f.StringVar(&failOn, "fail-on", "", "exit with status 3 when a finding at or above `SEVERITY` exists (info, low, medium, high, critical)")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress lines on stderr")
	f.Int64Var(&maxFiles, "max-files", 0, "stop after this many files (default 2,000,000)")
	f.Int64Var(&hashCap, "hash-cap", 0, "do not hash files larger than this many bytes (default 256 MiB)")
	f.DurationVar(&timeout, "timeout", 0, "stop walking after this long (default 10m)")
	f.StringArrayVar(&profiles, "profile", nil, "run a compliance profile: a shipped `NAME` (distroless-baseline) or a profile FILE (repeatable); CONTROL_RESULT findings")
	f.StringVar(&hdfFile, "hdf", "", "write the compliance results as HDF (InSpec exec-json, for Heimdall) to `FILE` (default profile: distroless-baseline)")
	f.StringVar(&user, "user", "", "the user the container runs as, for RUNS_AS_ROOT (default: image config's User; unknown for directories)")
	return cmd
}

// scanTarget turns the argument into an inspect.Target: a directory as is,
// an image tarball unpacked into a temporary directory.
func scanTarget(arg string, stderr io.Writer) (inspect.Target, func(), error) {
	st, err := os.Stat(arg)
	if err != nil {
		return inspect.Target{}, nil, fmt.Errorf("scan %s: %w", arg, err)
	}
	if st.IsDir() {
		abs, _ := filepath.Abs(arg)
		return inspect.Target{Root: arg, Name: abs, RootLayer: "rootfs"}, nil, nil
	}
	if !imagetar.IsImageTar(arg) {
		return inspect.Target{}, nil, fmt.Errorf("scan %s: neither a directory nor an image tarball (docker-archive or OCI layout)", arg)
	}
	tmp, err := os.MkdirTemp("", "loupe-scan-")
	if err != nil {
		return inspect.Target{}, nil, fmt.Errorf("create temporary directory: %w", err)
	}
	cleanup := func() { os.RemoveAll(tmp) }
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(rootfs, 0o700); err != nil {
		return inspect.Target{}, cleanup, err
	}
	img, err := imagetar.Unpack(arg, rootfs, tmp, imagetar.Limits{})
	if err != nil {
		return inspect.Target{}, cleanup, fmt.Errorf("unpack %s: %w", arg, err)
	}
	for _, w := range img.Warnings {
		fmt.Fprintln(stderr, "warning: image:", w)
	}
	name := img.Ref
	if name == "" {
		name = filepath.Base(arg)
	}
	layer := "image"
	if img.Digest != "" {
		layer = img.Digest
	}
	return inspect.Target{
		Root: rootfs, RootLayer: layer, Name: name, ImageUser: img.User, UserKnown: img.UserKnown,
		Container: &loupev1.ContainerRef{Image: name, ImageDigest: img.Digest},
	}, cleanup, nil
}

func writeSBOM(file string, rep *inspect.Report) error {
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("create SBOM file: %w", err)
	}
	if err := rep.WriteSBOM(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write SBOM file: %w", err)
	}
	return nil
}

// indexLine is one line of the --index file.
type indexLine struct {
	Path   string `json:"path"`
	Layer  string `json:"layer"`
	Mode   string `json:"mode"`
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	Note   string `json:"note,omitempty"`
}

func indexWriter(w io.Writer) func(string, *inspect.Entry) {
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	return func(layer string, e *inspect.Entry) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(indexLine{Path: inspect.Printable(e.Path), Layer: layer, Mode: fmt.Sprintf("%o", e.Mode),
			UID: e.UID, GID: e.GID, Size: e.Size, SHA256: e.SHA256, Note: e.Note})
	}
}

// scanSummary is the one-line summary printed on stderr.
func scanSummary(rep *inspect.Report) string {
	counts := map[loupev1.Severity]int{}
	for _, f := range rep.Findings {
		counts[f.GetSeverity()]++
	}
	var parts []string
	for s := loupev1.Severity_SEVERITY_CRITICAL; s >= loupev1.Severity_SEVERITY_INFO; s-- {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], strings.ToLower(s.ShortName())))
		}
	}
	secs := rep.Duration.Seconds()
	rate := ""
	if secs > 0 {
		rate = fmt.Sprintf(", %.0f files/s", float64(rep.Files)/secs)
	}
	return fmt.Sprintf("scanned %s: %d files, %s (%s hashed) in %s%s; profile %s; %d findings (%s); %d packages",
		rep.Name, rep.Files, mib(rep.Bytes), mib(rep.HashedBytes), rep.Duration.Round(time.Millisecond), rate,
		rep.Profile.Name, len(rep.Findings), strings.Join(parts, ", "), len(rep.Packages))
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

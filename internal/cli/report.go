package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/loupe-dev/loupe/agent/compliance"
	"github.com/loupe-dev/loupe/agent/inspect"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

func newReportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Reports built from the findings stored by the collector",
	}
	cmd.AddCommand(newReportHDFCmd())
	return cmd
}

func newReportHDFCmd() *cobra.Command {
	var (
		cf      clientFlags
		qf      queryFilters
		outFile string
	)
	cmd := &cobra.Command{
		Use:   "hdf",
		Short: "Compliance results from the collector as HDF (InSpec exec-json) for Heimdall and the SAF CLI",
		Long: `Fetch CONTROL_RESULT findings from the collector (the query flags narrow them, as for
"loupe query"; --kind is always control_result) and write them as one HDF document: one profile
run per container and profile version, holding each control's newest result. Statistics count
controls by rolled-up status (errors count as failed, as InSpec does).`,
		Example: `  loupe report hdf --since 24h > fleet.hdf.json
  loupe report hdf --namespace payments --pod 'api-*' -f payments.hdf.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			qf.Kinds = []string{"control_result"}
			req, err := qf.Request(time.Now())
			if err != nil {
				return err
			}
			fs, err := fetchFindings(cmd.Context(), &cf, req)
			if err != nil {
				return err
			}
			runs := compliance.RunsFromFindings(fs)
			fmt.Fprintf(cmd.ErrOrStderr(), "%d control result(s), %d profile run(s)\n", len(fs), len(runs))
			return writeHDFTo(outFile, cmd.OutOrStdout(), runs)
		},
	}
	f := cmd.Flags()
	qf.register(f, 100000)
	f.MarkHidden("kind")
	f.StringVarP(&outFile, "file", "f", "", "write to `FILE` instead of stdout")
	cf.register(cmd)
	return cmd
}

func writeHDFTo(file string, stdout io.Writer, runs []*compliance.Run) error {
	if file == "" || file == "-" {
		return compliance.WriteHDF(stdout, runs)
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("create HDF file: %w", err)
	}
	if err := compliance.WriteHDF(f, runs); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write HDF file: %w", err)
	}
	return nil
}

// scanCompliance runs the --profile profiles of `loupe scan` against the
// scanned target, writes --hdf, and returns the CONTROL_RESULT findings.
func scanCompliance(ctx context.Context, t inspect.Target, rep *inspect.Report, profiles []string, hdfFile string) ([]*loupev1.Finding, error) {
	if len(profiles) == 0 {
		if hdfFile != "" {
			profiles = []string{"distroless-baseline"}
		} else {
			return nil, nil
		}
	}
	var ps []*compliance.Profile
	for _, name := range profiles {
		p, err := compliance.Load(name)
		if err != nil {
			return nil, fmt.Errorf("--profile: %w", err)
		}
		ps = append(ps, p)
	}
	fsys, err := compliance.NewFS(t)
	if err != nil {
		return nil, err
	}
	defer fsys.Close()
	ct := &compliance.Target{Name: rep.Name, Container: t.Container, Report: rep, FS: fsys, Facts: offlineFacts(t, fsys)}
	var runs []*compliance.Run
	var out []*loupev1.Finding
	for _, p := range ps {
		r := compliance.Evaluate(ctx, p, ct)
		if d := t.Container.GetImageDigest(); d != "" {
			r.TargetID = d
		}
		runs = append(runs, r)
		out = append(out, r.Findings()...)
	}
	if hdfFile != "" {
		if err := writeHDFTo(hdfFile, os.Stdout, runs); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// offlineFacts: only the user is known offline (image config's User, or
// --user), resolved through the image's /etc/passwd when it is a name.
func offlineFacts(t inspect.Target, fsys compliance.FS) compliance.ContainerFacts {
	var f compliance.ContainerFacts
	if !t.UserKnown {
		return f
	}
	u, _, _ := strings.Cut(strings.TrimSpace(t.ImageUser), ":")
	switch {
	case u == "" || u == "root":
		f.UserKnown = true
	default:
		if n, err := strconv.ParseUint(u, 10, 32); err == nil {
			f.UID, f.UserKnown = uint32(n), true
		} else if data, err := fsys.ReadFile("/etc/passwd", compliance.MaxRead); err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				fs := strings.Split(line, ":")
				if len(fs) >= 3 && fs[0] == u {
					if n, err := strconv.ParseUint(fs[2], 10, 32); err == nil {
						f.UID, f.UserKnown = uint32(n), true
					}
					break
				}
			}
		}
	}
	return f
}

package cli

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/humanize"
)

// Output formats accepted by -o.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatJSONL = "jsonl"
)

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true}

// checkFormat validates an -o value before any work is done.
func checkFormat(format string) error {
	switch format {
	case formatTable, formatJSON, formatJSONL:
		return nil
	}
	return fmt.Errorf("unknown output format %q: use table, json or jsonl", format)
}

// printFindings writes findings as an aligned table, one JSON array, or one
// JSON object a line (the format `loupe ingest` reads back).
func printFindings(w io.Writer, format string, fs []*loupev1.Finding) error {
	if err := checkFormat(format); err != nil {
		return err
	}
	if format == formatTable {
		return findingsTable(w, fs, time.Now())
	}
	msgs := make([]proto.Message, len(fs))
	for i, f := range fs {
		msgs[i] = f
	}
	return printMessages(w, format, msgs)
}

// printMessages writes protobuf messages as JSON (an array) or JSONL.
func printMessages(w io.Writer, format string, msgs []proto.Message) error {
	bw := bufio.NewWriter(w)
	if format == formatJSON {
		bw.WriteString("[")
	}
	for i, m := range msgs {
		b, err := jsonOpts.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		if format == formatJSON {
			if i > 0 {
				bw.WriteString(",")
			}
			bw.WriteString("\n  ")
		}
		bw.Write(b)
		if format == formatJSONL {
			bw.WriteString("\n")
		}
	}
	if format == formatJSON {
		if len(msgs) > 0 {
			bw.WriteString("\n")
		}
		bw.WriteString("]\n")
	}
	return bw.Flush()
}

// findingsTable prints the columns an analyst scans first.
func findingsTable(w io.Writer, fs []*loupev1.Finding, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// USER (the Kubernetes user behind a finding) only when some finding has one.
	users := slices.ContainsFunc(fs, func(f *loupev1.Finding) bool { return f.GetK8SUser() != "" })
	user := func(f *loupev1.Finding) string {
		if !users {
			return ""
		}
		return cell(clip(f.GetK8SUser(), 40)) + "\t"
	}
	head := "TIME\tSEVERITY\tKIND\tNODE\tNAMESPACE/POD\tCONTAINER\t"
	if users {
		head += "USER\t"
	}
	fmt.Fprintln(tw, head+"SUMMARY")
	for _, f := range fs {
		c := f.GetContainer()
		pod := "-"
		if c.GetPod() != "" {
			pod = c.GetNamespace() + "/" + c.GetPod()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s%s\n",
			humanize.Ago(f.GetTime().AsTime(), now), f.GetSeverity().ShortName(), f.GetKind().ShortName(),
			cell(f.GetNode()), cell(pod), cell(containerLabel(c)), user(f), cell(clip(f.GetSummary(), 100)))
	}
	return tw.Flush()
}

// containerLabel is the container name, else a short id.
func containerLabel(c *loupev1.ContainerRef) string {
	if c.GetName() != "" {
		return c.GetName()
	}
	id := c.GetId()
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

// cell makes a value safe for one table cell: no tabs or newlines, "-" when empty.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' || r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// clip shortens s to at most n runes, marking the cut with "…".
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/version"
)

// maxLineBytes bounds one JSONL line; longer lines are reported and skipped.
const maxLineBytes = 8 << 20

func newIngestCmd() *cobra.Command {
	var (
		cf    clientFlags
		node  string
		batch int
	)
	cmd := &cobra.Command{
		Use:   "ingest FILE.jsonl",
		Short: "Send findings from a JSONL file (or - for stdin) to the collector",
		Long: `Send findings, one protojson Finding a line (what "loupe query -o jsonl" writes), to the
collector through the same Ingest API an agent uses. Ingestion is idempotent by finding id:
replaying a file twice stores nothing twice. Malformed lines are reported with their line
number and skipped; the rest is still ingested, and the exit status is then 1.

Under mTLS the collector checks the claimed node against the client certificate: replays of
other nodes' findings need a certificate whose CN is the collector's --admin-cn.`,
		Example: `  loupe query --since 7d -o jsonl --collector old:7443 > week.jsonl
  loupe ingest week.jsonl --collector new:7443`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if batch < 1 || batch > 10000 {
				return fmt.Errorf("--batch %d: want 1 to 10000", batch)
			}
			in, name, err := openInput(args[0])
			if err != nil {
				return err
			}
			defer in.Close()
			conn, err := cf.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			stream, err := loupev1.NewCollectorClient(conn).Ingest(cmd.Context())
			if err != nil {
				return rpcError(cf.addr, "ingest", err)
			}
			start := time.Now()
			ing := &ingester{stream: stream, node: node, stderr: cmd.ErrOrStderr(), name: name}
			readErr := readJSONL(in, func(line int, f *loupev1.Finding, perr error) error {
				if perr != nil {
					ing.bad++
					fmt.Fprintf(ing.stderr, "%s:%d: %v (line skipped)\n", name, line, perr)
					return nil
				}
				ing.add(line, f)
				if len(ing.pending) >= batch {
					return ing.flush()
				}
				return nil
			})
			if readErr != nil {
				return rpcError(cf.addr, "ingest", readErr)
			}
			if err := ing.flush(); err != nil {
				return rpcError(cf.addr, "ingest", err)
			}
			if err := stream.CloseSend(); err != nil {
				return rpcError(cf.addr, "ingest", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d stored, %d already present, %d rejected, %d malformed line(s), in %s\n",
				name, ing.stored, ing.dups, ing.rejected, ing.bad, time.Since(start).Round(time.Millisecond))
			if ing.bad > 0 || ing.rejected > 0 {
				return &ExitError{Code: 1, Err: errors.New("some findings were not ingested (see above)")}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "loupe-ingest", "node this client speaks for; findings without a node get it")
	cmd.Flags().IntVar(&batch, "batch", 500, "findings per batch")
	cf.register(cmd)
	return cmd
}

func openInput(arg string) (io.ReadCloser, string, error) {
	if arg == "-" {
		return io.NopCloser(os.Stdin), "stdin", nil
	}
	f, err := os.Open(arg)
	if err != nil {
		return nil, "", fmt.Errorf("open findings file: %w", err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() && st.Mode()&os.ModeNamedPipe == 0 {
		f.Close()
		return nil, "", fmt.Errorf("open findings file: %s is not a regular file", arg)
	}
	return f, arg, nil
}

// readJSONL calls fn for every non-empty line with its 1-based number and
// the parsed finding or the parse error. Over-long lines are errors too.
func readJSONL(r io.Reader, fn func(line int, f *loupev1.Finding, err error) error) error {
	br := bufio.NewReaderSize(r, 1<<20)
	unmarshal := protojson.UnmarshalOptions{}
	for line := 1; ; line++ {
		b, tooLong, err := readLine(br, maxLineBytes)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read line %d: %w", line, err)
		}
		if len(bytes.TrimSpace(b)) > 0 || tooLong {
			var perr error
			f := &loupev1.Finding{}
			if tooLong {
				perr = fmt.Errorf("line longer than %d bytes", maxLineBytes)
			} else if uerr := unmarshal.Unmarshal(b, f); uerr != nil {
				perr = fmt.Errorf("not a Finding: %v", uerr)
			}
			if ferr := fn(line, f, perr); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
}

// readLine reads one line without its newline, keeping at most max bytes;
// tooLong reports that the rest was discarded.
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	for {
		frag, isPrefix, err := br.ReadLine()
		if len(line)+len(frag) > max {
			tooLong = true
		} else {
			line = append(line, frag...)
		}
		if err != nil || !isPrefix {
			return line, tooLong, err
		}
	}
}

// ingester sends batches on an Ingest stream and waits for each ack.
type ingester struct {
	stream                 loupev1.Collector_IngestClient
	node, name             string
	stderr                 io.Writer
	seq                    uint64
	pending                []*loupev1.Finding
	lines                  []int
	stored, dups, rejected int
	bad                    int
}

func (g *ingester) add(line int, f *loupev1.Finding) {
	g.pending = append(g.pending, f)
	g.lines = append(g.lines, line)
}

func (g *ingester) flush() error {
	if len(g.pending) == 0 {
		return nil
	}
	g.seq++
	if err := g.stream.Send(&loupev1.IngestRequest{
		Sequence: g.seq, Node: g.node, AgentVersion: "loupe-cli/" + version.Version, Findings: g.pending, Replay: true,
	}); err != nil {
		_, rerr := g.stream.Recv() // the real reason is on the receive side
		if rerr != nil {
			return rerr
		}
		return err
	}
	ack, err := g.stream.Recv()
	if err != nil {
		return err
	}
	if ack.GetAckedSequence() != g.seq {
		return fmt.Errorf("collector acknowledged batch %d, expected %d", ack.GetAckedSequence(), g.seq)
	}
	g.stored += int(ack.GetStored())
	g.dups += int(ack.GetDuplicates())
	for _, r := range ack.GetRejected() {
		g.rejected++
		line := 0
		if int(r.GetIndex()) < len(g.lines) {
			line = g.lines[r.GetIndex()]
		}
		fmt.Fprintf(g.stderr, "%s:%d: rejected by the collector: %s (%s)\n", g.name, line, r.GetMessage(), r.GetReason())
	}
	g.pending, g.lines = g.pending[:0:0], g.lines[:0]
	return nil
}

//go:build linux

// Command exec benchmarks the exec tracer (issue 5): an exec storm (fork+exec
// of /bin/true by 2 workers) without the tracer and with it, inside a tracked
// cgroup, on the host with the cgroup filter on, and with ExecFailures on;
// plus a getppid loop for the per-syscall cost of the syscall tracepoints.
// It prints exec/s ratios against an untraced run made in the same process
// and the events lost. Run as root:
//
//	go run ./bench/exec -n 50000 -rounds 10
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loupe-dev/loupe/bpf"
)

func main() {
	n := flag.Int("n", 50000, "execs per storm")
	workers := flag.Int("workers", 2, "concurrent fork+exec workers")
	loops := flag.Int("syscalls", 1_000_000, "getppid calls per round of the per-syscall measurement")
	rounds := flag.Int("rounds", 10, "alternating untraced/traced rounds per comparison")
	bin := flag.String("bin", "/bin/true", "program to exec")
	storms := flag.Bool("storms", true, "run the exec storms (false: only the getppid measurement)")
	flag.Parse()
	if err := run(*n, *workers, *loops, *rounds, *bin, *storms); err != nil {
		fmt.Fprintln(os.Stderr, "bench/exec:", err)
		os.Exit(1)
	}
}

type storm struct {
	execsPerSec float64
	lost        uint64
	events      uint64
	elapsed     time.Duration
}

func run(n, workers, loops, rounds int, bin string, storms bool) error {
	cgDir, cgID, cgFD, err := makeCgroup()
	if err != nil {
		return err
	}
	defer os.Remove(cgDir)
	defer unix.Close(cgFD)
	fmt.Printf("exec storm: %d execs of %s, %d workers, %d CPUs, kernel cgroup id %d\n\n", n, bin, workers, runtime.NumCPU(), cgID)

	per := n / rounds
	if per < 1 {
		per = 1
	}
	fmt.Printf("each comparison alternates %d untraced and %d traced rounds of %d execs (%d execs per side)\n\n",
		rounds, rounds, per, per*rounds)
	for _, c := range []struct {
		name     string
		cfg      bpf.Config
		track    bool // track the storm's cgroup
		inCgroup bool // the storm runs in the cgroup
	}{
		{"storm in a tracked container", bpf.Config{}, true, true},
		{"storm on the host, container filter on", bpf.Config{}, false, false},
		{"storm in a tracked container, ExecFailures=true", bpf.Config{ExecFailures: true}, true, true},
		{"storm on the host, filter on, ExecFailures=true", bpf.Config{ExecFailures: true}, false, false},
	} {
		if !storms {
			break
		}
		fd := -1
		if c.inCgroup {
			fd = cgFD
		}
		var base, traced storm
		var baseT, tracedT time.Duration
		for r := 0; r < rounds; r++ {
			b, err := runStorm(nil, false, cgID, fd, per, workers, bin)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			cfg := c.cfg
			t, err := runStorm(&cfg, c.track, cgID, fd, per, workers, bin)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			baseT += b.elapsed
			tracedT += t.elapsed
			traced.lost += t.lost
			traced.events += t.events
		}
		total := float64(per * rounds)
		base.execsPerSec = total / baseT.Seconds()
		traced.execsPerSec = total / tracedT.Seconds()
		fmt.Printf("%-50s untraced %6.0f exec/s  traced %6.0f exec/s  ratio %.3f  events %6d  lost %d\n",
			c.name, base.execsPerSec, traced.execsPerSec, traced.execsPerSec/base.execsPerSec, traced.events, traced.lost)
	}
	fmt.Printf("\ngetppid loop (%d calls a round, median of %d alternating rounds):\n", loops, 2*rounds+1)
	var base, off, on []float64
	for r := 0; r < 2*rounds+1; r++ {
		for _, m := range []struct {
			cfg *bpf.Config
			out *[]float64
		}{{nil, &base}, {&bpf.Config{ExecFailures: false}, &off}, {&bpf.Config{ExecFailures: true}, &on}} {
			v, err := syscallCost(m.cfg, loops)
			if err != nil {
				return err
			}
			*m.out = append(*m.out, v)
		}
	}
	b0, b1, b2 := median(base), median(off), median(on)
	fmt.Printf("no tracer                   %6.1f ns/call\n", b0)
	fmt.Printf("tracer, ExecFailures=false  %6.1f ns/call (%+.1f ns)\n", b1, b1-b0)
	fmt.Printf("tracer, ExecFailures=true   %6.1f ns/call (%+.1f ns)\n", b2, b2-b0)
	return nil
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func runStorm(cfg *bpf.Config, track bool, cgID uint64, cgFD, n, workers int, bin string) (storm, error) {
	var res storm
	var tr *bpf.Tracer
	var events atomic.Uint64
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg != nil {
		c := *cfg
		c.Logger = quietLogger()
		var err error
		if tr, err = bpf.NewTracer(c); err != nil {
			return res, err
		}
		defer tr.Close()
		if track {
			if err := tr.TrackCgroup(cgID); err != nil {
				return res, err
			}
		} else if err := tr.TrackCgroup(cgID + 1_000_000); err != nil { // a filter with an entry, not matching
			return res, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr.Read(ctx, func(*bpf.Event) { events.Add(1) })
		}()
	}
	attr := &syscall.ProcAttr{Sys: &syscall.SysProcAttr{}}
	if cgFD >= 0 {
		attr.Sys.UseCgroupFD, attr.Sys.CgroupFD = true, cgFD
	}
	argv := []string{bin}
	var next atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var sw sync.WaitGroup
	for w := 0; w < workers; w++ {
		sw.Add(1)
		go func() {
			defer sw.Done()
			for next.Add(1) <= int64(n) {
				pid, err := syscall.ForkExec(bin, argv, attr)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				var ws syscall.WaitStatus
				for {
					if _, err := syscall.Wait4(pid, &ws, 0, nil); err != syscall.EINTR {
						break
					}
				}
			}
		}()
	}
	sw.Wait()
	elapsed := time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		return res, fmt.Errorf("fork+exec %s: %w", bin, err)
	}
	res.elapsed = elapsed
	res.execsPerSec = float64(n) / elapsed.Seconds()
	if tr != nil {
		// let the reader drain what is left
		time.Sleep(300 * time.Millisecond)
		cancel()
		wg.Wait()
		res.lost = tr.Lost()
		res.events = events.Load()
	}
	return res, nil
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

// syscallCost is the ns per getppid of one round.
func syscallCost(cfg *bpf.Config, loops int) (float64, error) {
	if cfg != nil {
		c := *cfg
		c.Logger = quietLogger()
		tr, err := bpf.NewTracer(c)
		if err != nil {
			return 0, err
		}
		defer tr.Close()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := time.Now()
	for i := 0; i < loops; i++ {
		unix.Getppid()
	}
	return float64(time.Since(start).Nanoseconds()) / float64(loops), nil
}

func makeCgroup() (string, uint64, int, error) {
	root := "/sys/fs/cgroup/unified"
	var sfs unix.Statfs_t
	if unix.Statfs(root, &sfs) != nil || sfs.Type != unix.CGROUP2_SUPER_MAGIC {
		root = "/sys/fs/cgroup"
	}
	dir, err := os.MkdirTemp(root, "loupe-bench-")
	if err != nil {
		return "", 0, -1, fmt.Errorf("create cgroup (needs root and cgroup v2): %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return "", 0, -1, err
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", 0, -1, err
	}
	return dir, st.Ino, fd, nil
}

// Command scan benchmarks agent/inspect: a full hashing scan of a generated
// tree (~50,000 files, ~2 GiB, mixed sizes) against a
// `find | xargs sha256sum` pipeline over the same tree in the same run, warm
// and cold page cache; 50 containers sharing that image (layer cache) against
// one scan; and peak RSS while scanning 1,000,000 small files.
//
//	go run ./bench/scan                  # everything (root: drops caches)
//	go run ./bench/scan -skip-cold -skip-rss
//
// The trees are generated once under -cache (default /var/tmp/loupe-bench-scan)
// and reused.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/loupe-dev/loupe/agent/inspect"
	"github.com/loupe-dev/loupe/agent/inspect/layercache"
)

func main() {
	var (
		cache    = flag.String("cache", "/var/tmp/loupe-bench-scan", "directory for the generated trees (kept between runs)")
		files    = flag.Int("files", 50_000, "files in the image tree")
		runs     = flag.Int("runs", 3, "repetitions of each warm measurement (median reported)")
		skipCold = flag.Bool("skip-cold", false, "skip the cold page cache runs (need root)")
		skipRSS  = flag.Bool("skip-rss", false, "skip the 1,000,000-file RSS run")
		rssChild = flag.String("rss-child", "", "internal: scan this dir and print peak RSS")
	)
	flag.Parse()
	if *rssChild != "" {
		rssScan(*rssChild)
		return
	}
	tree := filepath.Join(*cache, "image")
	n, size := generate(tree, *files)
	fmt.Printf("tree %s: %d files, %.2f GiB; GOMAXPROCS %d\n\n", tree, n, float64(size)/(1<<30), runtime.GOMAXPROCS(0))

	// The agent's path for image layers: a layer dir (no cache id).
	layerTarget := inspect.Target{Layers: []inspect.Layer{{Dir: tree}}}
	scanWith := func(tg inspect.Target) time.Duration {
		start := time.Now()
		rep, err := inspect.New(inspect.Options{HashAll: true}, nil, nil).Scan(context.Background(), tg)
		if err != nil {
			fail(err)
		}
		if rep.Files != int64(n) || rep.HashedBytes != size {
			fail(fmt.Errorf("scan saw %d files / %d hashed bytes, want %d / %d", rep.Files, rep.HashedBytes, n, size))
		}
		return time.Since(start)
	}
	scanOnce := func() time.Duration { return scanWith(layerTarget) }
	// CPU cost of one warm scan (user+sys of this process), independent of
	// what else runs on the machine.
	scanOnce()
	var r0, r1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	wall := scanOnce()
	syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := time.Duration(r1.Utime.Nano() - r0.Utime.Nano() + r1.Stime.Nano() - r0.Stime.Nano())
	fmt.Printf("warm scan CPU: %.2f CPU-s for %.2f GB (%.2f CPU-s/GB; %.0f MB/s if all %d cores were free), wall %.2fs, load average %s\n\n",
		cpu.Seconds(), float64(size)/1e9, cpu.Seconds()/(float64(size)/1e9), float64(size)/1e6/(cpu.Seconds()/float64(runtime.GOMAXPROCS(0))),
		runtime.GOMAXPROCS(0), wall.Seconds(), loadavg())
	pipe := func(p string) func() time.Duration {
		return func() time.Duration {
			start := time.Now()
			cmd := exec.Command("bash", "-c", fmt.Sprintf("find %q -type f -print0 | xargs -0 %s sha256sum > /dev/null", tree, p))
			cmd.Stderr = os.Stderr
			if err := cmd.Run(); err != nil {
				fail(fmt.Errorf("sha256sum pipeline: %w", err))
			}
			return time.Since(start)
		}
	}
	cases := []struct {
		name string
		fn   func() time.Duration
	}{
		{"loupe, image layer", scanOnce},
		{"loupe, live dir (O_PATH)", func() time.Duration { return scanWith(inspect.Target{Root: tree}) }},
		{"find | xargs sha256sum", pipe("")},
		{"find | xargs -P2 sha256sum", pipe("-P2 -n 512")},
	}
	report := func(label string, prep func()) {
		fmt.Printf("%s page cache (median of %d):\n", label, *runs)
		var base time.Duration
		for i, c := range cases {
			var ds []time.Duration
			for r := 0; r < *runs; r++ {
				prep()
				ds = append(ds, c.fn())
			}
			sort.Slice(ds, func(a, b int) bool { return ds[a] < ds[b] })
			d := ds[len(ds)/2]
			if i == 0 {
				base = d
			}
			fmt.Printf("  %-28s %7.2fs  %8.0f files/s  %7.0f MB/s  loupe speed-up %.2fx\n", c.name, d.Seconds(),
				float64(n)/d.Seconds(), float64(size)/1e6/d.Seconds(), d.Seconds()/base.Seconds())
		}
		fmt.Println()
	}
	report("warm", func() {})
	if !*skipCold {
		report("cold", dropCaches)
	}

	// 50 containers sharing the image: one cached layer + a small upper dir each.
	uppers := filepath.Join(*cache, "uppers")
	for i := 0; i < 50; i++ {
		d := filepath.Join(uppers, fmt.Sprint(i))
		if _, err := os.Stat(d); err == nil {
			continue
		}
		for j := 0; j < 20; j++ {
			writeRandom(filepath.Join(d, "tmp", fmt.Sprintf("f%d", j)), 16<<10, uint64(i*100+j), 0o755)
		}
	}
	one := scanOnce()
	state, _ := os.MkdirTemp("", "loupe-bench-cache-")
	defer os.RemoveAll(state)
	lc, err := layercache.Open(state)
	if err != nil {
		fail(err)
	}
	s := inspect.New(inspect.Options{HashAll: true}, lc, nil)
	start := time.Now()
	hits := 0
	for i := 0; i < 50; i++ {
		rep, err := s.Scan(context.Background(), inspect.Target{Layers: []inspect.Layer{{Dir: tree, ID: "sha256:bench-image"}}, Upper: filepath.Join(uppers, fmt.Sprint(i))})
		if err != nil {
			fail(err)
		}
		hits += rep.CacheHits
	}
	fifty := time.Since(start)
	lc.Close()
	fmt.Printf("50 containers sharing the image (layer cache, 20-file upper dirs): %.2fs vs one scan %.2fs = %.2fx (cache hits %d/50)\n\n",
		fifty.Seconds(), one.Seconds(), fifty.Seconds()/one.Seconds(), hits)

	if !*skipRSS {
		big := filepath.Join(*cache, "million")
		generateSmall(big, 1_000_000)
		exe, _ := os.Executable()
		cmd := exec.Command(exe, "-rss-child", big)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fail(err)
		}
	}
}

// rssScan scans dir (no HashAll: the agent's default) and prints VmHWM.
func rssScan(dir string) {
	start := time.Now()
	rep, err := inspect.New(inspect.Options{HashAll: true}, nil, nil).Scan(context.Background(), inspect.Target{Root: dir})
	if err != nil {
		fail(err)
	}
	d := time.Since(start)
	st, _ := os.ReadFile("/proc/self/status")
	hwm := ""
	for _, l := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			hwm = strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
		}
	}
	fmt.Printf("1,000,000 small files: %d files in %.1fs (%.0f files/s), peak RSS (VmHWM) %s\n", rep.Files, d.Seconds(), float64(rep.Files)/d.Seconds(), hwm)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func dropCaches() {
	exec.Command("sync").Run()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		fail(fmt.Errorf("drop caches (run as root or use -skip-cold): %w", err))
	}
}

// generate creates (once) n files with a deterministic mix of sizes:
// 70% 1-8 KiB, 25% 8-128 KiB, 5% 128 KiB-1 MiB (about 2.2 GiB for 50,000).
func generate(dir string, n int) (int, int64) {
	done := filepath.Join(dir + ".done")
	r := rand.New(rand.NewPCG(1, 2))
	sizes := make([]int, n)
	var total int64
	for i := range sizes {
		switch p := r.IntN(100); {
		case p < 70:
			sizes[i] = 1<<10 + r.IntN(7<<10)
		case p < 95:
			sizes[i] = 8<<10 + r.IntN(120<<10)
		default:
			sizes[i] = 128<<10 + r.IntN(896<<10)
		}
		total += int64(sizes[i])
	}
	if _, err := os.Stat(done); err == nil {
		return n, total
	}
	os.RemoveAll(dir)
	fmt.Fprintf(os.Stderr, "generating %d files (%.2f GiB) in %s …\n", n, float64(total)/(1<<30), dir)
	for i, sz := range sizes {
		mode := os.FileMode(0o644)
		if i%10 == 0 {
			mode = 0o755
		}
		writeRandom(filepath.Join(dir, fmt.Sprintf("d%03d/s%02d/f%06d", i%200, i%7, i)), sz, uint64(i), mode)
	}
	os.WriteFile(done, nil, 0o644)
	return n, total
}

func generateSmall(dir string, n int) {
	done := dir + ".done"
	if _, err := os.Stat(done); err == nil {
		return
	}
	os.RemoveAll(dir)
	fmt.Fprintf(os.Stderr, "generating %d small files in %s …\n", n, dir)
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, fmt.Sprintf("d%04d/f%07d", i/1000, i))
		if i%1000 == 0 {
			os.MkdirAll(filepath.Dir(p), 0o755)
		}
		var b []byte
		if i%4 == 0 {
			b = []byte("small file content\n")
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			fail(err)
		}
	}
	os.WriteFile(done, nil, 0o644)
}

func writeRandom(p string, size int, seed uint64, mode os.FileMode) {
	os.MkdirAll(filepath.Dir(p), 0o755)
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, size)
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/scan:", err)
	os.Exit(1)
}

// Command compliance benchmarks agent/compliance: the shipped
// distroless-baseline profile on 50 containers sharing one distroless-like
// image (two layers: base with CA certificates, tzdata and passwd; app with a
// Go binary), each with its own upper dir, the way the agent runs it: a scan
// through the layer cache, then the profile. It reports the first container
// (cold: the layers are walked) against the per-container cost after it
// (layers from the cache), and the compliance share of that cost, in the
// same run.
//
//	go run ./bench/compliance [-containers 50] [-runs 5]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"time"

	"github.com/loupe-dev/loupe/agent/compliance"
	"github.com/loupe-dev/loupe/agent/inspect"
	"github.com/loupe-dev/loupe/agent/inspect/layercache"
)

func main() {
	containers := flag.Int("containers", 50, "containers sharing the image")
	runs := flag.Int("runs", 5, "repetitions over all containers (median reported)")
	flag.Parse()
	dir, err := os.MkdirTemp("", "loupe-bench-compliance-")
	check(err)
	defer os.RemoveAll(dir)
	base, app := filepath.Join(dir, "base"), filepath.Join(dir, "app")
	nfiles := buildImage(base, app)
	prof, err := compliance.Shipped("distroless-baseline")
	check(err)
	check(os.MkdirAll(filepath.Join(dir, "cache"), 0o700))
	cache, err := layercache.Open(filepath.Join(dir, "cache"))
	check(err)
	defer cache.Close()
	sc := inspect.New(inspect.Options{}, cache, nil)
	layers := []inspect.Layer{{Dir: base, ID: "sha256:base"}, {Dir: app, ID: "sha256:app"}}
	uppers := make([]string, *containers)
	for i := range uppers {
		uppers[i] = filepath.Join(dir, fmt.Sprintf("upper%d", i))
		for _, f := range []string{"etc/hosts", "etc/hostname", "etc/resolv.conf"} {
			write(filepath.Join(uppers[i], f), "", 0o755)
		}
	}
	ctx := context.Background()
	// one container: scan (through the cache) + profile; returns both parts.
	one := func(i int) (scan, ctl time.Duration) {
		t0 := time.Now()
		tgt := inspect.Target{Layers: layers, Upper: uppers[i], ImageUser: "65532", UserKnown: true, Name: "bench/distroless:1"}
		rep, err := sc.Scan(ctx, tgt)
		check(err)
		t1 := time.Now()
		fsys, err := compliance.NewFS(tgt)
		check(err)
		r := compliance.Evaluate(ctx, prof, &compliance.Target{Name: tgt.Name, Report: rep, FS: fsys,
			Facts: compliance.ContainerFacts{UserKnown: true, UID: 65532, SpecKnown: true}})
		_ = r.Findings()
		fsys.Close()
		for _, c := range r.Controls {
			if c.Status() != compliance.Passed {
				check(fmt.Errorf("control %s: %s %+v", c.Control.ID, c.Status(), c.Results))
			}
		}
		return t1.Sub(t0), time.Since(t1)
	}
	fmt.Printf("image: %d files in 2 layers; %d containers; profile %s (%d controls); GOMAXPROCS %d\n\n",
		nfiles, *containers, prof.Name, len(prof.Controls), runtime.GOMAXPROCS(0))
	firstScan, firstCtl := one(0)
	fmt.Printf("first container (layers walked):  scan %7.2f ms + compliance %6.2f ms = %7.2f ms\n",
		ms(firstScan), ms(firstCtl), ms(firstScan+firstCtl))
	var perScan, perCtl []float64
	for r := 0; r < *runs; r++ {
		var s, c time.Duration
		for i := 1; i < *containers; i++ {
			ds, dc := one(i)
			s, c = s+ds, c+dc
		}
		n := float64(*containers - 1)
		perScan, perCtl = append(perScan, ms(s)/n), append(perCtl, ms(c)/n)
	}
	s, c := median(perScan), median(perCtl)
	fmt.Printf("each later container (cached):    scan %7.2f ms + compliance %6.2f ms = %7.2f ms  (median of %d runs over %d containers)\n",
		s, c, s+c, *runs, *containers-1)
	fmt.Printf("ratios: later/first container %.3f; compliance share of a later container %.0f%%\n",
		(s+c)/ms(firstScan+firstCtl), 100*c/(s+c))
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func median(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

// buildImage writes a distroless-like image: the host's CA bundle and
// zoneinfo, passwd/group/os-release, dpkg status.d, and gofmt
// (a static Go binary) as /app. It returns the number of files.
func buildImage(base, app string) int {
	n := 0
	write(filepath.Join(base, "etc/passwd"), "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n", 0o644)
	write(filepath.Join(base, "etc/group"), "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n", 0o644)
	write(filepath.Join(base, "etc/os-release"), "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n", 0o644)
	for _, p := range []string{"base-files", "netbase", "tzdata", "ca-certificates"} {
		write(filepath.Join(base, "var/lib/dpkg/status.d", p), "Package: "+p+"\nVersion: 1.0\nArchitecture: all\nStatus: install ok installed\n", 0o644)
	}
	check(os.MkdirAll(filepath.Join(base, "home/nonroot"), 0o700))
	check(os.MkdirAll(filepath.Join(base, "root"), 0o700))
	check(os.MkdirAll(filepath.Join(base, "tmp"), 0o777))
	check(os.Chmod(filepath.Join(base, "tmp"), 0o777|os.ModeSticky))
	n += 8
	n += copyTree("/etc/ssl/certs/ca-certificates.crt", filepath.Join(base, "etc/ssl/certs/ca-certificates.crt"))
	n += copyTree("/usr/share/zoneinfo", filepath.Join(base, "usr/share/zoneinfo"))
	// A static Go program as the app (not this binary: it links the
	// scanner, whose multi-call markers make it look like busybox).
	exe := filepath.Join(runtime.GOROOT(), "bin", "gofmt")
	if _, err := os.Stat(exe); err != nil {
		exe = "/bin/true"
	}
	n += copyTree(exe, filepath.Join(app, "app"))
	check(os.Chmod(filepath.Join(app, "app"), 0o755))
	return n
}

func copyTree(src, dst string) int {
	n := 0
	check(filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(src, p)
		in, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer in.Close()
		out := filepath.Join(dst, rel)
		if rel == "." {
			out = dst
		}
		check(os.MkdirAll(filepath.Dir(out), 0o755))
		f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		check(err)
		_, err = io.Copy(f, in)
		check(err)
		check(f.Close())
		n++
		return nil
	}))
	return n
}

func write(p, content string, mode os.FileMode) {
	check(os.MkdirAll(filepath.Dir(p), 0o755))
	check(os.WriteFile(p, []byte(content), mode))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/compliance:", err)
		os.Exit(1)
	}
}

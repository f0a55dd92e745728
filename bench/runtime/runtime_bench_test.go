package runtimebench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	eventtypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/typeurl/v2"

	"github.com/loupe-dev/loupe/internal/testenv"
	"github.com/loupe-dev/loupe/runtime"
	"github.com/loupe-dev/loupe/runtime/containerd"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	pods   = 10
	perPod = 5 // 50 running containers (+ 10 sandboxes)
)

func BenchmarkRegistry(b *testing.B) {
	env := testenv.StartContainerd(b)
	// Printed, not logged: a parent benchmark's log is not shown.
	fmt.Printf("daemon: %s (%s=%q)\n", env.Containerd(), testenv.EnvContainerd, os.Getenv(testenv.EnvContainerd))
	ref := env.Image(b, testenv.Distroless)
	for p := 0; p < pods; p++ {
		pod := env.RunPod(b, testenv.PodConfig{Name: fmt.Sprintf("bench-%d", p), Namespace: "bench"})
		for c := 0; c < perPod; c++ {
			pod.Start(b, testenv.ContainerConfig{Name: fmt.Sprintf("c%d", c), Image: ref})
		}
	}
	cfg := containerd.Config{Socket: env.Address(), StateDir: env.State(), Logger: slog.New(slog.DiscardHandler)}

	b.Run("ColdStart/registry", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			r := containerd.New(cfg)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = r.Run(ctx) }()
			if err := r.WaitReady(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if n := r.Len(); n != pods*(perPod+1) {
				b.Fatalf("registry holds %d containers, want %d", n, pods*(perPod+1))
			}
			cancel()
			<-done
			b.StartTimer()
		}
	})
	b.Run("ColdStart/baseline-list", func(b *testing.B) {
		ctx := context.Background()
		for i := 0; i < b.N; i++ {
			cs, err := env.Client().Containers(ctx)
			if err != nil || len(cs) != pods*(perPod+1) {
				b.Fatalf("list: %d %v", len(cs), err)
			}
		}
	})

	b.Run("TaskStartToEntry", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := containerd.New(cfg)
		evs, unsub := r.Subscribe(1024)
		defer unsub()
		done := make(chan struct{})
		go func() { defer close(done); _ = r.Run(ctx) }()
		defer func() { cancel(); <-done }()
		if err := r.WaitReady(ctx); err != nil {
			b.Fatal(err)
		}
		raw, rawErrs := env.Client().Subscribe(ctx, `topic=="/tasks/start"`)

		var mu sync.Mutex
		stamp := map[string]time.Time{}   // containerd's event timestamp
		rawAt := map[string]time.Time{}   // arrival at a bare subscriber
		entryAt := map[string]time.Time{} // arrival of the registry's EventStart
		go func() {
			for {
				select {
				case e := <-raw:
					if e == nil {
						continue
					}
					at := time.Now()
					v, err := typeurl.UnmarshalAny(e.Event)
					if ts, ok := v.(*eventtypes.TaskStart); ok && err == nil {
						mu.Lock()
						stamp[ts.ContainerID], rawAt[ts.ContainerID] = e.Timestamp, at
						mu.Unlock()
					}
				case <-rawErrs:
					return
				case <-ctx.Done():
					return
				}
			}
		}()
		go func() {
			for ev := range evs {
				if ev.Type == runtime.EventStart {
					at := time.Now()
					mu.Lock()
					entryAt[ev.Container.ID] = at
					mu.Unlock()
				}
			}
		}()
		var ids []string
		pod := env.RunPod(b, testenv.PodConfig{Name: fmt.Sprintf("bench-latency-%d", b.N), Namespace: "bench"})
		for i := 0; i < b.N; i++ {
			c := pod.Start(b, testenv.ContainerConfig{Name: fmt.Sprintf("l%d", i), Image: ref})
			ids = append(ids, c.ID())
		}
		deadline := time.Now().Add(10 * time.Second)
		var regD, rawD []time.Duration
		for {
			mu.Lock()
			regD, rawD = regD[:0], rawD[:0]
			for _, id := range ids {
				s, ok1 := stamp[id]
				e, ok2 := entryAt[id]
				if ok1 && ok2 {
					regD = append(regD, e.Sub(s))
					rawD = append(rawD, rawAt[id].Sub(s))
				}
			}
			mu.Unlock()
			if len(regD) == len(ids) || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(regD) != len(ids) {
			b.Fatalf("only %d of %d starts reached the registry", len(regD), len(ids))
		}
		b.ReportMetric(ms(pct(regD, 50)), "registry-p50-ms")
		b.ReportMetric(ms(pct(regD, 99)), "registry-p99-ms")
		b.ReportMetric(ms(pct(rawD, 50)), "baseline-p50-ms")
		b.ReportMetric(ms(pct(rawD, 99)), "baseline-p99-ms")
	})
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(min(i, len(s))-1, 0)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

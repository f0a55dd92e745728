package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/collector/store/storetest"
)

// BenchmarkIngest500 measures one 500-finding batch (realistic ~1 KiB
// findings) into a growing database, with synchronous=FULL (the default) and
// NORMAL; bench/ingest has the end-to-end figures.
func BenchmarkIngest500(b *testing.B) {
	for _, mode := range []string{"full", "normal"} {
		b.Run("synchronous="+mode, func(b *testing.B) { benchIngest(b, mode) })
	}
}

func benchIngest(b *testing.B, mode string) {
	s, err := Open(context.Background(), "sqlite://"+filepath.Join(b.TempDir(), "b.db")+"?synchronous="+mode)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rng := storetest.NewRand(1)
	batches := make([][]*loupev1.Finding, 64)
	for i := range batches {
		for range 500 {
			batches[i] = append(batches[i], storetest.Realistic(rng, time.Now(), "n1"))
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		batch := batches[i%len(batches)]
		if i >= len(batches) {
			for _, f := range batch {
				f.Id = storetest.NewID()
			}
		}
		if _, err := s.Ingest(context.Background(), store.NodeInfo{Name: "n1"}, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "findings/s")
}

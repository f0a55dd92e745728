package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
)

// Fill ingests rows Realistic findings into st, evenly spaced over the span
// before now and spread round-robin over nodes nodes named bench-node-NN,
// in batches of 5,000 from two writers. progress, when not nil, is called
// now and then with the number of findings written so far.
func Fill(ctx context.Context, st store.Store, rows, nodes int, span time.Duration, now time.Time, progress func(done int)) error {
	step := span / time.Duration(max(rows, 1))
	const chunk, writers = 5000, 2
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rngs := make([]*rand.Rand, nodes)
			for i := range rngs {
				rngs[i] = NewRand(uint64(i*writers + w))
			}
			for i := w * chunk; i < rows; i += writers * chunk {
				b := make([]*loupev1.Finding, 0, chunk)
				for j := i; j < min(i+chunk, rows); j++ {
					b = append(b, Realistic(rngs[j%nodes], now.Add(-span+time.Duration(j)*step), fmt.Sprintf("bench-node-%02d", j%nodes)))
				}
				if _, err := st.Ingest(ctx, store.NodeInfo{Name: "bench-loader"}, b); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				if progress != nil && i/chunk%200 == 0 {
					progress(i)
				}
			}
		}()
	}
	wg.Wait()
	return first
}

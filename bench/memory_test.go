package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	memoryLife    = 100 * time.Millisecond // the client's view of a token's life: a rotation every 50-75 ms
	memoryWorkers = 10                     // goroutines sending commands, one per pooled connection
)

// BenchmarkRotationMemory: an entraredis client with a pool of 10 connections, 10 goroutines
// sending SET and GET, through 1,000 token rotations (100 ms tokens, as the client sees them). The
// heap (after two GCs, with the workers paused) and the goroutines are measured after 10 rotations
// and after 1,000. It reports the growth of HeapInuse and of the live heap (HeapAlloc) between the
// two (target < 1 MB), the goroutine delta (target 0), the goroutines left after Close, and the
// identity calls per rotation. go-redis #3772 leaked ~600 MB per rotation with streaming
// credentials: this is the check that nothing here grows with rotations. The server accepts every
// token of the issuer (newOpenSetup), so that no state of the test rig grows with them.
// Run with -benchtime=1x.
func BenchmarkRotationMemory(b *testing.B) {
	last := 1000
	if n, err := strconv.Atoi(os.Getenv("BENCH_ROTATIONS")); err == nil && n > 10 {
		last = n // shorter runs while investigating
	}
	for range b.N {
		runMemory(b, 10, last)
	}
}

type memSample struct {
	heapInuse, heapAlloc uint64
	goroutines           int
	conns                uint32 // in the client's pool: each holds 64 KiB of buffers
}

func runMemory(b *testing.B, first, last int) {
	if os.Getenv("BENCH_PROFILE_DIR") != "" {
		// A sample every 4 KiB rather than 512 KiB: precise enough to find a leak of a few hundred
		// bytes per rotation, without slowing the scenario so much that tokens expire.
		runtime.MemProfileRate = 4096
	}
	// Tokens whose exp claims (whole seconds) are 2-3 s away, so that the hook's guard tracks and
	// renews them as it would near a real expiry; the client believes each lives 100 ms.
	iss := newIssuer(b, 2*time.Second)
	s := newOpenSetup(b, iss)
	base := goroutines() // the server's own

	cred := &shortCred{cred: iss, life: memoryLife}
	var errs atomic.Int64
	c, p, h := s.entraredisWith(cred, nil, nil, &redis.Options{PoolSize: memoryWorkers})
	gen := func() int { info, _ := p.Token(); return int(info.Generation) }

	// Workers hold gate for reading around each command, so that a measurement can pause them.
	var gate sync.RWMutex
	var stop atomic.Bool
	var wg sync.WaitGroup
	ctx := context.Background()
	for w := range memoryWorkers {
		wg.Go(func() {
			key := fmt.Sprintf("bench:mem:%d", w)
			for i := 0; !stop.Load(); i++ {
				gate.RLock()
				var err error
				if i%2 == 0 {
					err = c.Set(ctx, key, i, 0).Err()
				} else {
					err = c.Get(ctx, key).Err()
				}
				gate.RUnlock()
				if err != nil {
					errs.Add(1)
				}
			}
		})
	}
	sample := func(name string) memSample {
		gate.Lock()
		defer gate.Unlock()
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		m := memSample{heapInuse: ms.HeapInuse, heapAlloc: ms.HeapAlloc, goroutines: goroutines(), conns: c.PoolStats().TotalConns}
		writeProfiles(b, name)
		return m
	}
	// Checkpoints: after `first` rotations, half-way and after `last`. The growth over the second
	// half, once the scenario's own state (the server's set of live tokens, go-redis's pools of
	// buffers) has settled, is where a leak per rotation shows alone.
	marks := []int{first, last / 2, last}
	type mark struct {
		m                          memSample
		calls, dials, gen, reauths int64
	}
	var ms []mark
	timeout := time.Duration(last) * memoryLife * 2
	for _, n := range marks {
		if !waitFor(timeout, time.Millisecond, func() bool { return gen() >= n+1 }) {
			b.Fatalf("%d tokens in %s, want %d", gen(), timeout, n+1)
		}
		m := sample(fmt.Sprintf("after%d", n))
		st := h.Stats()
		ms = append(ms, mark{m, cred.calls.Load(), int64(st.Dials), int64(gen()), int64(st.Reauths)})
	}
	stop.Store(true)
	wg.Wait()
	_ = c.Close()
	_ = p.Close()

	m0, mh, m1 := ms[0], ms[1], ms[2]
	b.ReportMetric(float64(int64(m1.m.heapInuse)-int64(m0.m.heapInuse)), "heapinuse-growth-B")
	b.ReportMetric(float64(int64(m1.m.heapAlloc)-int64(m0.m.heapAlloc)), "live-growth-B")
	b.ReportMetric(float64(int64(m1.m.heapAlloc)-int64(mh.m.heapAlloc)), "live-growth-2nd-half-B")
	b.ReportMetric(float64(m0.m.heapAlloc), "live-after-first-B")
	b.ReportMetric(float64(m1.m.goroutines-m0.m.goroutines), "goroutine-delta")
	b.ReportMetric(float64(m1.m.conns)-float64(m0.m.conns), "conns-delta")
	b.ReportMetric(float64(m1.gen-1), "rotations")
	b.ReportMetric(float64(m1.calls-m0.calls)/float64(m1.gen-m0.gen), "calls/rotation")
	b.ReportMetric(float64(m1.dials-m0.dials)/float64(m1.gen-m0.gen), "dials/rotation")
	b.ReportMetric(float64(m1.reauths-m0.reauths)/float64(m1.gen-m0.gen), "reauths/rotation")
	b.ReportMetric(float64(errs.Load()), "errors")
	left := 0
	waitFor(5*time.Second, 20*time.Millisecond, func() bool { left = goroutines() - base; return left <= 0 })
	writeProfiles(b, "closed")
	b.ReportMetric(float64(left), "goroutines-left")
}

// writeProfiles writes heap and goroutine profiles named name into $BENCH_PROFILE_DIR, when set:
// `go tool pprof -base after10.heap after1000.heap` shows what grew.
func writeProfiles(tb testing.TB, name string) {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" {
		return
	}
	for _, prof := range []struct {
		kind, ext string
		debug     int
	}{{"heap", "heap", 0}, {"goroutine", "goroutines.txt", 1}} {
		f, err := os.Create(filepath.Join(dir, name+"."+prof.ext))
		if err != nil {
			tb.Fatal(err)
		}
		if err := pprof.Lookup(prof.kind).WriteTo(f, prof.debug); err != nil {
			tb.Fatal(err)
		}
		_ = f.Close()
	}
}

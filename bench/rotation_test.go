package bench

import (
	"context"
	"net"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

const (
	rotationLife    = 2 * time.Second        // token lifetime (acltest's exp claims are whole seconds: 2-3 s)
	rotationRun     = 6 * time.Second        // measured time per client
	rotationWorkers = 32                     // goroutines sending GETs
	rotationWindow  = 250 * time.Millisecond // an operation within this of a rotation event counts as "rotation"
)

// BenchmarkRotationLatency: 32 goroutines send GETs for 6 s while the provider's 2 s tokens rotate
// and the server enforces each token's expiry (acltest: the connections still authenticated with
// it are closed, as Azure closes them). Every operation's latency is recorded, and operations are
// split into those overlapping a rotation window (250 ms from a new token, a token's expiry, a
// connection the guard retired or a new connection) and the others ("steady"). It reports p50, p99
// and max of both, their p99 ratio (target <= 1.5) and errors (target 0).
//
// client=plain is the control: plain go-redis with a static password, on the same server, while
// a provider rotates tokens on it just the same (the server's ACL churns, nobody re-authenticates).
// client=streaming is go-redis's own renewal, for comparison: the provider as the client's
// StreamingCredentialsProvider, no hook (what a go-redis user gets without entraredis's guard).
// Run with -benchtime=1x.
func BenchmarkRotationLatency(b *testing.B) {
	s := newSetup(b, rotationLife)
	kinds := []client[string]{{"plain", "plain"}, {"entraredis", "entraredis"}, {"streaming", "streaming"}}
	for _, k := range ordered(kinds) {
		b.Run("client="+k.name, func(b *testing.B) {
			for range b.N {
				r := runRotation(b, s, k.v)
				r.report(b)
			}
		})
	}
}

// events records the times of rotation events, since start.
type events struct {
	start time.Time
	mu    sync.Mutex
	ts    []time.Duration
}

func (e *events) add(t time.Time) {
	e.mu.Lock()
	e.ts = append(e.ts, t.Sub(e.start))
	e.mu.Unlock()
}

func (e *events) sorted() []time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	ts := slices.Clone(e.ts)
	slices.Sort(ts)
	return ts
}

// dialRecorder is a hook that records each new connection (a reconnection after a close or a
// retirement is part of a rotation's cost).
type dialRecorder struct {
	ev *events
	n  *atomic.Int64
}

func (d dialRecorder) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d.ev.add(time.Now())
		d.n.Add(1)
		return next(ctx, network, addr)
	}
}
func (dialRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (dialRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// op is one operation: when it started (since the run's start) and how long it took.
type op struct{ start, lat time.Duration }

type rotationResult struct {
	steady, rotation []time.Duration
	errors           int64
	tokens           int
	dials, retired   int // new connections during the run; connections the guard retired
	reauths, retries int // connections the hook renewed in place; commands it sent again
}

func runRotation(b *testing.B, s *setup, kind string) rotationResult {
	ev := &events{start: time.Now()}
	var tokens atomic.Int64
	popts := &provider.Options{OnEvent: func(e provider.Event) {
		if e.Kind == provider.EventRefreshed {
			tokens.Add(1)
			ev.add(time.Now())
			// The server enforces the token's expiry then: the connections still on it are closed.
			ev.add(e.ExpiresOn)
		}
	}}
	hopts := &hook.Options{OnEvent: func(e hook.Event) {
		if e.Kind == hook.EventConnRetired {
			ev.add(time.Now())
		}
	}}
	var c *redis.Client
	var h *hook.Hook
	switch kind {
	case "entraredis":
		c, _, h = s.entraredisWith(nil, popts, hopts, nil)
	case "streaming":
		p, err := provider.New(s.env, popts)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		c = redis.NewClient(s.options(&redis.Options{StreamingCredentialsProvider: p}))
	default:
		c = s.plain(nil)
		p, err := provider.New(s.env, popts)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		if _, _, err := p.CredentialsProviderContext(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Set(ctx, "bench:get", "v", 0).Err(); err != nil {
		b.Fatal(err)
	}
	warm(b, c, rotationWorkers)
	var dials atomic.Int64
	c.AddHook(dialRecorder{ev, &dials})

	var errs atomic.Int64
	var wg sync.WaitGroup
	ops := make([][]op, rotationWorkers)
	t0 := ev.start
	deadline := time.Now().Add(rotationRun)
	b.ResetTimer()
	for w := range rotationWorkers {
		wg.Go(func() {
			rec := make([]op, 0, 1<<15)
			for {
				st := time.Now()
				if st.After(deadline) {
					break
				}
				err := c.Get(ctx, "bench:get").Err()
				rec = append(rec, op{st.Sub(t0), time.Since(st)})
				if err != nil {
					errs.Add(1)
				}
			}
			ops[w] = rec
		})
	}
	wg.Wait()
	b.StopTimer()

	evs := ev.sorted()
	r := rotationResult{errors: errs.Load(), tokens: int(tokens.Load()), dials: int(dials.Load())}
	if h != nil {
		st := h.Stats()
		r.retired, r.reauths, r.retries = int(st.ConnsRetired), int(st.Reauths), int(st.Retries)
	}
	for _, rec := range ops {
		for _, o := range rec {
			if nearEvent(evs, o) {
				r.rotation = append(r.rotation, o.lat)
			} else {
				r.steady = append(r.steady, o.lat)
			}
		}
	}
	return r
}

// nearEvent reports whether o overlaps [e, e+rotationWindow) for an event e of the sorted evs.
func nearEvent(evs []time.Duration, o op) bool {
	// The last event at or before the op's end.
	i := sort.Search(len(evs), func(i int) bool { return evs[i] > o.start+o.lat }) - 1
	return i >= 0 && evs[i]+rotationWindow > o.start
}

func (r rotationResult) report(b *testing.B) {
	if len(r.steady) == 0 || len(r.rotation) == 0 {
		b.Fatalf("%d steady and %d rotation operations: cannot compare", len(r.steady), len(r.rotation))
	}
	slices.Sort(r.steady)
	slices.Sort(r.rotation)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(pct(r.steady, 50)), "p50-steady-µs")
	b.ReportMetric(us(pct(r.steady, 99)), "p99-steady-µs")
	b.ReportMetric(us(r.steady[len(r.steady)-1]), "max-steady-µs")
	b.ReportMetric(us(pct(r.rotation, 50)), "p50-rotation-µs")
	b.ReportMetric(us(pct(r.rotation, 99)), "p99-rotation-µs")
	b.ReportMetric(us(r.rotation[len(r.rotation)-1]), "max-rotation-µs")
	b.ReportMetric(float64(pct(r.rotation, 99))/float64(pct(r.steady, 99)), "p99-ratio")
	b.ReportMetric(float64(r.errors), "errors")
	b.ReportMetric(float64(r.tokens), "tokens")
	b.ReportMetric(float64(r.dials), "dials")
	b.ReportMetric(float64(r.retired), "retired")
	b.ReportMetric(float64(r.reauths), "reauths")
	b.ReportMetric(float64(r.retries), "retries")
	b.ReportMetric(float64(len(r.steady)+len(r.rotation)), "ops")
	b.ReportMetric(float64(len(r.rotation))/float64(len(r.steady)+len(r.rotation)), "rotation-share")
}

// pct returns the q-th percentile of sorted ds (nearest rank).
func pct(ds []time.Duration, q float64) time.Duration {
	i := int(float64(len(ds))*q/100+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

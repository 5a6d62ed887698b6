package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

const (
	idleLife      = 3 * time.Second // token lifetime at the gateway (exp claims are whole seconds)
	idleRotations = 3               // token expiries the pool sits idle through
)

// BenchmarkIdlePool: a pool of 8 or 32 connections is warmed (all open at once), then sits idle
// while 3 s tokens rotate 3 times and the gateway (TLS, in front of a redis-server) closes every
// connection whose token expires, as Azure does; then every connection is used at once, one GET
// each. It reports the raw dials per rotation (idle and first use together: a connection closed
// while idle is redialled when used), the gateway's closes at expiry, the AUTHs it accepted per
// rotation and connection, the hook's idle renewals, the first GETs' latency (p50 and max) and
// errors. It fails when a GET fails, or when entraredis's pool was closed at expiry or redialled.
//
// client=entraredis is entraredis.NewClient: the guard renews idle connections in the background
// after each new token (hook.Stats.IdleReauths). client=streaming is go-redis alone with the
// provider as its StreamingCredentialsProvider (README, "The provider alone"): go-redis marks the
// pooled connections for re-authentication and renews each only when it is next taken from the
// pool. Run with -benchtime=1x.
func BenchmarkIdlePool(b *testing.B) {
	r := newGatewayRig(b, idleLife)
	kinds := []client[string]{{"entraredis", "entraredis"}, {"streaming", "streaming"}}
	for _, n := range []int{8, 32} {
		for _, k := range ordered(kinds) {
			b.Run(fmt.Sprintf("conns=%d/client=%s", n, k.name), func(b *testing.B) {
				for range b.N {
					runIdlePool(b, r, k.v, n)
				}
			})
		}
	}
}

func runIdlePool(b *testing.B, r *gwRig, kind string, conns int) {
	p, err := provider.New(r.iss, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	var dials atomic.Int64
	opt := r.options(conns, &dials)
	var h *hook.Hook
	var c *redis.Client
	if kind == "entraredis" {
		h = hook.New(p, nil)
		defer h.Close()
		c = entraredis.NewClient(h, opt)
	} else {
		opt.StreamingCredentialsProvider = p
		c = redis.NewClient(opt)
	}
	defer c.Close()
	ctx := context.Background()
	key := "bench:idle:" + kind
	if err := c.Set(ctx, key, "v", 0).Err(); err != nil {
		b.Fatal(err)
	}
	warm(b, c, conns)
	if got := c.PoolStats().IdleConns; int(got) != conns {
		b.Fatalf("%d idle connections after warming, want %d", got, conns)
	}
	info, ok := p.Token()
	if !ok {
		b.Fatal("no token after warming")
	}
	d0, gw0 := dials.Load(), r.gw.Stats()
	var st0 hook.Stats
	if h != nil {
		st0 = h.Stats()
	}

	b.ResetTimer()
	if !waitRotations(p, info.Generation, idleRotations, time.Duration(idleRotations+3)*2*idleLife) {
		b.Fatalf("the provider did not rotate its token %d times", idleRotations)
	}
	gwIdle := r.gw.Stats()

	// Every connection used at once: each GET takes its own from the pool.
	lat := make([]time.Duration, conns)
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range conns {
		wg.Go(func() {
			<-start
			t := time.Now()
			if err := c.Get(ctx, key).Err(); err != nil {
				errs.Add(1)
			}
			lat[i] = time.Since(t)
		})
	}
	close(start)
	wg.Wait()
	b.StopTimer()

	gw := r.gw.Stats()
	if h != nil && (gw.ExpiryCloses != gw0.ExpiryCloses || dials.Load() != d0) {
		b.Errorf("entraredis: %d closes at expiry and %d redials, want 0 and 0 (idle connections renewed in place)",
			gw.ExpiryCloses-gw0.ExpiryCloses, dials.Load()-d0)
	}
	if errs.Load() != 0 {
		b.Errorf("%d of the first GETs failed", errs.Load())
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rot := float64(idleRotations)
	b.ReportMetric(float64(dials.Load()-d0)/rot, "dials/rotation")
	b.ReportMetric(float64(gw.ExpiryCloses-gw0.ExpiryCloses), "expiry-closes")
	b.ReportMetric(float64(gwIdle.ExpiryCloses-gw0.ExpiryCloses), "expiry-closes-idle")
	b.ReportMetric(float64(gwIdle.AuthAccepted-gw0.AuthAccepted)/rot/float64(conns), "auths-idle/rotation/conn")
	b.ReportMetric(ms(pct(lat, 50)), "first-p50-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "first-max-ms")
	b.ReportMetric(float64(errs.Load()), "errors")
	if h != nil {
		st := h.Stats()
		b.ReportMetric(float64(st.IdleReauths-st0.IdleReauths)/rot, "idle-reauths/rotation")
		b.ReportMetric(float64(st.ConnsRetired-st0.ConnsRetired), "retired")
	}
}

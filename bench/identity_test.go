package bench

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/entraredis/entraredis/provider"
)

// identityLife is the token life of the identity-load scenario: short, so that 20 rotations take
// about 2.5 s (the provider refreshes at 50-75% of a life this short).
const identityLife = 200 * time.Millisecond

// BenchmarkIdentityLoad: 200 goroutines call the provider's CredentialsProviderContext in a tight
// loop, from a cold cache (they all start at once) through 20 rotations. It reports the calls the
// identity endpoint received per token the provider cached (target: exactly 1), the callers'
// errors (target: 0) and how often the token expired before its refresh (EventExpired: callers then
// fetch it themselves). Each caller yields after each call: 200 goroutines that never yield on 2
// cores hold the refresh timer's goroutine in the run queue for about a second (100 goroutines
// per core times the 10 ms preemption slice), while a real caller blocks on I/O between calls.
// Run with -benchtime=1x: one scenario per iteration.
func BenchmarkIdentityLoad(b *testing.B) {
	const callers, rotations = 200, 20
	iss := newIssuer(b, time.Hour)
	for range b.N {
		cred := &shortCred{cred: iss, life: identityLife}
		var expired atomic.Int64
		p, err := provider.New(cred, &provider.Options{OnEvent: func(e provider.Event) {
			if e.Kind == provider.EventExpired {
				expired.Add(1)
			}
		}})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		var (
			errs, served atomic.Int64
			stop         atomic.Bool
			wg           sync.WaitGroup
		)
		start := make(chan struct{})
		for range callers {
			wg.Go(func() {
				<-start
				var n int64
				for !stop.Load() {
					if _, _, err := p.CredentialsProviderContext(ctx); err != nil {
						errs.Add(1)
					}
					n++
					runtime.Gosched()
				}
				served.Add(n)
			})
		}
		close(start)
		gen := func() uint64 { info, _ := p.Token(); return info.Generation }
		ok := waitFor(time.Duration(rotations+5)*identityLife, 5*time.Millisecond, func() bool { return gen() >= rotations+1 })
		stop.Store(true)
		wg.Wait()
		// The count is read after the callers stopped, before Close: a refresh started by now is
		// counted both as a call and, if it completes, as a token.
		tokens := gen()
		_ = p.Close()
		if !ok {
			b.Errorf("only %d tokens in %s: the provider did not rotate in time", tokens, time.Duration(rotations+5)*identityLife)
		}
		calls := cred.calls.Load()
		b.ReportMetric(float64(calls)/float64(tokens), "calls/rotation")
		b.ReportMetric(float64(tokens-1), "rotations")
		b.ReportMetric(float64(errs.Load()), "errors")
		b.ReportMetric(float64(expired.Load()), "expiries")
		b.ReportMetric(float64(served.Load())/float64(tokens), "callerCalls/rotation")
	}
}

// fleetScale compresses time for BenchmarkFleet: a 60-minute Entra token with the provider's
// defaults (refresh 5 min before expiry, minus up to 1 min of jitter) becomes a 12 s token
// refreshed 1 s before expiry minus up to 200 ms, and a 1 s window of the identity endpoint
// becomes 3.3 ms.
const fleetScale = 300

// BenchmarkFleet: 50 providers sharing one identity endpoint start at the same instant (a fleet
// deployed at once) and run until each has refreshed once. It reports the largest number of calls
// in any 1 s window (scaled) at the start and in the refresh round, with the default jitter and,
// for comparison, with none. Azure's managed-identity endpoint (IMDS) allows 20 requests/s per VM.
// Run with -benchtime=1x.
func BenchmarkFleet(b *testing.B) {
	const fleet = 50
	life := time.Hour / fleetScale
	window := time.Second / fleetScale
	iss := newIssuer(b, time.Hour)
	for range b.N {
		type run struct {
			name string
			cred *shortCred
			ps   []*provider.Provider
		}
		runs := []*run{{name: "jitter"}, {name: "nojitter"}}
		start := make(chan struct{})
		var wg sync.WaitGroup
		var errs atomic.Int64
		for _, r := range runs {
			r.cred = &shortCred{cred: iss, life: life, record: true}
			r.cred.premint(b, iss, 2*fleet+fleet/2)
			opts := &provider.Options{RefreshOffset: 5 * time.Minute / fleetScale, RefreshJitter: time.Minute / fleetScale}
			if r.name == "nojitter" {
				opts.RefreshJitter = -1
			}
			for range fleet {
				p, err := provider.New(r.cred, opts)
				if err != nil {
					b.Fatal(err)
				}
				r.ps = append(r.ps, p)
				wg.Go(func() {
					<-start
					if _, _, err := p.CredentialsProviderContext(context.Background()); err != nil {
						errs.Add(1)
					}
				})
			}
		}
		now := time.Now()
		for _, r := range runs {
			r.cred.start = now
		}
		close(start)
		wg.Wait()
		refreshed := func() bool {
			for _, r := range runs {
				for _, p := range r.ps {
					if info, ok := p.Token(); !ok || info.Generation < 2 {
						return false
					}
				}
			}
			return true
		}
		ok := waitFor(life+5*time.Second, 10*time.Millisecond, refreshed)
		for _, r := range runs {
			for _, p := range r.ps {
				_ = p.Close()
			}
		}
		if !ok {
			b.Fatalf("not every provider refreshed within %s", life+5*time.Second)
		}
		for _, r := range runs {
			ts := r.cred.arrivals()
			var cold, refresh []time.Duration
			for _, t := range ts {
				if t < life/2 {
					cold = append(cold, t)
				} else {
					refresh = append(refresh, t)
				}
			}
			if len(cold) != fleet || len(refresh) != fleet {
				b.Errorf("%s: %d calls at the start and %d in the refresh round, want %d each", r.name, len(cold), len(refresh), fleet)
			}
			b.ReportMetric(float64(maxInWindow(cold, window)), "start-max-calls/s-"+r.name)
			b.ReportMetric(float64(maxInWindow(refresh, window)), "refresh-max-calls/s-"+r.name)
			if len(refresh) > 0 {
				spread := (refresh[len(refresh)-1] - refresh[0]) * fleetScale
				b.ReportMetric(spread.Seconds(), "refresh-spread-s-"+r.name)
			}
		}
		b.ReportMetric(float64(errs.Load()), "errors")
	}
}

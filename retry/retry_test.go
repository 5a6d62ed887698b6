package retry

import (
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestBackoffWithoutJitter(t *testing.T) {
	const s, ms = time.Second, time.Millisecond
	for _, tc := range []struct {
		name string
		p    Policy
		n    int
		want time.Duration
	}{
		{"defaults, first", Policy{}, 1, 250 * ms},
		{"defaults, second", Policy{}, 2, 500 * ms},
		{"defaults, third", Policy{}, 3, s},
		{"defaults, capped", Policy{}, 8, 30 * s},
		{"n zero counts as one", Policy{}, 0, 250 * ms},
		{"n negative counts as one", Policy{}, -5, 250 * ms},
		{"n huge", Policy{}, math.MaxInt, 30 * s},
		{"custom", Policy{InitialBackoff: 100 * ms, Multiplier: 3, MaxBackoff: s}, 3, 900 * ms},
		{"custom, capped", Policy{InitialBackoff: 100 * ms, Multiplier: 3, MaxBackoff: s}, 4, s},
		{"multiplier below 1 is 1", Policy{Multiplier: 0.5}, 5, 250 * ms},
		{"NaN multiplier is 1", Policy{Multiplier: math.NaN()}, 5, 250 * ms},
		{"negative durations are defaults", Policy{InitialBackoff: -s, MaxBackoff: -s}, 20, 30 * s},
		{"max below initial", Policy{InitialBackoff: 10 * s, MaxBackoff: s}, 1, s},
		{"largest durations", Policy{InitialBackoff: math.MaxInt64, MaxBackoff: math.MaxInt64, Multiplier: 1e300}, 99, math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.Jitter = -1
			assert.Equal(t, tc.want, tc.p.Backoff(tc.n))
		})
	}
}

func TestBackoffJitter(t *testing.T) {
	const d = time.Second // the un-jittered wait of every case: InitialBackoff 1s, n 1
	for _, tc := range []struct {
		name   string
		jitter float64
		lo     time.Duration
	}{
		{"default is half", 0, d / 2},
		{"a tenth", 0.1, d * 9 / 10},
		{"all", 1, 0},
		{"above 1 is 1", 7, 0},
		{"NaN is none", math.NaN(), d},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Policy{InitialBackoff: d, Jitter: tc.jitter}
			lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
			for range 2000 {
				w := p.Backoff(1)
				lo, hi = min(lo, w), max(hi, w)
			}
			assert.GreaterOrEqual(t, lo, tc.lo)
			assert.LessOrEqual(t, hi, d)
			// 2000 uniform draws land in the outer tenth of the range at both ends, but for odds of 0.9^2000.
			span := d - tc.lo
			assert.LessOrEqual(t, lo, tc.lo+span/10)
			assert.GreaterOrEqual(t, hi, d-span/10)
		})
	}
}

func TestBackoffConcurrent(t *testing.T) {
	p := Policy{MaxBackoff: time.Second}
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 8 {
		wg.Go(func() {
			for n := range 1000 {
				if w := p.Backoff(n); w < 0 || w > time.Second {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	assert.Zero(t, bad.Load())
}

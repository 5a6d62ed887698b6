// Package retry holds the backoff policy and the error classes that the provider and the hook
// share: what to wait between attempts, and whether an error calls for a new token (Auth), a new
// connection (Connection) or neither (Other).
package retry

import (
	"math"
	"math/rand/v2"
	"time"
)

// Policy says how often and how patiently to retry. Zero fields mean defaults.
type Policy struct {
	InitialBackoff time.Duration // wait after the first failure; 0 or negative: 250ms
	MaxBackoff     time.Duration // cap of any wait; 0 or negative: 30s
	Multiplier     float64       // growth per failure; 0: 2; below 1 (or NaN): 1
	Jitter         float64       // random fraction of each wait, so it lies in [d*(1-j), d]; 0: 0.5; negative: none; above 1: 1
}

// Backoff returns the wait after the n-th consecutive failure (n >= 1; smaller n count as 1):
// min(MaxBackoff, InitialBackoff*Multiplier^(n-1)), jittered. It is never negative and never more
// than MaxBackoff. It is safe for concurrent use.
func (p Policy) Backoff(n int) time.Duration {
	initial, maxb, mult, jitter := p.InitialBackoff, p.MaxBackoff, p.Multiplier, p.Jitter
	if initial <= 0 {
		initial = 250 * time.Millisecond
	}
	if maxb <= 0 {
		maxb = 30 * time.Second
	}
	if mult == 0 {
		mult = 2
	} else if !(mult >= 1) {
		mult = 1
	}
	if jitter == 0 {
		jitter = 0.5
	} else if !(jitter > 0) {
		jitter = 0
	}
	// Float math saturates (Pow gives +Inf) where Duration would overflow.
	d := min(float64(maxb), float64(initial)*math.Pow(mult, float64(max(n, 1)-1)))
	d -= d * min(jitter, 1) * rand.Float64()
	if d >= float64(maxb) { // float64(maxb) may round up past the largest Duration
		return maxb
	}
	return time.Duration(d)
}

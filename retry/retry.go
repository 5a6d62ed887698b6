// Package retry holds the backoff policy and the error classes that the provider and the hook
// share: what to wait between attempts, and whether an error calls for a new token (Auth), a new
// connection (Connection) or neither (Other).
package retry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Policy says how often and how patiently to retry. Zero fields mean defaults.
type Policy struct {
	MaxAttempts    int           // attempts in total for Do; 0: 3; negative: unlimited (until ctx ends)
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

// Do calls fn until it returns nil or a Permanent error, MaxAttempts is reached, or ctx ends,
// waiting Backoff(n) after the n-th failure. It returns nil, the Permanent error's cause, or
// the last error; when ctx ends first, ctx.Err() wrapped together with the last error, so that
// errors.Is matches both.
func (p Policy) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	attempts := p.MaxAttempts
	if attempts == 0 {
		attempts = 3
	}
	var last error
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return ctxError(err, last)
		}
		if last = fn(ctx); last == nil {
			return nil
		}
		if pe, ok := last.(*permanentError); ok {
			return pe.err
		}
		if errors.As(last, new(*permanentError)) || attempts > 0 && n >= attempts {
			return last
		}
		t := time.NewTimer(p.Backoff(n))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctxError(ctx.Err(), last)
		case <-t.C:
		}
	}
}

func ctxError(ctxErr, last error) error {
	if last == nil {
		return ctxErr
	}
	if errors.Is(last, ctxErr) {
		return last
	}
	return fmt.Errorf("%w (last error: %w)", ctxErr, last)
}

// Permanent marks err as not to be retried by Do, which then returns err itself. errors.Is and
// errors.As see err through the mark. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

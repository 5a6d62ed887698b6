package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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

var errFail = errors.New("attempt failed")

// counter is an fn for Do that fails until its calls reach ok (never when ok is 0) and counts calls.
type counter struct {
	calls atomic.Int32
	ok    int32
	err   error
}

func (c *counter) fn(context.Context) error {
	if n := c.calls.Add(1); c.ok > 0 && n >= c.ok {
		return nil
	}
	if c.err != nil {
		return c.err
	}
	return errFail
}

var fast = Policy{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}

func TestDoAttempts(t *testing.T) {
	wrapped := fmt.Errorf("wrapped: %w", Permanent(errFail))
	for _, tc := range []struct {
		name      string
		max       int
		c         *counter
		wantCalls int32
		wantErr   error // nil: success; compared with ==, so Do must return it as is
	}{
		{"success at once", 0, &counter{ok: 1}, 1, nil},
		{"success at the last attempt", 0, &counter{ok: 3}, 3, nil},
		{"default is 3 attempts", 0, &counter{}, 3, errFail},
		{"one attempt", 1, &counter{}, 1, errFail},
		{"five attempts", 5, &counter{}, 5, errFail},
		{"permanent stops and is unwrapped", 5, &counter{err: Permanent(errFail)}, 1, errFail},
		{"wrapped permanent stops", 5, &counter{err: wrapped}, 1, wrapped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := fast
			p.MaxAttempts = tc.max
			err := p.Do(t.Context(), tc.c.fn)
			assert.True(t, err == tc.wantErr, "got %v, want %v", err, tc.wantErr)
			assert.Equal(t, tc.wantCalls, tc.c.calls.Load())
		})
	}
}

func TestDoWaitsBetweenAttempts(t *testing.T) {
	p := Policy{InitialBackoff: 20 * time.Millisecond, Multiplier: 2, Jitter: -1}
	type key struct{}
	ctx := context.WithValue(t.Context(), key{}, "v")
	var calls []time.Time
	start := time.Now()
	err := p.Do(ctx, func(ctx context.Context) error {
		calls = append(calls, time.Now())
		assert.Equal(t, "v", ctx.Value(key{}), "fn gets Do's ctx")
		return errFail
	})
	require.ErrorIs(t, err, errFail)
	require.Len(t, calls, 3)
	assert.GreaterOrEqual(t, calls[1].Sub(calls[0]), 20*time.Millisecond)
	assert.GreaterOrEqual(t, calls[2].Sub(calls[1]), 40*time.Millisecond)
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestDoContext(t *testing.T) {
	t.Run("cancelled during a wait", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		p := Policy{InitialBackoff: time.Hour, MaxBackoff: time.Hour, MaxAttempts: -1}
		c := &counter{}
		time.AfterFunc(20*time.Millisecond, cancel)
		start := time.Now()
		err := p.Do(ctx, c.fn)
		assert.Less(t, time.Since(start), 5*time.Second, "Do must not wait out the backoff")
		assert.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, errFail)
		assert.Equal(t, int32(1), c.calls.Load())
	})
	t.Run("unlimited attempts until the deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		p := fast
		p.MaxAttempts = -1
		c := &counter{}
		err := p.Do(ctx, c.fn)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorIs(t, err, errFail)
		assert.Greater(t, c.calls.Load(), int32(3))
	})
	t.Run("done before the first attempt", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		c := &counter{}
		err := fast.Do(ctx, c.fn)
		assert.True(t, err == context.Canceled, "got %v", err)
		assert.Zero(t, c.calls.Load())
	})
	t.Run("fn returning the ctx error is not doubled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		err := fast.Do(ctx, func(ctx context.Context) error { cancel(); return fmt.Errorf("op: %w", ctx.Err()) })
		assert.EqualError(t, err, "op: context canceled")
	})
}

func TestPermanent(t *testing.T) {
	assert.NoError(t, Permanent(nil))
	err := Permanent(fmt.Errorf("x: %w", io.EOF))
	assert.ErrorIs(t, err, io.EOF)
	assert.EqualError(t, err, "x: EOF")
}

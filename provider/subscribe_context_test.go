package provider

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSubscribeWithContextBoundsTheFirstFetch: on a cold cache with a credential that has not
// answered, a subscriber whose context ends gets ErrTokenUnavailable wrapping the context's error
// when its context ends (not at FetchTimeout) and is not left subscribed; the credential call goes
// on, and a subscriber without a deadline gets its token.
func TestSubscribeWithContextBoundsTheFirstFetch(t *testing.T) {
	cred := &fakeCred{life: time.Hour, gate: make(chan struct{})}
	p := newTest(t, cred, &Options{FetchTimeout: 20 * time.Second})

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	c, unsub, err := p.SubscribeWithContext(ctx, &recorder{})
	waited := time.Since(start)
	require.Error(t, err)
	assert.Nil(t, c)
	assert.Nil(t, unsub)
	assert.ErrorIs(t, err, ErrTokenUnavailable)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, waited, 5*time.Second, "the caller's deadline, not FetchTimeout (20 s), ended the wait")
	assert.Equal(t, 0, p.listeners(), "a failed subscription leaves no listener")

	type result struct {
		err error
		gen uint64
	}
	got := make(chan result, 1)
	r := &recorder{}
	go func() {
		c, _, err := p.Subscribe(r)
		if err != nil {
			got <- result{err: err}
			return
		}
		got <- result{gen: c.(*credentials).Generation()}
	}()
	close(cred.gate) // the same call, still in flight, answers
	select {
	case res := <-got:
		require.NoError(t, res.err)
		assert.Equal(t, uint64(1), res.gen)
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe did not return after the credential answered")
	}
	assert.Equal(t, int64(1), cred.calls.Load(), "one credential call, shared: the cancelled subscriber did not abort it")
	assert.Equal(t, 1, p.listeners())
}

// TestSubscribeWithContextCancelled: an already-cancelled context fails at once with its error.
func TestSubscribeWithContextCancelled(t *testing.T) {
	cred := &fakeCred{life: time.Hour, gate: make(chan struct{})}
	defer close(cred.gate)
	p := newTest(t, cred, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := p.SubscribeWithContext(ctx, &recorder{})
	assert.True(t, errors.Is(err, context.Canceled), "got %v", err)
}

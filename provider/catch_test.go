package provider

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/retry"
)

// Tests that catch bugs the rest of the suite once let through (issue 20 and its mutation check,
// .ci/mutations.txt).

// politeCred never answers by itself but honours its context, as azidentity's credentials do: it
// returns its own error, wrapping the context's, when the context ends. It records the deadline
// it was given and when it returned.
type politeCred struct {
	mu       sync.Mutex
	entered  time.Time
	deadline time.Time
	has      bool
	returned time.Time
}

var errPolite = errors.New("polite credential: the identity endpoint did not answer")

func (c *politeCred) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	d, ok := ctx.Deadline()
	c.mu.Lock()
	c.entered, c.deadline, c.has = time.Now(), d, ok
	c.mu.Unlock()
	<-ctx.Done()
	c.mu.Lock()
	c.returned = time.Now()
	c.mu.Unlock()
	return azcore.AccessToken{}, fmt.Errorf("%w: %w", errPolite, ctx.Err())
}

func (c *politeCred) state() (entered, deadline time.Time, has bool, returned time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entered, c.deadline, c.has, c.returned
}

// TestFetchTimeoutIsTheCredentialsDeadline: the credential call's context carries FetchTimeout as
// its deadline, so a credential that honours its context (all of azidentity's) ends by itself and
// the callers get its own error, which says what went wrong, rather than ErrFetchTimeout (kept for
// a credential that ignores its context). Without the deadline such a credential would run
// until Close.
func TestFetchTimeoutIsTheCredentialsDeadline(t *testing.T) {
	const fetchTimeout = 300 * time.Millisecond
	cred := &politeCred{}
	p := newTest(t, cred, &Options{FetchTimeout: fetchTimeout})

	start := time.Now()
	errc := make(chan error, 1)
	go func() { _, _, err := p.CredentialsProviderContext(context.Background()); errc <- err }()

	// The credential returns once its context ends: it must, within a few FetchTimeouts.
	require.True(t, waitUntil(fetchTimeout+3*time.Second, func() bool { _, _, _, r := cred.state(); return !r.IsZero() }),
		"the credential's context never ended: FetchTimeout is not its deadline")
	entered, deadline, has, returned := cred.state()
	require.True(t, has, "the credential's context has a deadline")
	// Bounds that do not depend on the machine's speed: the call started after start and the
	// deadline was set before the credential was entered.
	assert.False(t, deadline.Before(start.Add(fetchTimeout)), "deadline %v before start+FetchTimeout", deadline.Sub(start))
	assert.False(t, deadline.After(entered.Add(fetchTimeout)), "deadline %v after entry+FetchTimeout", deadline.Sub(entered))

	err := <-errc
	require.ErrorIs(t, err, ErrTokenUnavailable)
	if returned.Sub(start) < fetchTimeout+overdueGrace {
		// The caller waits until FetchTimeout plus a grace for exactly this: a credential that
		// unwinds after its deadline. It got the credential's error.
		assert.ErrorIs(t, err, errPolite, "the caller gets the credential's own error")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.NotErrorIs(t, err, ErrFetchTimeout, "the credential honoured its context: it is not stuck")
	} else {
		t.Logf("the credential returned %v after the call started, past the grace: the caller's ErrFetchTimeout is right", returned.Sub(start))
	}
	// The next caller gets that same error at once (paced), whatever the machine's speed.
	_, _, err = p.CredentialsProviderContext(context.Background())
	assert.ErrorIs(t, err, errPolite)
	assert.NotErrorIs(t, err, ErrFetchTimeout)
	t.Logf("credential context deadline %v after entry; the call returned its own error %v after the start",
		deadline.Sub(entered).Round(time.Millisecond), returned.Sub(start).Round(time.Millisecond))
}

// TestForcedRefreshesArePacedAfterAFailure: after a failed credential call, Refresh (which the
// hook calls on every authentication error, from every goroutine that meets one) starts no new
// call until the next is due: a burst of forced refreshes must not become a burst of calls to
// the identity endpoint. In a synctest bubble: the burst takes no time, exactly.
func TestForcedRefreshesArePacedAfterAFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errDown := errors.New("identity endpoint down")
		cred := &fakeCred{life: time.Hour, err: errDown}
		p := newTest(t, cred, &Options{Retry: retry.Policy{InitialBackoff: time.Second, MaxBackoff: time.Second, Jitter: -1}})
		require.ErrorIs(t, p.Refresh(context.Background()), errDown)
		require.Equal(t, int64(1), cred.calls.Load())
		for range 50 {
			require.ErrorIs(t, p.Refresh(context.Background()), errDown, "the last error, at once")
			_, _, err := p.CredentialsProviderContext(context.Background())
			require.ErrorIs(t, err, errDown)
		}
		assert.Equal(t, int64(1), cred.calls.Load(), "credential calls for 100 callers before the next is due")
		time.Sleep(time.Second) // the next is due
		cred.set(func(f *fakeCred) { f.err = nil })
		require.NoError(t, p.Refresh(context.Background()))
		assert.Equal(t, int64(2), cred.calls.Load())
	})
}

// TestCachedTokenNotHandedOutAgainNearItsExpiry: the provider stops handing out a token a little
// before it expires (so that no connection is made on it as it dies). A credential that keeps
// returning that same token from its cache (azidentity's hand back theirs until 5 minutes before
// expiry) must not make it valid again: callers get an error, not a token about to expire. In a
// synctest bubble, so that the moment between the two is hit exactly.
func TestCachedTokenNotHandedOutAgainNearItsExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const life = 2 * time.Second
		cred := &fakeCred{life: life}
		p := newTest(t, cred, nil)
		_, first, err := p.CredentialsProviderContext(context.Background())
		require.NoError(t, err)
		info, ok := p.Token()
		require.True(t, ok)
		cred.set(func(f *fakeCred) { f.same = true })

		// The provider stops handing it out a tenth of the life (at most 1 s) before it expires.
		time.Sleep(time.Until(info.ExpiresOn) - life/20)
		_, ok = p.Token()
		require.False(t, ok, "no longer handed out")
		require.True(t, time.Now().Before(info.ExpiresOn))
		_, pass, err := p.CredentialsProviderContext(context.Background())
		require.ErrorIs(t, err, ErrTokenUnavailable)
		assert.ErrorIs(t, err, ErrExpiredToken)
		assert.Empty(t, pass)
		assert.False(t, pass == first, "the same token handed out again")
	})
}

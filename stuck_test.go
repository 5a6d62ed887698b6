package entraredis

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/internal/testutil"
	"github.com/entraredis/entraredis/provider"
)

// TestStuckCredentialDefaults: a credential that ignores its context, with the provider's default
// options (FetchTimeout 30 s) and a client DialTimeout of 1 s. A command with
// context.Background() fails with provider.ErrTokenUnavailable after about the DialTimeout, as
// go-redis would fail a dial, and the next at once; provider.Close and hook.Close each return
// within 1 s while the call is still stuck. Right after Close, the only goroutine left is the
// abandoned credential call's; it ends when the credential returns, its result dropped.
func TestStuckCredentialDefaults(t *testing.T) {
	const dialTimeout = time.Second
	cred := hangingCred{release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(cred.release)
		}
	}()
	srv := entratest.StartRedis(t, nil)
	base := runtime.NumGoroutine()
	p, err := provider.New(cred, nil)
	require.NoError(t, err)
	h := hook.New(p, nil)
	rdb := NewClient(h, &redis.Options{Addr: srv.Addr(), DialTimeout: dialTimeout})

	ping := func() (time.Duration, error) {
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- rdb.Ping(context.Background()).Err() }()
		select {
		case err := <-done:
			return time.Since(start), err
		case <-time.After(10 * time.Second):
			t.Fatal("PING with context.Background() still blocked after 10 s")
			return 0, nil
		}
	}
	first, err1 := ping()
	again, err2 := ping()
	require.NoError(t, rdb.Close())
	start := time.Now()
	require.NoError(t, h.Close())
	hookClose := time.Since(start)
	start = time.Now()
	require.NoError(t, p.Close())
	provClose := time.Since(start)
	t.Logf("stuck credential, default options, DialTimeout %v: first PING failed after %v (%v), the next after %v; hook Close %v, provider Close %v; hook dials %d",
		dialTimeout, first.Round(time.Millisecond), err1, again.Round(time.Millisecond),
		hookClose.Round(time.Millisecond), provClose.Round(time.Millisecond), h.Stats().Dials)

	assert.ErrorIs(t, err1, provider.ErrTokenUnavailable)
	assert.ErrorIs(t, err2, provider.ErrTokenUnavailable)
	assert.GreaterOrEqual(t, first, dialTimeout*9/10, "the first PING waits for the token up to DialTimeout")
	assert.Less(t, first, dialTimeout+500*time.Millisecond, "the first PING")
	assert.Less(t, again, dialTimeout+500*time.Millisecond, "the next PING")
	assert.Less(t, hookClose, time.Second, "hook Close")
	assert.Less(t, provClose, time.Second, "provider Close")
	assert.Zero(t, h.Stats().Dials, "dials without a token")
	// The abandoned call is the one goroutine left; it ends when the credential returns.
	testutil.WaitGoroutines(t, base+1)
	close(cred.release)
	released = true
	testutil.WaitGoroutines(t, base)
}

package hook_test

import (
	"context"
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

// TestNewestTokenIsTheLastIssued: the token the guard renews connections with is the provider's
// newest, not the one that expires last. A token the cache refuses that outlives the next good one
// (here an hour against 2 s: an identity or audience fixed by a restart of the credential, a
// foreign tenant's token) must not stay the guard's choice once the provider has a good one: with
// it, every renewal in place is refused and each connection is retired at its token's expiry.
// Measured over two rotations after the good token is back: renewals refused, connections
// retired, dials, command errors.
func TestNewestTokenIsTheLastIssued(t *testing.T) {
	testutil.Slow(t)
	const life = 2 * time.Second
	good, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: life})
	require.NoError(t, err)
	foreign, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: time.Hour})
	require.NoError(t, err)
	gw := entratest.StartGateway(t, good, entratest.StartRedis(t, nil).Addr(), nil)
	cred := &tokens{good: good, foreign: foreign}
	p, err := provider.New(cred, nil)
	require.NoError(t, err)
	defer p.Close()
	h := hook.New(p, nil)
	defer h.Close()
	rdb := redis.NewClient(&redis.Options{Addr: gw.Addr(), Protocol: 3, PoolSize: 1,
		CredentialsProviderContext: p.CredentialsProviderContext})
	rdb.AddHook(h)
	defer rdb.Close()
	ctx := context.Background()
	require.NoError(t, rdb.Ping(ctx).Err())

	// The foreign token comes; its renewal in place is refused (the connection keeps its token).
	cred.flipped.Store(true)
	require.NoError(t, p.Refresh(ctx))
	waitFor(t, "the foreign token's renewal refused", func() bool {
		_ = rdb.Ping(ctx).Err()
		return h.Stats().ReauthFailures > 0
	})
	// The good issuer's tokens come back, for two rotations.
	cred.flipped.Store(false)
	require.NoError(t, p.Refresh(ctx))
	back, ok := p.Token()
	require.True(t, ok)
	before := h.Stats()
	var errs int
	var first error
	for deadline := back.ExpiresOn.Add(2 * life); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := rdb.Ping(ctx).Err(); err != nil {
			if errs++; first == nil {
				first = err
			}
		}
	}
	st := h.Stats()
	t.Logf("after the good token came back, 2 rotations: renewals %d, refused %d, connections retired %d, dials %d, command errors %d (first: %v); closes at expiry %d",
		st.Reauths-before.Reauths, st.ReauthFailures-before.ReauthFailures, st.ConnsRetired-before.ConnsRetired, st.Dials-before.Dials, errs, first, gw.Stats().ExpiryCloses)
	assert.Zero(t, st.ReauthFailures-before.ReauthFailures, "renewals refused after the good token came back")
	assert.Zero(t, st.ConnsRetired-before.ConnsRetired, "connections retired")
	assert.Zero(t, st.Dials-before.Dials, "dials")
	assert.GreaterOrEqual(t, st.Reauths-before.Reauths, uint64(2), "renewed in place at each rotation")
	assert.Zero(t, errs, "first: %v", first)
	assert.Zero(t, gw.Stats().ExpiryCloses)
}

//go:build goredis_newest

package provider_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/auth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/provider"
)

// go-redis v9.24 calls SubscribeWithContext when the provider has it.
var _ auth.ContextStreamingCredentialsProvider = (*provider.Provider)(nil)

// TestHandshakeContextBoundsFirstFetch: go-redis v9.24 with the provider alone
// (StreamingCredentialsProvider) passes the handshake's context: a PING with a 300 ms deadline,
// while the identity provider takes 3 s to answer, fails at its deadline with the provider's error
// (not at FetchTimeout, 20 s), and the fetch goes on: once it has answered, a PING succeeds through
// entratest's gateway (a real redis-server behind it) without a second credential call.
func TestHandshakeContextBoundsFirstFetch(t *testing.T) {
	iss, err := entratest.NewIssuer(nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = iss.Close() })
	srv := entratest.StartRedis(t, nil)
	gw := entratest.StartGateway(t, iss, srv.Addr(), nil)
	iss.SetLatency(3 * time.Second)
	p, err := provider.New(iss, &provider.Options{FetchTimeout: 20 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: gw.Addr(), StreamingCredentialsProvider: p, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = rdb.Ping(ctx).Err()
	waited := time.Since(start)
	require.Error(t, err)
	assert.ErrorIs(t, err, provider.ErrTokenUnavailable)
	assert.Less(t, waited, 2*time.Second, "the handshake's context ended the wait (the identity provider takes 3 s)")
	t.Logf("PING with a 300 ms deadline failed after %v: %v", waited.Round(time.Millisecond), err)

	require.Eventually(t, func() bool { _, ok := p.Token(); return ok }, 10*time.Second, 20*time.Millisecond,
		"the credential call went on after the caller's deadline")
	iss.SetLatency(0)
	require.NoError(t, rdb.Ping(context.Background()).Err())
	assert.Equal(t, int64(1), iss.Stats().Served, "one token: the PING after it used the fetch the first started")
}

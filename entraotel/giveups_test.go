package entraotel_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/entraredis/entraredis/entraotel"
	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
	"github.com/entraredis/entraredis/retry"
)

// TestGiveUpsAndRetriesAreCountedApart: a run where the two differ. Every token the credential
// hands out is signed by a key the gateway does not trust, so each command is refused (ERR
// WRONGPASS), sent again after a refresh MaxRetries times, then given up: 3 retries, 1 give-up per
// command. The instruments must say so, each from its own counter.
func TestGiveUpsAndRetriesAreCountedApart(t *testing.T) {
	trusted, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: time.Hour})
	require.NoError(t, err)
	foreign, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: time.Hour})
	require.NoError(t, err)
	gw := entratest.StartGateway(t, trusted, entratest.StartRedis(t, nil).Addr(), nil)

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := entraotel.New(mp, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })

	p, err := provider.New(foreign, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	h := hook.New(p, &hook.Options{Backoff: retry.Policy{InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}})
	t.Cleanup(func() { _ = h.Close() })
	require.NoError(t, m.Observe(p, h))
	rdb := redis.NewClient(&redis.Options{Addr: gw.Addr(), CredentialsProviderContext: p.CredentialsProviderContext})
	rdb.AddHook(h)
	t.Cleanup(func() { _ = rdb.Close() })

	const commands = 2
	for range commands {
		err := rdb.Ping(context.Background()).Err()
		require.Error(t, err)
		require.True(t, retry.IsAuth(err), "refused for its token: %v", err)
	}
	st := h.Stats()
	ms := collect(t, reader)
	t.Logf("%d commands refused: hook retries %d (auth %d), give-ups %d; instruments: retries %d (auth %d), give_ups %d",
		commands, st.Retries, st.AuthRetries, st.GaveUp, sum(t, ms, "entraredis.command.retries"),
		sum(t, ms, "entraredis.command.retries", entraotel.AttrErrorType.String("auth")), sum(t, ms, "entraredis.command.give_ups"))
	require.Equal(t, uint64(commands), st.GaveUp, "each command given up once")
	require.Equal(t, uint64(3*commands), st.Retries, "each sent again MaxRetries (3) times")
	assert.Equal(t, int64(commands), sum(t, ms, "entraredis.command.give_ups"))
	assert.Equal(t, int64(3*commands), sum(t, ms, "entraredis.command.retries"))
	assert.Equal(t, int64(3*commands), sum(t, ms, "entraredis.command.retries", entraotel.AttrErrorType.String("auth")))
	assert.Zero(t, sum(t, ms, "entraredis.command.retries", entraotel.AttrErrorType.String("connect")))
}

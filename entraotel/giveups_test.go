package entraotel_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/entraredis/entraredis/entraotel"
	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
	"github.com/entraredis/entraredis/retry"
)

// TestGiveUpsAndRetriesAreCountedApart: a run where the two differ. First the credential hands
// out a token signed by a key the gateway does not trust, then trusted ones: the command is
// refused (ERR WRONGPASS), sent again after a refresh, and succeeds: a retry, no give-up. Then it
// hands out only untrusted tokens: the next command is refused again after its refresh, so the
// hook blocks that token and gives the command up. The instruments must say what the hook's
// counters say, each from its own counter.
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

	cred := &switching{}
	cred.set(foreign, trusted)
	p, err := provider.New(cred, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	h := hook.New(p, &hook.Options{Backoff: retry.Policy{InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}})
	t.Cleanup(func() { _ = h.Close() })
	require.NoError(t, m.Observe(p, h))
	rdb := redis.NewClient(&redis.Options{Addr: gw.Addr(), CredentialsProviderContext: p.CredentialsProviderContext})
	rdb.AddHook(h)
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()

	require.NoError(t, rdb.Ping(ctx).Err(), "refused once, then sent again on a trusted token")
	st := h.Stats()
	require.Equal(t, uint64(1), st.Retries, "sent again once")
	require.Zero(t, st.GaveUp)

	cred.set(foreign)
	require.NoError(t, p.Refresh(ctx))
	fresh := redis.NewClient(&redis.Options{Addr: gw.Addr(), CredentialsProviderContext: p.CredentialsProviderContext})
	fresh.AddHook(h) // a new connection, on the untrusted token
	t.Cleanup(func() { _ = fresh.Close() })
	err = fresh.Ping(ctx).Err()
	require.Error(t, err)
	require.True(t, retry.IsAuth(err), "refused for its token: %v", err)

	st = h.Stats()
	ms := collect(t, reader)
	t.Logf("hook retries %d (auth %d), give-ups %d; instruments: retries %d (auth %d), give_ups %d",
		st.Retries, st.AuthRetries, st.GaveUp, sum(t, ms, "entraredis.command.retries"),
		sum(t, ms, "entraredis.command.retries", entraotel.AttrErrorType.String("auth")), sum(t, ms, "entraredis.command.give_ups"))
	require.Equal(t, uint64(1), st.GaveUp, "the second command given up once")
	require.Greater(t, st.Retries, st.GaveUp, "a run where the two differ")
	assert.Equal(t, int64(st.GaveUp), sum(t, ms, "entraredis.command.give_ups"))
	assert.Equal(t, int64(st.Retries), sum(t, ms, "entraredis.command.retries"))
	assert.Equal(t, int64(st.AuthRetries), sum(t, ms, "entraredis.command.retries", entraotel.AttrErrorType.String("auth")))
	assert.Zero(t, sum(t, ms, "entraredis.command.retries", entraotel.AttrErrorType.String("connect")))

	// The token is blocked now: commands fail at once, counted, and the gauge says so.
	require.True(t, st.Blocked)
	require.ErrorIs(t, fresh.Ping(ctx).Err(), hook.ErrTokenRefused)
	st = h.Stats()
	ms = collect(t, reader)
	require.Positive(t, st.Refused)
	assert.Equal(t, int64(st.Refused), sum(t, ms, "entraredis.command.refused"))
	assert.Equal(t, int64(st.Rechecks), sum(t, ms, "entraredis.token.rechecks"))
	assert.Equal(t, int64(1), intGauge(t, ms, "entraredis.token.blocked"))
	assert.Equal(t, int64(st.PubSubMoveFailures), sum(t, ms, "entraredis.pubsub.move_failures"))
}

// intGauge returns the value of an int64 gauge, failing t when it has none.
func intGauge(t *testing.T, ms map[string]metricdata.Metrics, name string) int64 {
	t.Helper()
	m, ok := ms[name]
	require.True(t, ok, "no %s", name)
	dps := m.Data.(metricdata.Gauge[int64]).DataPoints
	require.Len(t, dps, 1)
	return dps[0].Value
}

// switching hands out a token from each of its issuers in turn, the last one from then on.
type switching struct {
	mu   sync.Mutex
	next []*entratest.Issuer
}

func (s *switching) set(iss ...*entratest.Issuer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = iss
}

func (s *switching) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	s.mu.Lock()
	iss := s.next[0]
	if len(s.next) > 1 {
		s.next = s.next[1:]
	}
	s.mu.Unlock()
	return iss.GetToken(ctx, o)
}

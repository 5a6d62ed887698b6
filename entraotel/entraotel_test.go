package entraotel_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/entraredis/entraredis/entraotel"
	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/internal/testutil"
	"github.com/entraredis/entraredis/provider"
)

// collect reads every metric the reader holds, by name.
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// sum is the value of a counter's data point whose attributes include want (all points when nil).
func sum(t *testing.T, ms map[string]metricdata.Metrics, name string, want ...attribute.KeyValue) int64 {
	t.Helper()
	m, ok := ms[name]
	if !ok {
		return 0
	}
	var n int64
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		if hasAll(dp.Attributes, want) {
			n += dp.Value
		}
	}
	return n
}

func hasAll(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// gauge is the time-to-expiry value and whether there is one.
func gauge(ms map[string]metricdata.Metrics) (float64, bool) {
	m, ok := ms["entraredis.token.time_to_expiry"]
	if !ok {
		return 0, false
	}
	dps := m.Data.(metricdata.Gauge[float64]).DataPoints
	if len(dps) == 0 {
		return 0, false
	}
	return dps[0].Value, true
}

// histCount is the number of credential calls recorded with error.type = errType ("" for successes).
func histCount(ms map[string]metricdata.Metrics, errType string) uint64 {
	m, ok := ms["entraredis.credential.duration"]
	if !ok {
		return 0
	}
	var n uint64
	for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
		v, ok := dp.Attributes.Value(entraotel.AttrErrorType)
		if (errType == "" && !ok) || (ok && v.AsString() == errType) {
			n += dp.Count
		}
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countingCredential counts GetToken calls, to compare with the histogram.
type countingCredential struct {
	azcore.TokenCredential
	calls atomic.Int64
}

func (c *countingCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.calls.Add(1)
	return c.TokenCredential.GetToken(ctx, o)
}

// stack is a real redis-server behind entratest's gateway, the real managed-identity credential
// against entratest's endpoint, and a provider, hook and client instrumented by m.
type stack struct {
	iss    *entratest.Issuer
	gw     *entratest.Gateway
	cred   *countingCredential
	p      *provider.Provider
	h      *hook.Hook
	rdb    *redis.Client
	m      *entraotel.Metrics
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	events atomic.Int64 // the test's own provider.OnEvent, chained by ProviderOptions
}

func newStack(t *testing.T, lifetime time.Duration) *stack {
	t.Helper()
	s := &stack{}
	var err error
	s.iss, err = entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: lifetime})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.iss.Close() })
	s.iss.SetManagedIdentityEnv(t)
	srv := entratest.StartRedis(t, nil)
	s.gw = entratest.StartGateway(t, s.iss, srv.Addr(), nil)

	s.reader = sdkmetric.NewManualReader()
	s.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.reader))
	t.Cleanup(func() { _ = s.mp.Shutdown(context.Background()) })
	s.m, err = entraotel.New(s.mp, &entraotel.Options{ServerAddress: "127.0.0.1", ServerPort: s.gw.Port()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.m.Close() })

	mi, err := azidentity.NewManagedIdentityCredential(nil)
	require.NoError(t, err)
	s.cred = &countingCredential{TokenCredential: mi}
	s.p, err = provider.New(s.m.Credential(s.cred), s.m.ProviderOptions(&provider.Options{
		OnEvent: func(provider.Event) { s.events.Add(1) },
	}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.p.Close() })
	s.h = hook.New(s.p, nil)
	t.Cleanup(func() { _ = s.h.Close() })
	require.NoError(t, s.m.Observe(s.p, s.h))

	s.rdb = redis.NewClient(&redis.Options{Addr: s.gw.Addr(), PoolSize: 4, CredentialsProviderContext: s.p.CredentialsProviderContext})
	s.rdb.AddHook(s.h)
	t.Cleanup(func() { _ = s.rdb.Close() })
	return s
}

// load runs INCRs from n goroutines until stop is closed and returns the failures.
func (s *stack) load(n int, stop <-chan struct{}) func() (ok, failed int64) {
	var wg sync.WaitGroup
	var okN, failedN atomic.Int64
	for i := range n {
		wg.Go(func() {
			key := "entraotel:" + strconv.Itoa(i)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.rdb.Incr(context.Background(), key).Err(); err != nil {
					failedN.Add(1)
				} else {
					okN.Add(1)
				}
			}
		})
	}
	return func() (int64, int64) { wg.Wait(); return okN.Load(), failedN.Load() }
}

func generation(p *provider.Provider) uint64 {
	info, _ := p.Token()
	return info.Generation
}

// Token rotations under load, then an identity-provider outage past the token's expiry: the
// instruments say what happened, and equal the hook's counters and the credential calls made.
func TestMetricsAcrossRotationsAndOutage(t *testing.T) {
	testutil.Slow(t)
	testutil.CheckGoroutines(t)
	const lifetime = 2 * time.Second
	s := newStack(t, lifetime)
	ms := collect(t, s.reader)
	_, ok := gauge(ms)
	assert.False(t, ok, "no time to expiry before the first token")

	stop := make(chan struct{})
	wait := s.load(4, stop)
	waitFor(t, 30*time.Second, "two rotations", func() bool { return generation(s.p) >= 3 })
	close(stop)
	okN, failed := wait()
	require.Zero(t, failed)

	ms = collect(t, s.reader)
	st := s.h.Stats()
	left, ok := gauge(ms)
	require.True(t, ok)
	assert.Greater(t, left, 0.0)
	assert.LessOrEqual(t, left, (lifetime + time.Second).Seconds(), "exp has whole seconds")
	refreshes := sum(t, ms, "entraredis.token.refreshes")
	t.Logf("rotations: %d INCRs ok, 0 failed; time_to_expiry %.2fs; refreshes %d; credential calls %d (histogram %d); dials %d, reauths %d, retired %d, retries %d",
		okN, left, refreshes, s.cred.calls.Load(), histCount(ms, ""), sum(t, ms, "entraredis.connection.dials"),
		sum(t, ms, "entraredis.connection.reauths"), sum(t, ms, "entraredis.connection.retired"), sum(t, ms, "entraredis.command.retries"))
	assert.GreaterOrEqual(t, refreshes, int64(3))
	assert.Equal(t, s.events.Load(), refreshes, "the test's own OnEvent saw every event too")
	assert.Equal(t, uint64(s.cred.calls.Load()), histCount(ms, ""), "one duration per credential call")
	assert.Equal(t, int64(st.Dials), sum(t, ms, "entraredis.connection.dials"))
	assert.Positive(t, st.Reauths, "connections renewed in place")
	assert.Equal(t, int64(st.Reauths), sum(t, ms, "entraredis.connection.reauths"))
	assert.Equal(t, int64(st.ConnsRetired), sum(t, ms, "entraredis.connection.retired"))
	assert.Equal(t, int64(st.Retries), sum(t, ms, "entraredis.command.retries"))
	assert.Equal(t, int64(st.GaveUp), sum(t, ms, "entraredis.command.give_ups"))
	for name, m := range ms {
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, dp := range d.DataPoints {
				assert.True(t, hasAll(dp.Attributes, []attribute.KeyValue{entraotel.AttrServerAddress.String("127.0.0.1")}), name)
			}
		}
	}

	// The identity provider refuses for longer than the token lives: the gauge falls to 0, the
	// failures are counted by error type, and the expiry is counted.
	s.iss.FailFor(2*lifetime, http.StatusForbidden)
	waitFor(t, 20*time.Second, "the token to expire", func() bool { _, ok := s.p.Token(); return !ok })
	ms = collect(t, s.reader)
	left, ok = gauge(ms)
	require.True(t, ok)
	assert.Zero(t, left)
	failures := sum(t, ms, "entraredis.token.refresh_failures", entraotel.AttrErrorType.String("403"))
	t.Logf("outage: time_to_expiry %.0fs, refresh_failures{error.type=403} %d, expirations %d, failed credential calls %d",
		left, failures, sum(t, ms, "entraredis.token.expirations"), histCount(ms, "403"))
	assert.Positive(t, failures)
	assert.Equal(t, failures, sum(t, ms, "entraredis.token.refresh_failures"), "all failures are 403s")
	assert.Equal(t, int64(1), sum(t, ms, "entraredis.token.expirations"))
	assert.Equal(t, uint64(failures), histCount(ms, "403"))

	// Back: the gauge is positive again.
	waitFor(t, 30*time.Second, "a token after the outage", func() bool { _, ok := s.p.Token(); return ok })
	left, ok = gauge(collect(t, s.reader))
	require.True(t, ok)
	assert.Greater(t, left, 0.0)

	// Close unregisters the observable instruments.
	require.NoError(t, s.m.Close())
	_, ok = gauge(collect(t, s.reader))
	assert.False(t, ok)
}

func TestNewNeedsMeterProvider(t *testing.T) {
	_, err := entraotel.New(nil, nil)
	require.ErrorIs(t, err, entraotel.ErrNoMeterProvider)
	m, err := entraotel.New(noop.NewMeterProvider(), nil)
	require.NoError(t, err)
	require.NoError(t, m.Observe(nil, nil))
	assert.Nil(t, m.Credential(nil), "provider.New reports a nil credential")
	require.NoError(t, m.Close())
}

func TestProviderOptionsKeepsFieldsAndChains(t *testing.T) {
	m, err := entraotel.New(noop.NewMeterProvider(), nil)
	require.NoError(t, err)
	var got []provider.EventKind
	in := &provider.Options{RefreshOffset: time.Minute, OnEvent: func(e provider.Event) { got = append(got, e.Kind) }}
	out := m.ProviderOptions(in)
	assert.Equal(t, time.Minute, out.RefreshOffset)
	out.OnEvent(provider.Event{Kind: provider.EventRefreshed})
	assert.Equal(t, []provider.EventKind{provider.EventRefreshed}, got)
	assert.NotPanics(t, func() { m.ProviderOptions(nil).OnEvent(provider.Event{Kind: provider.EventRefreshFailed}) })
}

// timeoutErr is a net.Error that timed out.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestErrorType(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"deadline", fmt.Errorf("fetch: %w", context.DeadlineExceeded), "timeout"},
		{"canceled", context.Canceled, "canceled"},
		{"expired token", fmt.Errorf("%w", provider.ErrExpiredToken), "expired_token"},
		{"no oid", provider.ErrNoUsername, "no_username"},
		{"azcore response", &azcore.ResponseError{StatusCode: 503}, "503"},
		{"authentication failed with response", &azidentity.AuthenticationFailedError{RawResponse: &http.Response{StatusCode: 429}}, "429"},
		{"authentication failed", &azidentity.AuthenticationFailedError{}, "authentication_failed"},
		{"unavailable", azidentity.NewCredentialUnavailableError("no IMDS"), "credential_unavailable"},
		{"wrapped unavailable", fmt.Errorf("%w: %w", provider.ErrTokenUnavailable, azidentity.NewCredentialUnavailableError("x")), "credential_unavailable"},
		{"refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, "connection"},
		{"net timeout", timeoutErr{}, "timeout"},
		{"other", errors.New("boom"), "_OTHER"},
		{"typed nil response error", fmt.Errorf("x: %w", (*azcore.ResponseError)(nil)), "_OTHER"},
		{"typed nil net error", fmt.Errorf("x: %w", (*net.OpError)(nil)), "_OTHER"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, entraotel.ErrorType(tc.err))
		})
	}
}

package entraredis

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
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

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/internal/acltest"
	"github.com/entraredis/entraredis/internal/testutil"
	"github.com/entraredis/entraredis/provider"
)

// callCounter counts the calls to the credential it wraps.
type callCounter struct {
	azcore.TokenCredential
	calls atomic.Int64
}

func (c *callCounter) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.calls.Add(1)
	return c.TokenCredential.GetToken(ctx, o)
}

// TestOutagePastExpiry: the identity endpoint (the real ManagedIdentityCredential on entratest's
// managed-identity endpoint) answers HTTP 500 from before the token expires until well after;
// 1, 64 or 512 goroutines send INCR through NewClient to entratest's Entra gateway over TLS in
// front of a real redis-server. Measured over 3 s past expiry: credential calls per second (<= 4),
// dials per second, from the hook's counter and the gateway's (<= the credential calls per second:
// none, as no call gets a token), and the time from the endpoint's return to the first INCR that
// succeeds (< 2 s). Every failed INCR fails with provider.ErrTokenUnavailable, and the counter
// equals the successful INCRs: nothing was applied twice or lost.
func TestOutagePastExpiry(t *testing.T) {
	testutil.Slow(t)
	const window = 3 * time.Second
	for _, workers := range []int{1, 64, 512} {
		t.Run(fmt.Sprintf("goroutines=%d", workers), func(t *testing.T) {
			k, err := acltest.Key()
			require.NoError(t, err)
			iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: 3 * time.Second, Key: k})
			require.NoError(t, err)
			iss.SetManagedIdentityEnv(t)
			// No azidentity retries: each credential call is one HTTP request (with them, each
			// call lasts about 9 s and makes 4 requests; callers get the last error meanwhile).
			mi, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
				ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}},
			})
			require.NoError(t, err)
			cred := &callCounter{TokenCredential: mi}
			ca, err := entratest.NewTestCA()
			require.NoError(t, err)
			srvTLS, err := ca.ServerTLSConfig()
			require.NoError(t, err)
			srv := entratest.StartRedis(t, nil)
			gw := entratest.StartGateway(t, iss, srv.Addr(), &entratest.GatewayOptions{TLS: srvTLS})
			base := runtime.NumGoroutine() // the servers' goroutines end at cleanup

			p, err := provider.New(cred, nil)
			require.NoError(t, err)
			h := hook.New(p, nil)
			rdb := NewClient(h, &redis.Options{Addr: gw.Addr(), TLSConfig: ca.ClientTLSConfig()})
			ctx := context.Background()
			key := fmt.Sprintf("outage-%d", workers)
			require.NoError(t, rdb.Set(ctx, key, 0, 0).Err())

			info, _ := p.Token()
			iss.FailFor(time.Hour, http.StatusInternalServerError)
			// Past the token's exp claim (whole seconds, rounded up): no connection is valid.
			require.True(t, waitFor(15*time.Second, func() bool {
				_, ok := p.Token()
				return !ok && time.Now().After(info.ExpiresOn.Add(1100*time.Millisecond))
			}), "the token never expired")

			var (
				stop           atomic.Bool
				ok, failed     atomic.Int64
				back, firstOK  atomic.Int64 // unix ns
				slowest        atomic.Int64 // ns, of a failed INCR
				wrong          atomic.Value
				wg             sync.WaitGroup
				callsAt, dials = cred.calls.Load(), h.Stats().Dials
				conns          = gw.Stats().Connections
			)
			for range workers {
				wg.Go(func() {
					for !stop.Load() {
						t0 := time.Now()
						err := rdb.Incr(ctx, key).Err()
						if err == nil {
							ok.Add(1)
							if back.Load() != 0 {
								firstOK.CompareAndSwap(0, time.Now().UnixNano())
							} else {
								wrong.Store(errors.New("an INCR succeeded during the outage"))
							}
						} else {
							failed.Add(1)
							if !errors.Is(err, provider.ErrTokenUnavailable) {
								wrong.Store(err)
							}
							d := int64(time.Since(t0))
							for s := slowest.Load(); d > s && !slowest.CompareAndSwap(s, d); s = slowest.Load() {
							}
						}
						time.Sleep(10 * time.Millisecond)
					}
				})
			}
			start := time.Now()
			time.Sleep(window) // the observation window: counting, not synchronising
			secs := time.Since(start).Seconds()
			calls := cred.calls.Load() - callsAt
			hookDials := h.Stats().Dials - dials
			gwConns := gw.Stats().Connections - conns
			failedInOutage := failed.Load()

			back.Store(time.Now().UnixNano())
			iss.FailFor(0, 0)
			recovered := waitFor(10*time.Second, func() bool { return firstOK.Load() != 0 })
			stop.Store(true)
			wg.Wait()
			recovery := time.Duration(firstOK.Load() - back.Load())

			t.Logf("%d goroutines, 3 s of outage past expiry: %.2f credential calls/s, %.2f dials/s (hook), %.2f connections/s (gateway); %d INCR failed, slowest failure %v; first INCR %v after the identity endpoint's return",
				workers, float64(calls)/secs, float64(hookDials)/secs, float64(gwConns)/secs, failedInOutage,
				time.Duration(slowest.Load()).Round(time.Millisecond), recovery.Round(time.Millisecond))
			require.True(t, recovered, "no INCR succeeded after the identity endpoint's return")
			if err, _ := wrong.Load().(error); err != nil {
				t.Errorf("an INCR got %v", err)
			}
			assert.LessOrEqual(t, float64(calls)/secs, 4.0, "credential calls per second")
			assert.LessOrEqual(t, int64(hookDials), calls, "dials (hook) vs credential calls")
			assert.LessOrEqual(t, gwConns, calls, "connections (gateway) vs credential calls")
			assert.Positive(t, failedInOutage)
			assert.Less(t, recovery, 2*time.Second, "first INCR after the endpoint's return")
			n, err := rdb.Get(ctx, key).Int64()
			require.NoError(t, err)
			assert.Equal(t, ok.Load(), n, "INCRs applied vs acknowledged")

			require.NoError(t, rdb.Close())
			require.NoError(t, h.Close())
			require.NoError(t, p.Close())
			require.NoError(t, iss.Close()) // ends the credential's keep-alive connections to it
			testutil.WaitGoroutines(t, base)
		})
	}
}

// waitFor polls cond until it holds or d has passed, and reports whether it held.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// hangingCred never returns until released, whatever its context says.
type hangingCred struct{ release chan struct{} }

func (c hangingCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	<-c.release
	return azcore.AccessToken{}, errors.New("released")
}

// TestStuckCredentialDoesNotHangCommands: a credential that ignores its context, FetchTimeout 1 s.
// A command with context.Background() fails (provider.ErrFetchTimeout) instead of hanging, and
// Close of the provider returns within about FetchTimeout. The credential's goroutine is its own:
// the test releases it before checking for leaks.
func TestStuckCredentialDoesNotHangCommands(t *testing.T) {
	testutil.Slow(t)
	cred := hangingCred{release: make(chan struct{})}
	defer func() {
		select {
		case <-cred.release:
		default:
			close(cred.release)
		}
	}()
	srv := entratest.StartRedis(t, nil)
	base := runtime.NumGoroutine()
	p, err := provider.New(cred, &provider.Options{FetchTimeout: time.Second})
	require.NoError(t, err)
	h := hook.New(p, nil)
	rdb := NewClient(h, &redis.Options{Addr: srv.Addr()})
	start := time.Now()
	err = rdb.Ping(context.Background()).Err()
	cmd := time.Since(start)
	require.Error(t, err)
	assert.ErrorIs(t, err, provider.ErrFetchTimeout)
	assert.ErrorIs(t, err, provider.ErrTokenUnavailable)
	start = time.Now()
	err = rdb.Ping(context.Background()).Err()
	again := time.Since(start)
	assert.ErrorIs(t, err, provider.ErrFetchTimeout)
	require.NoError(t, rdb.Close())
	start = time.Now()
	require.NoError(t, p.Close())
	closing := time.Since(start)
	t.Logf("stuck credential, FetchTimeout 1s: first PING failed after %v, the next after %v; provider Close took %v; hook dials %d",
		cmd.Round(time.Millisecond), again.Round(time.Millisecond), closing.Round(time.Millisecond), h.Stats().Dials)
	// FetchTimeout, then go-redis's dial retries (5 x 100 ms) and the hook's (3, with backoff).
	assert.Less(t, cmd, 6*time.Second, "a command with context.Background()")
	assert.Less(t, closing, 2*time.Second, "provider Close")
	assert.Zero(t, h.Stats().Dials, "dials without a token")
	close(cred.release)
	testutil.WaitGoroutines(t, base)
}

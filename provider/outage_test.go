package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/internal/acltest"
	"github.com/entraredis/entraredis/internal/testutil"
)

// countingCred records when each call to the credential it wraps started and ended.
type countingCred struct {
	cred azcore.TokenCredential

	mu           sync.Mutex
	starts, ends []time.Time
}

func (c *countingCred) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	c.starts = append(c.starts, time.Now())
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.ends = append(c.ends, time.Now())
		c.mu.Unlock()
	}()
	return c.cred.GetToken(ctx, o)
}

// callsIn returns the start times of the calls in [from, to).
func (c *countingCred) callsIn(from, to time.Time) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ts []time.Time
	for _, s := range c.starts {
		if !s.Before(from) && s.Before(to) {
			ts = append(ts, s)
		}
	}
	return ts
}

func (c *countingCred) lastEnd() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ends[len(c.ends)-1]
}

func (c *countingCred) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.starts)
}

// managedIdentity returns the real azidentity.ManagedIdentityCredential on iss's managed-identity
// endpoint (App Service protocol, loopback). sdkRetries false turns off azcore's own retries, so
// that each credential call is one HTTP request and the provider sees every 429 and 500.
func managedIdentity(t *testing.T, iss *entratest.Issuer, sdkRetries bool) *countingCred {
	t.Helper()
	iss.SetManagedIdentityEnv(t)
	var o azidentity.ManagedIdentityCredentialOptions
	if !sdkRetries {
		o.ClientOptions.Retry.MaxRetries = -1
	}
	mi, err := azidentity.NewManagedIdentityCredential(&o)
	require.NoError(t, err)
	return &countingCred{cred: mi}
}

func newIssuer(t *testing.T, life time.Duration) *entratest.Issuer {
	t.Helper()
	k, err := acltest.Key()
	require.NoError(t, err)
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: life, Key: k})
	require.NoError(t, err)
	t.Cleanup(func() { _ = iss.Close() })
	return iss
}

// TestOutagePastExpiryIsPaced: the real ManagedIdentityCredential, its identity endpoint answering
// HTTP 500 after the token expired, and 1, 64 or 512 goroutines asking the provider for a token
// (each every 10 ms, as commands would). The credential is called at most 4 times a second whatever
// the number of callers, each caller gets the error (ErrTokenUnavailable and the cause) at once
// between attempts, and the first caller after the endpoint's return has a token within 2 s.
func TestOutagePastExpiryIsPaced(t *testing.T) {
	testutil.Slow(t)
	const window = 3 * time.Second
	for _, callers := range []int{1, 64, 512} {
		t.Run(fmt.Sprintf("callers=%d", callers), func(t *testing.T) {
			iss := newIssuer(t, 2*time.Second)
			cred := managedIdentity(t, iss, false)
			p := newTest(t, cred, nil)
			_, _, err := p.CredentialsProviderContext(context.Background())
			require.NoError(t, err)
			iss.FailFor(time.Hour, http.StatusInternalServerError)
			require.True(t, waitUntil(10*time.Second, func() bool { _, ok := p.Token(); return !ok }), "the token never expired")
			failedBefore := iss.Stats().Failed

			var (
				stop              atomic.Bool
				answers, failures atomic.Int64
				slowest           atomic.Int64 // ns, of an answer that was an error
				firstOK           atomic.Int64 // unix ns of the first token after the endpoint's return
				back              atomic.Int64 // unix ns of the endpoint's return
				wg                sync.WaitGroup
				wrong             atomic.Value
			)
			for range callers {
				wg.Go(func() {
					for !stop.Load() {
						t0 := time.Now()
						_, _, err := p.CredentialsProviderContext(context.Background())
						d := time.Since(t0)
						answers.Add(1)
						if err == nil {
							if back.Load() != 0 {
								firstOK.CompareAndSwap(0, time.Now().UnixNano())
							} else {
								wrong.Store(errors.New("a token during the outage"))
							}
						} else {
							failures.Add(1)
							if !errors.Is(err, ErrTokenUnavailable) || !strings.Contains(err.Error(), "500") {
								wrong.Store(err)
							}
							for s := slowest.Load(); int64(d) > s && !slowest.CompareAndSwap(s, int64(d)); s = slowest.Load() {
							}
						}
						time.Sleep(10 * time.Millisecond)
					}
				})
			}
			start := time.Now()
			time.Sleep(window) // the observation window: counting, not synchronising
			end := time.Now()
			calls := len(cred.callsIn(start, end))
			requests := iss.Stats().Failed - failedBefore
			rate := float64(calls) / end.Sub(start).Seconds()
			worst := maxPerSecond(cred.callsIn(start, end))

			back.Store(time.Now().UnixNano())
			iss.FailFor(0, 0)
			recovered := waitUntil(10*time.Second, func() bool { return firstOK.Load() != 0 })
			stop.Store(true)
			wg.Wait()
			require.True(t, recovered, "no token after the endpoint's return")
			recovery := time.Duration(firstOK.Load() - back.Load())

			t.Logf("%d callers, outage past expiry, %v: %d credential calls (%.2f/s, at most %d in any 1 s), %d HTTP requests; %d answers to callers, %d errors, slowest error %v; first token %v after the endpoint's return",
				callers, end.Sub(start).Round(time.Millisecond), calls, rate, worst, requests, answers.Load(), failures.Load(),
				time.Duration(slowest.Load()).Round(time.Millisecond), recovery.Round(time.Millisecond))
			if err, _ := wrong.Load().(error); err != nil {
				t.Errorf("a caller got %v", err)
			}
			assert.LessOrEqual(t, rate, 4.0, "credential calls per second")
			assert.LessOrEqual(t, worst, 4, "credential calls in any 1 s")
			assert.Positive(t, calls, "the provider kept trying")
			assert.Less(t, recovery, 2*time.Second, "first token after the endpoint's return")
			// Between attempts the answer is immediate; during one (an HTTP round trip on
			// loopback) it is that round trip.
			assert.Less(t, time.Duration(slowest.Load()), time.Second, "slowest error answer")
		})
	}
}

// maxPerSecond returns the largest number of the sorted times ts in any 1 s window.
func maxPerSecond(ts []time.Time) int {
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) >= time.Second {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// waitUntil polls cond until it holds or d has passed, and reports whether it held.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// TestRetryAfterIsHonoured: the identity endpoint answers 429 with Retry-After (whole seconds, as
// entratest and IMDS send it) to the real ManagedIdentityCredential. No credential call is made
// before the Retry-After has elapsed, neither by callers hammering the provider nor by forced
// refreshes (as the hook makes after an authentication error) nor by the background refresh; the
// wait is in the event and the log; the first call after it gets a token.
func TestRetryAfterIsHonoured(t *testing.T) {
	testutil.Slow(t)
	for _, tc := range []struct {
		name  string
		valid bool // a valid token is cached when the 429s start: forced refreshes ask
	}{
		{"no token: callers", false},
		{"valid token: forced refreshes", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iss := newIssuer(t, 20*time.Second)
			cred := managedIdentity(t, iss, false)
			var logs testutil.SyncBuffer
			events := make(chan Event, 100)
			p := newTest(t, cred, &Options{
				Logger: slog.New(slog.NewTextHandler(&logs, nil)),
				OnEvent: func(e Event) {
					if e.Kind == EventRefreshFailed {
						events <- e
					}
				},
			})
			ask := func() error { _, _, err := p.CredentialsProviderContext(context.Background()); return err }
			if tc.valid {
				require.NoError(t, ask())
				ask = func() error { return p.Refresh(context.Background()) }
			}
			iss.FailFor(2500*time.Millisecond, http.StatusTooManyRequests) // Retry-After: 3
			outageEnd := time.Now().Add(2500 * time.Millisecond)
			from := time.Now()
			err := ask()
			require.Error(t, err)
			require.ErrorIs(t, err, ErrTokenUnavailable)
			var af *azidentity.AuthenticationFailedError
			require.ErrorAs(t, err, &af, "the real credential's error type")
			e := <-events
			assert.Equal(t, 3*time.Second, e.RetryAfter, "Retry-After in the event")
			firstEnd := cred.lastEnd()

			// Hammer it from 16 goroutines until one gets through.
			var wg sync.WaitGroup
			var okAt atomic.Int64
			var fast atomic.Int64
			for range 16 {
				wg.Go(func() {
					for okAt.Load() == 0 && time.Since(from) < 10*time.Second {
						if err := ask(); err == nil {
							okAt.CompareAndSwap(0, time.Now().UnixNano())
						} else {
							fast.Add(1)
						}
						time.Sleep(2 * time.Millisecond)
					}
				})
			}
			wg.Wait()
			require.NotZero(t, okAt.Load(), "no token within 10 s")
			calls := cred.callsIn(from, time.Now())
			require.GreaterOrEqual(t, len(calls), 2)
			gap := calls[1].Sub(firstEnd)
			recovery := time.Unix(0, okAt.Load()).Sub(outageEnd)
			t.Logf("%s: 429 with Retry-After 3s; next credential call %v after the answer; %d calls in all; %d errors answered meanwhile; first token %v after the outage ended; event RetryAfter=%v NextAttempt in %v",
				tc.name, gap.Round(time.Millisecond), len(calls), fast.Load(), recovery.Round(time.Millisecond), e.RetryAfter, e.NextAttempt.Sub(firstEnd).Round(time.Millisecond))
			assert.GreaterOrEqual(t, gap, 3*time.Second, "a credential call before Retry-After elapsed")
			assert.LessOrEqual(t, len(calls), 3, "credential calls (the 429, maybe one at the end of the outage, the success)")
			assert.Less(t, recovery, 2*time.Second)
			assert.Contains(t, logs.String(), "retry_after=3s")
		})
	}
}

// TestBackgroundRefreshHonoursRetryAfter: with no caller at all, the background refresh of a
// valid token meets a 429 with Retry-After and waits it out before calling again, even when the
// token expires meanwhile.
func TestBackgroundRefreshHonoursRetryAfter(t *testing.T) {
	testutil.Slow(t)
	iss := newIssuer(t, 4*time.Second) // refreshed at 2-3 s
	cred := managedIdentity(t, iss, false)
	failed := make(chan Event, 10)
	p := newTest(t, cred, &Options{OnEvent: func(e Event) {
		if e.Kind == EventRefreshFailed {
			failed <- e
		}
	}})
	_, _, err := p.CredentialsProviderContext(context.Background())
	require.NoError(t, err)
	iss.FailFor(5*time.Second, http.StatusTooManyRequests) // at the refresh, Retry-After 3 or 4 s
	var e Event
	select {
	case e = <-failed:
	case <-time.After(10 * time.Second):
		t.Fatal("the background refresh did not run")
	}
	first := cred.lastEnd()
	require.True(t, waitUntil(10*time.Second, func() bool { info, _ := p.Token(); return info.Generation >= 2 }), "no refresh after the 429s")
	calls := cred.callsIn(first.Add(-time.Second), time.Now())
	require.GreaterOrEqual(t, len(calls), 2)
	gap := calls[len(calls)-1].Sub(first)
	t.Logf("background refresh: 429 with Retry-After %v, next call %v after the answer, %d calls", e.RetryAfter, gap.Round(time.Millisecond), len(calls))
	assert.GreaterOrEqual(t, e.RetryAfter, 2*time.Second)
	assert.Len(t, calls, 2, "one refused, one after Retry-After")
	assert.GreaterOrEqual(t, gap, e.RetryAfter, "called again before Retry-After elapsed")
}

// TestSDKRetriesFitInFetchTimeout: the managed-identity credential retries a 500 itself (0.8, 2.4
// and 5.6 s, jittered); with the default FetchTimeout one provider fetch lets them all run and
// gets the token from the fourth request.
func TestSDKRetriesFitInFetchTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("about 9 s of azidentity's own backoff")
	}
	iss := newIssuer(t, time.Minute)
	cred := managedIdentity(t, iss, true)
	p := newTest(t, cred, nil)
	iss.FailNext(3, http.StatusInternalServerError)
	start := time.Now()
	_, _, err := p.CredentialsProviderContext(context.Background())
	d := time.Since(start)
	require.NoError(t, err)
	st := iss.Stats()
	t.Logf("one fetch through azidentity's 3 retries of a 500: %v, %d failed and %d served requests, %d credential call", d.Round(time.Millisecond), st.Failed, st.Served, cred.count())
	assert.Equal(t, int64(3), st.Failed)
	assert.Equal(t, 1, cred.count())
	assert.Greater(t, d, 6*time.Second, "azidentity's retries ran")
	assert.Less(t, d, p.opts.FetchTimeout)
}

// stuckCred ignores its context: each call blocks until release is closed.
type stuckCred struct {
	calls   atomic.Int64
	release chan struct{}
}

func (s *stuckCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	s.calls.Add(1)
	<-s.release
	return azcore.AccessToken{}, errors.New("released")
}

// TestStuckCredential: a credential that never returns and ignores its context. A caller without
// a deadline waits FetchTimeout, one with a deadline until it; after that callers get
// ErrFetchTimeout at once and no second call starts; Close returns within half a second and
// logs that a call is still running. The stuck goroutine belongs to the credential: the test
// releases it before checking that no goroutine is left.
func TestStuckCredential(t *testing.T) {
	const fetchTimeout = 400 * time.Millisecond
	base := runtime.NumGoroutine()
	cred := &stuckCred{release: make(chan struct{})}
	var logs testutil.SyncBuffer
	p, err := New(cred, &Options{FetchTimeout: fetchTimeout, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	released := false
	release := func() {
		if !released {
			released = true
			close(cred.release)
		}
	}
	t.Cleanup(release)

	var bg, short time.Duration
	var bgErr, shortErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		t0 := time.Now()
		_, _, bgErr = p.CredentialsProviderContext(context.Background())
		bg = time.Since(t0)
	})
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		t0 := time.Now()
		_, _, shortErr = p.CredentialsProviderContext(ctx)
		short = time.Since(t0)
	})
	wg.Wait()
	assert.ErrorIs(t, bgErr, ErrFetchTimeout)
	assert.ErrorIs(t, bgErr, ErrTokenUnavailable)
	assert.ErrorIs(t, shortErr, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, bg, fetchTimeout-10*time.Millisecond)
	assert.Less(t, bg, fetchTimeout+time.Second, "a caller without deadline waited past FetchTimeout")
	assert.Less(t, short, time.Second, "a caller waited past its deadline")

	// Now the call is overdue: everyone gets the error at once, no new call starts.
	t0 := time.Now()
	for range 100 {
		_, _, err := p.CredentialsProviderContext(context.Background())
		require.ErrorIs(t, err, ErrFetchTimeout)
		require.ErrorIs(t, p.Refresh(context.Background()), ErrFetchTimeout)
	}
	later := time.Since(t0)
	assert.Equal(t, int64(1), cred.calls.Load(), "credential calls while one is stuck")

	t0 = time.Now()
	require.NoError(t, p.Close())
	closing := time.Since(t0)
	t.Logf("stuck credential, FetchTimeout %v: caller without deadline waited %v, with a 100 ms deadline %v; 200 later calls took %v in all; Close took %v; credential calls %d",
		fetchTimeout, bg.Round(time.Millisecond), short.Round(time.Millisecond), later.Round(time.Microsecond), closing.Round(time.Millisecond), cred.calls.Load())
	assert.Less(t, later, 500*time.Millisecond)
	assert.Less(t, closing, fetchTimeout+time.Second, "Close with a stuck credential")
	assert.Contains(t, logs.String(), "still running")
	assert.Contains(t, logs.String(), "longer than FetchTimeout")

	release()
	testutil.WaitGoroutines(t, base)
}

// TestCloseDuringStuckFetchReturnsPromptly: Close while a fresh call is stuck waits at most about
// FetchTimeout for it, and ends the callers' waits at once.
func TestCloseDuringStuckFetchReturnsPromptly(t *testing.T) {
	testutil.Slow(t)
	const fetchTimeout = 2 * time.Second
	base := runtime.NumGoroutine()
	cred := &stuckCred{release: make(chan struct{})}
	p, err := New(cred, &Options{FetchTimeout: fetchTimeout})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { _, _, err := p.CredentialsProviderContext(context.Background()); done <- err }()
	require.True(t, waitUntil(5*time.Second, func() bool { return cred.calls.Load() == 1 }))
	t0 := time.Now()
	require.NoError(t, p.Close())
	closing := time.Since(t0)
	select {
	case err := <-done:
		assert.ErrorIs(t, err, ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("caller still blocked after Close")
	}
	t.Logf("Close with a call stuck since just before: %v (FetchTimeout %v)", closing.Round(time.Millisecond), fetchTimeout)
	assert.Less(t, closing, fetchTimeout+time.Second)
	close(cred.release)
	testutil.WaitGoroutines(t, base)
}

// panicCred panics with value() while panicking is set, then hands out tokens.
type panicCred struct {
	fakeCred
	value     func() any
	panicking atomic.Bool
}

func (c *panicCred) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if c.panicking.Load() {
		panic(c.value())
	}
	return c.fakeCred.GetToken(ctx, o)
}

// TestPanickingCredential: a panic in GetToken is a failed fetch whose error names the panic and
// holds no token text, whatever the panic carries; the provider keeps working.
func TestPanickingCredential(t *testing.T) {
	secret := mint(map[string]any{"oid": testOID, "exp": time.Now().Add(time.Hour).Unix()})
	cases := []struct {
		name  string
		value func() any
		want  string // in the error
	}{
		{"string", func() any { return "index out of range" }, "index out of range"},
		{"error", func() any { return errors.New("nil map write") }, "nil map write"},
		{"token in the message", func() any { return "bad token " + secret }, "bad token [redacted]"},
		{"runtime error", func() any { var m map[string]int; m["x"]++; return nil }, "assignment to entry in nil map"},
		{"panic(nil)", func() any { return nil }, "PanicNilError"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cred := &panicCred{fakeCred: fakeCred{life: time.Hour}, value: tc.value}
			cred.panicking.Store(true)
			var logs testutil.SyncBuffer
			var events atomic.Int64
			p := newTest(t, cred, &Options{
				Logger: slog.New(slog.NewTextHandler(&logs, nil)),
				OnEvent: func(e Event) {
					if e.Kind == EventRefreshFailed && errors.Is(e.Err, ErrCredentialPanicked) {
						events.Add(1)
					}
				},
			})
			_, _, err := p.CredentialsProviderContext(context.Background())
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrTokenUnavailable)
			assert.ErrorIs(t, err, ErrCredentialPanicked)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, waitUntil(5*time.Second, func() bool { return events.Load() == 1 }), "one EventRefreshFailed naming the panic")
			assert.Contains(t, logs.String(), "goroutine ", "the log has the stack")
			for _, seg := range strings.Split(secret, ".") {
				assert.NotContains(t, err.Error(), seg, "token text in the error")
				assert.NotContains(t, logs.String(), seg, "token text in the log")
			}
			t.Logf("error: %v", err)

			cred.panicking.Store(false)
			require.True(t, waitUntil(5*time.Second, func() bool {
				_, _, err := p.CredentialsProviderContext(context.Background())
				return err == nil
			}), "the provider did not recover after the panics stopped")
		})
	}
}

// TestPanicCarriesTheNewestToken: a panic that quotes the provider's current token (even one
// that is not shaped like a JWT) does not show it.
func TestPanicCarriesTheNewestToken(t *testing.T) {
	const opaque = "opaque-token-value-9f8e7d"
	var n atomic.Int64
	cred := credFuncErr(func() (azcore.AccessToken, error) {
		if n.Add(1) == 1 {
			return azcore.AccessToken{Token: opaque, ExpiresOn: time.Now().Add(time.Hour)}, nil
		}
		panic("refreshing " + opaque + " failed")
	})
	p := newTest(t, cred, &Options{Username: "me"})
	_, _, err := p.CredentialsProviderContext(context.Background())
	require.NoError(t, err)
	err = p.Refresh(context.Background())
	require.ErrorIs(t, err, ErrCredentialPanicked)
	assert.NotContains(t, err.Error(), opaque)
	assert.Contains(t, err.Error(), "refreshing [token] failed")
	_, pass, err := p.CredentialsProviderContext(context.Background())
	require.NoError(t, err, "the valid token is still served")
	assert.True(t, pass == opaque)
}

type credFuncErr func() (azcore.AccessToken, error)

func (f credFuncErr) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return f()
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name   string
		header map[string]string
		want   time.Duration
	}{
		{"none", nil, 0},
		{"seconds", map[string]string{"Retry-After": "3"}, 3 * time.Second},
		{"spaces", map[string]string{"Retry-After": " 7 "}, 7 * time.Second},
		{"capped", map[string]string{"Retry-After": "3600"}, time.Minute},
		{"huge", map[string]string{"Retry-After": "99999999999999999"}, time.Minute},
		{"zero", map[string]string{"Retry-After": "0"}, 0},
		{"negative", map[string]string{"Retry-After": "-5"}, 0},
		{"HTTP date", map[string]string{"Retry-After": now.Add(10 * time.Second).Format(http.TimeFormat)}, 10 * time.Second},
		{"HTTP date, past", map[string]string{"Retry-After": now.Add(-10 * time.Second).Format(http.TimeFormat)}, 0},
		{"garbage", map[string]string{"Retry-After": "soon"}, 0},
		{"retry-after-ms", map[string]string{"retry-after-ms": "1500"}, 1500 * time.Millisecond},
		{"x-ms-retry-after-ms wins over seconds", map[string]string{"x-ms-retry-after-ms": "200", "Retry-After": "5"}, 200 * time.Millisecond},
		{"ms capped", map[string]string{"retry-after-ms": "9999999"}, time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.header {
				h.Set(k, v)
			}
			assert.Equal(t, tc.want, min(parseRetryAfter(h, now), maxRetryAfter))
		})
	}
}

func TestRetryAfterFromErrors(t *testing.T) {
	resp := func(v string) *http.Response {
		return &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {v}}}
	}
	cases := []struct {
		name string
		err  error
		want time.Duration
	}{
		{"ResponseError", &azcore.ResponseError{StatusCode: 429, RawResponse: resp("4")}, 4 * time.Second},
		{"wrapped ResponseError", fmt.Errorf("x: %w", &azcore.ResponseError{StatusCode: 429, RawResponse: resp("2")}), 2 * time.Second},
		{"AuthenticationFailedError", &azidentity.AuthenticationFailedError{RawResponse: resp("5")}, 5 * time.Second},
		{"capped", &azidentity.AuthenticationFailedError{RawResponse: resp("900")}, time.Minute},
		{"no response", &azidentity.AuthenticationFailedError{}, 0},
		{"other error", errors.New("boom"), 0},
		{"nil", nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, retryAfter(tc.err))
		})
	}
}

// failThenStuck fails its first call, then blocks every later one until release is closed.
type failThenStuck struct {
	calls   atomic.Int64
	release chan struct{}
}

func (c *failThenStuck) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if c.calls.Add(1) > 1 {
		<-c.release
	}
	return azcore.AccessToken{}, errors.New("identity endpoint down")
}

// TestStuckDuringOutage: in an outage (a call failed, no token) callers get the last error at once
// while the next call runs, except the one that started it, which waits for it up to
// FetchTimeout; past that everyone gets ErrFetchTimeout, the log says so, and still no other call
// starts.
func TestStuckDuringOutage(t *testing.T) {
	const fetchTimeout = 300 * time.Millisecond
	cred := &failThenStuck{release: make(chan struct{})}
	var logs testutil.SyncBuffer
	p, err := New(cred, &Options{FetchTimeout: fetchTimeout, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	defer close(cred.release)
	defer p.Close()
	_, _, err = p.CredentialsProviderContext(context.Background())
	require.ErrorContains(t, err, "identity endpoint down")

	var mu sync.Mutex
	var slow []error
	var fastLast, fastTimeout atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(2 * time.Second) // the stuck call is overdue after 0.2 + 0.3 + 0.5 s
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				t0 := time.Now()
				_, _, err := p.CredentialsProviderContext(context.Background())
				switch {
				case time.Since(t0) > 100*time.Millisecond:
					mu.Lock()
					slow = append(slow, err)
					mu.Unlock()
				case errors.Is(err, ErrFetchTimeout):
					fastTimeout.Add(1)
				case strings.Contains(err.Error(), "identity endpoint down"):
					fastLast.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	t.Logf("8 callers for 2 s: %d answers waited (the caller that started the stuck call), %d got the last error at once, %d ErrFetchTimeout at once; credential calls %d",
		len(slow), fastLast.Load(), fastTimeout.Load(), cred.calls.Load())
	require.Len(t, slow, 1, "callers that waited")
	assert.ErrorIs(t, slow[0], ErrFetchTimeout)
	assert.Positive(t, fastLast.Load())
	assert.Positive(t, fastTimeout.Load())
	assert.Equal(t, int64(2), cred.calls.Load())
	assert.Contains(t, logs.String(), "longer than FetchTimeout")
}

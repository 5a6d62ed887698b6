package provider

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/redis/go-redis/v9/auth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/testutil"
	"github.com/entraredis/entraredis/jwtutil"
	"github.com/entraredis/entraredis/retry"
)

const testOID = "6f1c2a3b-0000-4000-8000-00000000abcd"

// mint makes an unsigned Entra-shaped JWT: the provider only reads claims, the server verifies.
func mint(claims map[string]any) string {
	enc := base64.RawURLEncoding.EncodeToString
	h, _ := json.Marshal(map[string]any{"alg": "RS256", "typ": "JWT"})
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	claims["jti"] = fmt.Sprintf("%x", nonce)
	b, _ := json.Marshal(claims)
	return enc(h) + "." + enc(b) + "." + enc(nonce)
}

// fakeCred is a scripted azcore.TokenCredential: pure logic, no identity provider.
type fakeCred struct {
	life  time.Duration
	calls atomic.Int64
	gate  chan struct{} // when set, each call waits for it to close (or ctx)

	mu     sync.Mutex
	err    error // when set, calls fail with it
	same   bool  // when set, calls return the previous token again
	noOID  bool  // omit the oid claim
	last   azcore.AccessToken
	tokens []string // every token handed out, for leak checks
}

func (f *fakeCred) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	f.calls.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return azcore.AccessToken{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return azcore.AccessToken{}, f.err
	}
	if f.same && f.last.Token != "" {
		return f.last, nil
	}
	exp := time.Now().Add(f.life)
	claims := map[string]any{"aud": "https://redis.azure.com", "exp": exp.Unix(), "tid": "t"}
	if !f.noOID {
		claims["oid"] = testOID
	}
	f.last = azcore.AccessToken{Token: mint(claims), ExpiresOn: exp}
	f.tokens = append(f.tokens, f.last.Token)
	return f.last, nil
}

func (f *fakeCred) set(fn func(f *fakeCred)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

func (f *fakeCred) issued() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tokens...)
}

// fastRetry keeps backoff short so that failure tests take milliseconds.
var fastRetry = retry.Policy{InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}

func newTest(t *testing.T, cred azcore.TokenCredential, o *Options) *Provider {
	t.Helper()
	if o == nil {
		o = &Options{}
	}
	if o.Retry == (retry.Policy{}) {
		o.Retry = fastRetry
	}
	p, err := New(cred, o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestColdCallersShareOneFetch(t *testing.T) {
	cred := &fakeCred{life: time.Hour, gate: make(chan struct{})}
	p := newTest(t, cred, nil)
	const callers = 200
	var wg sync.WaitGroup
	passwords := make([]string, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() { _, passwords[i], errs[i] = p.CredentialsProviderContext(context.Background()) })
	}
	require.Eventually(t, func() bool { return cred.calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	close(cred.gate)
	wg.Wait()
	assert.Equal(t, int64(1), cred.calls.Load(), "credential calls for 200 cold callers")
	for i := range callers {
		require.NoError(t, errs[i])
		assert.True(t, passwords[i] == passwords[0], "caller %d got another token", i)
	}
}

func TestCallerContextEndsPromptly(t *testing.T) {
	cred := &fakeCred{life: time.Hour, gate: make(chan struct{})}
	p := newTest(t, cred, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := p.CredentialsProviderContext(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, ErrTokenUnavailable)
	assert.Less(t, time.Since(start), 2*time.Second)

	// The shared fetch went on: the next caller joins it and gets its token.
	done := make(chan error, 1)
	go func() { _, _, err := p.CredentialsProviderContext(context.Background()); done <- err }()
	close(cred.gate)
	require.NoError(t, <-done)
	assert.Equal(t, int64(1), cred.calls.Load())
}

func TestRefreshDelay(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name                 string
		offset, jitter, life time.Duration
		refreshOn            time.Duration // from now; 0: none
		lo, hi               time.Duration
	}{
		{"azure hour token", 5 * time.Minute, time.Minute, time.Hour, 0, 54 * time.Minute, 55 * time.Minute},
		{"no jitter", 5 * time.Minute, -1, time.Hour, 0, 55 * time.Minute, 55 * time.Minute},
		{"jitter clamped to half life", 4 * time.Minute, 10 * time.Minute, 10 * time.Minute, 0, 5 * time.Minute, 6 * time.Minute},
		{"offset over half life: 50-75%", 5 * time.Minute, time.Minute, 2 * time.Second, 0, time.Second, 1500 * time.Millisecond},
		{"one second token", 5 * time.Minute, time.Minute, time.Second, 0, 500 * time.Millisecond, 750 * time.Millisecond},
		{"RefreshOn sooner wins", 5 * time.Minute, time.Minute, time.Hour, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute},
		{"RefreshOn later ignored", 5 * time.Minute, -1, time.Hour, 58 * time.Minute, 55 * time.Minute, 55 * time.Minute},
		{"RefreshOn past: now", 5 * time.Minute, time.Minute, time.Hour, -time.Minute, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(&fakeCred{}, &Options{RefreshOffset: tc.offset, RefreshJitter: tc.jitter})
			require.NoError(t, err)
			defer p.Close()
			var refreshOn time.Time
			if tc.refreshOn != 0 {
				refreshOn = now.Add(tc.refreshOn)
			}
			for range 100 {
				d := p.refreshDelay(tc.life, refreshOn, now)
				require.GreaterOrEqual(t, d, tc.lo)
				require.LessOrEqual(t, d, tc.hi)
			}
		})
	}
}

func TestBackgroundRefreshKeepsTokenFresh(t *testing.T) {
	cred := &fakeCred{life: time.Second}
	var refreshed atomic.Int64
	p := newTest(t, cred, &Options{OnEvent: func(e Event) {
		if e.Kind == EventRefreshed {
			refreshed.Add(1)
		}
	}})
	require.NoError(t, p.Refresh(context.Background()))
	start := time.Now()
	require.Eventually(t, func() bool { return refreshed.Load() >= 4 }, 10*time.Second, 5*time.Millisecond)
	elapsed := time.Since(start)
	// Refreshes happen at 50-75% of a 1 s life: never more than about two calls per lifetime.
	assert.LessOrEqual(t, float64(cred.calls.Load()), 2*elapsed.Seconds()+2, "credential calls in %v", elapsed)
	info, ok := p.Token()
	require.True(t, ok)
	assert.Equal(t, testOID, info.Username)
	assert.True(t, info.ExpiresOn.After(time.Now()))
}

func TestRefreshLoopSurvivesFailures(t *testing.T) {
	cred := &fakeCred{life: 2 * time.Second}
	var events sync.Map // EventKind -> count
	p := newTest(t, cred, &Options{OnEvent: func(e Event) {
		v, _ := events.LoadOrStore(e.Kind, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}})
	count := func(k EventKind) int64 {
		v, ok := events.Load(k)
		if !ok {
			return 0
		}
		return v.(*atomic.Int64).Load()
	}
	_, first, err := p.CredentialsProviderContext(context.Background())
	require.NoError(t, err)
	// Not a network error: go-redis-entraid's loop dies on this kind.
	cred.set(func(f *fakeCred) { f.err = errors.New("AADSTS700016: application not found") })
	require.Eventually(t, func() bool { return count(EventRefreshFailed) >= 3 }, 5*time.Second, 5*time.Millisecond)
	// While failing, the still-valid token keeps being served.
	if info, ok := p.Token(); ok {
		_, pass, err := p.CredentialsProviderContext(context.Background())
		require.NoError(t, err)
		assert.True(t, pass == first, "a different token was served during the outage")
		assert.True(t, info.ExpiresOn.After(time.Now()))
	}
	cred.set(func(f *fakeCred) { f.err = nil })
	require.Eventually(t, func() bool { return count(EventRecovered) >= 1 }, 5*time.Second, 5*time.Millisecond)
	_, pass, err := p.CredentialsProviderContext(context.Background())
	require.NoError(t, err)
	assert.False(t, pass == first, "the token was not renewed after recovery")
}

func TestPastExpiryCallerFetchesItself(t *testing.T) {
	cred := &fakeCred{life: time.Second}
	// A background backoff of minutes: callers must not wait for it.
	p := newTest(t, cred, &Options{Retry: retry.Policy{InitialBackoff: time.Minute, MaxBackoff: time.Minute}})
	require.NoError(t, p.Refresh(context.Background()))
	cause := errors.New("identity endpoint unreachable")
	cred.set(func(f *fakeCred) { f.err = cause })
	require.Eventually(t, func() bool { _, ok := p.Token(); return !ok }, 5*time.Second, 5*time.Millisecond)

	_, pass, err := p.CredentialsProviderContext(context.Background())
	require.Error(t, err)
	assert.Empty(t, pass, "an expired token was handed out")
	assert.ErrorIs(t, err, ErrTokenUnavailable)
	assert.ErrorIs(t, err, cause)

	// Recovery does not wait for the background backoff either: attempts are about 1 s apart
	// while no token is valid, and callers get the last error at once in between.
	cred.set(func(f *fakeCred) { f.err = nil })
	start := time.Now()
	deadline := start.Add(5 * time.Second)
	for {
		_, pass, err = p.CredentialsProviderContext(context.Background())
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, err)
	assert.NotEmpty(t, pass)
	assert.Less(t, time.Since(start), 2*time.Second)
	t.Logf("first token %v after the credential's return", time.Since(start))
}

func TestBadTokensAreFailedFetches(t *testing.T) {
	cases := []struct {
		name     string
		cred     azcore.TokenCredential
		username string
		want     error
	}{
		{"already expired", credFunc(func() azcore.AccessToken {
			return azcore.AccessToken{Token: mint(map[string]any{"oid": testOID}), ExpiresOn: time.Now().Add(-time.Second)}
		}), "", ErrExpiredToken},
		{"no oid", &fakeCred{life: time.Hour, noOID: true}, "", ErrNoUsername},
		{"no oid but Username set", &fakeCred{life: time.Hour, noOID: true}, "me", nil},
		{"not a JWT", credFunc(func() azcore.AccessToken {
			return azcore.AccessToken{Token: "opaque-secret-value", ExpiresOn: time.Now().Add(time.Hour)}
		}), "", jwtutil.ErrMalformed},
		{"opaque token with Username", credFunc(func() azcore.AccessToken {
			return azcore.AccessToken{Token: "opaque-secret-value", ExpiresOn: time.Now().Add(time.Hour)}
		}), "me", nil},
		{"empty token", credFunc(func() azcore.AccessToken {
			return azcore.AccessToken{ExpiresOn: time.Now().Add(time.Hour)}
		}), "", ErrTokenUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newTest(t, tc.cred, &Options{Username: tc.username})
			user, pass, err := p.CredentialsProviderContext(context.Background())
			if tc.want == nil {
				require.NoError(t, err)
				assert.Equal(t, tc.username, user)
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.ErrorIs(t, err, ErrTokenUnavailable)
			assert.Empty(t, pass)
			assert.NotContains(t, err.Error(), "opaque-secret-value")
		})
	}
}

type credFunc func() azcore.AccessToken

func (f credFunc) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return f(), nil
}

func TestCredentialCacheDoesNotCauseTightLoop(t *testing.T) {
	cred := &fakeCred{life: 2 * time.Second}
	var refreshed atomic.Int64
	// RefreshOffset 1.5 s of a 2 s life: once the credential keeps returning the same token, the
	// provider would spin without backoff.
	p := newTest(t, cred, &Options{RefreshOffset: time.Second, RefreshJitter: -1,
		Retry: retry.Policy{InitialBackoff: 200 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Jitter: -1},
		OnEvent: func(e Event) {
			if e.Kind == EventRefreshed {
				refreshed.Add(1)
			}
		}})
	require.NoError(t, p.Refresh(context.Background()))
	cred.set(func(f *fakeCred) { f.same = true })
	before := cred.calls.Load()
	time.Sleep(1500 * time.Millisecond) // observation window: counting calls, not synchronising
	calls := cred.calls.Load() - before
	assert.LessOrEqual(t, calls, int64(6), "credential calls in 1.5 s while it returns its cached token")
	assert.Equal(t, int64(1), refreshed.Load(), "an unchanged token must not be announced as new")
}

type recorder struct {
	next, errs atomic.Int64
	lastGen    atomic.Uint64
}

func (r *recorder) OnNext(c auth.Credentials) {
	r.next.Add(1)
	r.lastGen.Store(c.(*credentials).Generation())
}
func (r *recorder) OnError(error) { r.errs.Add(1) }

func TestSubscribe(t *testing.T) {
	cred := &fakeCred{life: time.Hour}
	p := newTest(t, cred, nil)
	r := &recorder{}
	c1, unsub1, err := p.Subscribe(r)
	require.NoError(t, err)
	_, unsub2, err := p.Subscribe(r) // same listener: no second subscription
	require.NoError(t, err)
	u, _ := c1.BasicAuth()
	assert.Equal(t, testOID, u)
	assert.NotContains(t, fmt.Sprint(c1), c1.(*credentials).password)

	before := r.next.Load()
	require.NoError(t, p.Refresh(context.Background()))
	assert.Equal(t, before+1, r.next.Load(), "OnNext once per refresh for a listener subscribed twice")
	assert.Equal(t, c1.(*credentials).Generation()+1, r.lastGen.Load())

	require.NoError(t, unsub2())
	require.NoError(t, unsub1()) // second call: a no-op
	require.NoError(t, p.Refresh(context.Background()))
	assert.Equal(t, before+1, r.next.Load(), "OnNext after unsubscribe")
}

func TestSubscribeOnErrorOnlyWhenTokenIsDead(t *testing.T) {
	cred := &fakeCred{life: time.Second}
	p := newTest(t, cred, nil)
	r := &recorder{}
	_, unsub, err := p.Subscribe(r)
	require.NoError(t, err)
	defer unsub()
	cred.set(func(f *fakeCred) { f.err = errors.New("idp down") })
	// Failures while the token lives must not reach go-redis's listener: it closes the connection.
	err = p.Refresh(context.Background())
	require.Error(t, err)
	assert.Zero(t, r.errs.Load())
	require.Eventually(t, func() bool { return r.errs.Load() > 0 }, 5*time.Second, 5*time.Millisecond)
	_, ok := p.Token()
	assert.False(t, ok)
}

func TestCloseStopsEverything(t *testing.T) {
	base := runtime.NumGoroutine()
	cred := &fakeCred{life: 300 * time.Millisecond}
	p, err := New(cred, &Options{Retry: fastRetry})
	require.NoError(t, err)
	require.NoError(t, p.Refresh(context.Background()))
	_, _, err = p.Subscribe(&recorder{})
	require.NoError(t, err)
	// Let the background loop run and fail for a while.
	cred.set(func(f *fakeCred) { f.err = errors.New("down") })
	require.Eventually(t, func() bool { _, ok := p.Token(); return !ok }, 5*time.Second, 5*time.Millisecond)

	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "Close is idempotent")
	_, _, err = p.CredentialsProviderContext(context.Background())
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, p.Refresh(context.Background()), ErrClosed)
	_, _, err = p.Subscribe(&recorder{})
	assert.ErrorIs(t, err, ErrClosed)
	testutil.WaitGoroutines(t, base)
}

func TestCloseEndsFetchInFlight(t *testing.T) {
	base := runtime.NumGoroutine()
	cred := &fakeCred{life: time.Hour, gate: make(chan struct{})} // never opens: only ctx ends it
	p, err := New(cred, nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { _, _, err := p.CredentialsProviderContext(context.Background()); done <- err }()
	require.Eventually(t, func() bool { return cred.calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	require.NoError(t, p.Close())
	select {
	case err := <-done:
		assert.ErrorIs(t, err, ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("caller still blocked after Close")
	}
	testutil.WaitGoroutines(t, base)
}

func TestNoTokenInLogsEventsOrErrors(t *testing.T) {
	var buf testutil.SyncBuffer
	var mu sync.Mutex
	var events []string
	cred := &fakeCred{life: time.Second}
	p := newTest(t, cred, &Options{
		Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnEvent: func(e Event) {
			mu.Lock()
			events = append(events, fmt.Sprintf("%+v %v", e, e.Err))
			mu.Unlock()
		},
	})
	var errs []string
	_, _, err := p.CredentialsProviderContext(context.Background())
	require.NoError(t, err)
	cred.set(func(f *fakeCred) { f.err = errors.New("down") })
	require.Eventually(t, func() bool { _, ok := p.Token(); return !ok }, 5*time.Second, 5*time.Millisecond)
	_, _, err = p.CredentialsProviderContext(context.Background())
	require.Error(t, err)
	errs = append(errs, err.Error())
	cred.set(func(f *fakeCred) { f.err = nil })
	require.Eventually(t, func() bool { return p.Refresh(context.Background()) == nil }, 5*time.Second, 10*time.Millisecond)

	mu.Lock()
	all := buf.String() + strings.Join(events, "\n") + strings.Join(errs, "\n")
	mu.Unlock()
	require.NotEmpty(t, buf.String(), "the logger was not used")
	for _, tok := range cred.issued() {
		for _, seg := range strings.Split(tok, ".") {
			assert.False(t, strings.Contains(all, seg), "a token segment reached a log line, event or error")
		}
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	p := newTest(t, &fakeCred{life: time.Hour}, nil)
	_, _, err := p.CredentialsProviderContext(context.Background())
	require.NoError(t, err)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() { _, _, _ = p.CredentialsProviderContext(ctx) })
	assert.Zero(t, allocs)
}

// BenchmarkCredentialsProviderContext: the warm path, one atomic load.
func BenchmarkCredentialsProviderContext(b *testing.B) {
	p, err := New(&fakeCred{life: time.Hour}, nil)
	require.NoError(b, err)
	defer p.Close()
	ctx := context.Background()
	_, _, err = p.CredentialsProviderContext(ctx)
	require.NoError(b, err)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _, _ = p.CredentialsProviderContext(ctx)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, _, _ = p.CredentialsProviderContext(ctx)
			}
		})
	})
}

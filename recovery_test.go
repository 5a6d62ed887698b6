package entraredis

import (
	"context"
	"crypto/rand"
	"crypto/tls"
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

// miRig is the real ManagedIdentityCredential (its own cache: a 1-hour token is handed back on
// every call, as in production) on entratest's managed-identity endpoint, entratest's TLS gateway
// in front of a real redis-server, and a client made by NewClient.
type miRig struct {
	iss  *entratest.Issuer
	gw   *entratest.Gateway
	cred *callCounter
	p    *provider.Provider
	h    *hook.Hook
	rdb  *redis.Client
	tls  *tls.Config // the client's
	base int
}

func newMIRig(t *testing.T, life time.Duration, gwo *entratest.GatewayOptions, hopts *hook.Options) *miRig {
	t.Helper()
	k, err := acltest.Key()
	require.NoError(t, err)
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: life, Key: k})
	require.NoError(t, err)
	iss.SetManagedIdentityEnv(t)
	// A user-assigned identity of its own: MSAL's managed-identity cache is process-wide, and a
	// system-assigned identity's token cached by another test (of another lifetime) would be
	// handed back here.
	cid := newUUID(t)
	iss.AddManagedIdentity(entratest.ManagedIdentity{ClientID: cid, ObjectID: iss.ObjectID()})
	mi, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ID:            azidentity.ClientID(cid),
		ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}},
	})
	require.NoError(t, err)
	ca, err := entratest.NewTestCA()
	require.NoError(t, err)
	srvTLS, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	srv := entratest.StartRedis(t, nil)
	if gwo == nil {
		gwo = &entratest.GatewayOptions{}
	}
	gwo.TLS = srvTLS
	gw := entratest.StartGateway(t, iss, srv.Addr(), gwo)
	r := &miRig{iss: iss, gw: gw, cred: &callCounter{TokenCredential: mi}, base: runtime.NumGoroutine()}
	r.p, err = provider.New(r.cred, nil)
	require.NoError(t, err)
	r.h = hook.New(r.p, hopts)
	r.tls = ca.ClientTLSConfig()
	r.rdb = NewClient(r.h, &redis.Options{Addr: gw.Addr(), TLSConfig: r.tls})
	return r
}

func (r *miRig) close(t *testing.T) {
	t.Helper()
	require.NoError(t, r.rdb.Close())
	require.NoError(t, r.h.Close())
	require.NoError(t, r.p.Close())
	require.NoError(t, r.iss.Close())
	require.NoError(t, r.gw.Close())
	testutil.WaitGoroutines(t, r.base)
}

// workers runs n goroutines sending INCR with context.Background() (10 ms apart) until stop, and
// records, per goroutine, the time of its last success and of its first success after a mark.
type workers struct {
	n       int
	stop    atomic.Bool
	wg      sync.WaitGroup
	mark    atomic.Int64   // unix ns; 0: none yet
	after   []atomic.Int64 // per goroutine: first success at or after mark (unix ns)
	oks     atomic.Int64
	fails   atomic.Int64
	lastErr atomic.Value
}

func startWorkers(rdb *redis.Client, n int, key string) *workers {
	w := &workers{n: n, after: make([]atomic.Int64, n)}
	for i := range n {
		w.wg.Go(func() {
			for !w.stop.Load() {
				err := rdb.Incr(context.Background(), key).Err()
				if err == nil {
					w.oks.Add(1)
					if m := w.mark.Load(); m != 0 {
						w.after[i].CompareAndSwap(0, time.Now().UnixNano())
					}
				} else {
					w.fails.Add(1)
					w.lastErr.Store(err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	return w
}

// recovered returns how many goroutines have succeeded since the mark, and the time from the
// mark to the last of them.
func (w *workers) recovered() (int, time.Duration) {
	m := w.mark.Load()
	var n int
	var last int64
	for i := range w.after {
		if a := w.after[i].Load(); a != 0 {
			n++
			last = max(last, a)
		}
	}
	if n == 0 {
		return 0, 0
	}
	return n, time.Duration(last - m)
}

func (w *workers) halt() {
	w.stop.Store(true)
	w.wg.Wait()
}

// TestRefusalRecovers: a valid identity refused for a while, then accepted, with the real
// ManagedIdentityCredential and 1-hour tokens (its cache hands back the same token on every call,
// as in production: no refresh can bring a different one), 8 goroutines sending INCR:
//   - a late access policy: the gateway refuses the oid for the first 3 s, then accepts it (the
//     policy became effective; the server checks the oid, so the same token is now accepted);
//   - a transient refusal: 2 s of work, then the gateway drops every connection and refuses the
//     oid for 3 s, then accepts it again (a failover whose new primary refuses for a moment).
//
// Measured while refused: credential calls/s, dials/s (hook) and connections/s (gateway); then the
// time from the gateway accepting again to every goroutine's first success, which must be under
// 10 s (the hook re-checks the blocked token at growing intervals, at most about 15 s apart, and
// the first acceptance lifts the block for every command). Then the counter equals the
// acknowledged INCRs.
func TestRefusalRecovers(t *testing.T) {
	testutil.Slow(t)
	const n = 8
	other := "11111111-2222-3333-4444-555555555555"
	tests := []struct {
		name    string
		before  time.Duration // of work before the refusal; 0: refused from the start
		refused time.Duration
		plain   bool // for comparison: plain go-redis with the provider's CredentialsProviderContext, no hook (figures only)
	}{
		{"late access policy", 0, 3 * time.Second, false},
		{"transient refusal after work, connections dropped", 2 * time.Second, 3 * time.Second, false},
		{"late access policy, plain go-redis", 0, 3 * time.Second, true},
		{"transient refusal after work, connections dropped, plain go-redis", 2 * time.Second, 3 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gwo := &entratest.GatewayOptions{}
			if tt.before == 0 {
				gwo.Users = []string{other}
			}
			r := newMIRig(t, time.Hour, gwo, nil)
			if tt.plain {
				require.NoError(t, r.rdb.Close())
				r.rdb = redis.NewClient(&redis.Options{Addr: r.gw.Addr(), TLSConfig: r.tls, CredentialsProviderContext: r.p.CredentialsProviderContext})
			}
			key := "recover"
			w := startWorkers(r.rdb, n, key)
			if tt.before > 0 {
				time.Sleep(tt.before) // work: counting, not synchronising
				require.Positive(t, w.oks.Load(), "INCRs before the refusal")
				r.gw.SetUsers(other)
				r.gw.DropConnections()
			}
			calls0, dials0, conns0, fails0 := r.cred.calls.Load(), r.h.Stats().Dials, r.gw.Stats().Connections, w.fails.Load()
			t0 := time.Now()
			time.Sleep(tt.refused)
			secs := time.Since(t0).Seconds()
			calls, dials, conns := r.cred.calls.Load()-calls0, r.h.Stats().Dials-dials0, r.gw.Stats().Connections-conns0
			failed := w.fails.Load() - fails0
			refusedErr, _ := w.lastErr.Load().(error)
			w.mark.Store(time.Now().UnixNano())
			r.gw.AllowAllUsers()
			all := waitFor(10*time.Second, func() bool { k, _ := w.recovered(); return k == n })
			got, took := w.recovered()
			w.halt()
			t.Logf("%s: while refused (%.1f s): %.2f credential calls/s, %.1f dials/s (hook), %.1f connections/s (gateway), %d INCR failed; after the cache accepts: %d of %d goroutines succeeded, the last %v later; error while refused: %v",
				tt.name, secs, float64(calls)/secs, float64(dials)/secs, float64(conns)/secs, failed, got, n, took.Round(time.Millisecond), refusedErr)
			require.True(t, all, "%d of %d goroutines succeeded within 10 s of the cache accepting", got, n)
			if !tt.plain {
				require.ErrorIs(t, refusedErr, hook.ErrTokenRefused)
				assert.LessOrEqual(t, float64(calls)/secs, 3.0, "credential calls per second while refused")
				assert.LessOrEqual(t, float64(conns)/secs, 8.0, "connections per second while refused")
			}
			v, err := r.rdb.Get(context.Background(), key).Int64()
			require.NoError(t, err)
			// Dropping the connections may cut the replies of INCRs in flight (applied, not
			// acknowledged): at most one per goroutine.
			assert.GreaterOrEqual(t, v, w.oks.Load(), "INCRs applied vs acknowledged")
			assert.LessOrEqual(t, v, w.oks.Load()+n, "INCRs applied vs acknowledged")
			r.close(t)
		})
	}
}

// TestOutageEndingBeforeExpiry: the identity endpoint fails (HTTP 500) for 1.5 s and is back 0.5 s
// before the first token (3 s) expires; 16 goroutines send INCR with context.Background(). No
// INCR fails: a command that finds no valid token while the provider's next paced attempt is due
// within its wait (the client's DialTimeout, 5 s) waits for that attempt, which succeeds.
func TestOutageEndingBeforeExpiry(t *testing.T) {
	testutil.Slow(t)
	const n = 16
	var gaveUp atomic.Int64 // failures after the hook's retries (the others failed before go-redis)
	r := newMIRig(t, 3*time.Second, nil, &hook.Options{OnEvent: func(e hook.Event) {
		if e.Kind == hook.EventGaveUp {
			gaveUp.Add(1)
		}
	}})
	key := "outage-before-expiry"
	require.NoError(t, r.rdb.Set(context.Background(), key, 0, 0).Err())
	info, ok := r.p.Token()
	require.True(t, ok)
	w := startWorkers(r.rdb, n, key)
	// The outage: from 2 s before the expiry to 0.5 s before it.
	time.Sleep(time.Until(info.ExpiresOn.Add(-2 * time.Second)))
	r.iss.FailFor(1500*time.Millisecond, http.StatusInternalServerError)
	require.True(t, waitFor(10*time.Second, func() bool {
		cur, ok := r.p.Token()
		return ok && cur.Generation > info.Generation && time.Now().After(info.ExpiresOn.Add(time.Second))
	}), "no new token after the outage")
	w.halt()
	err, _ := w.lastErr.Load().(error)
	t.Logf("%d goroutines, an outage of 1.5 s ending 0.5 s before expiry (3 s tokens): %d of %d INCR failed (%d after retries); last error: %v",
		n, w.fails.Load(), w.fails.Load()+w.oks.Load(), gaveUp.Load(), err)
	assert.Zero(t, w.fails.Load(), "INCRs failed")
	if err != nil {
		assert.True(t, errors.Is(err, provider.ErrTokenUnavailable), "error: %v", err)
	}
	v, err := r.rdb.Get(context.Background(), key).Int64()
	require.NoError(t, err)
	assert.Equal(t, w.oks.Load(), v, "INCRs applied vs acknowledged")
	r.close(t)
}

func newUUID(t *testing.T) string {
	t.Helper()
	var b [16]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// TestRevokedTwice: entratest's CachedCredential (the same token on every call, as azidentity)
// with 1-hour tokens, 4 goroutines sending INCR through NewClient to the TLS gateway. The gateway
// revokes the current token (refuses it and drops the connections) while the credential has a
// new one, twice in a row. Each revocation gets a refresh and a resend: every goroutine succeeds
// again within 5 s, and no INCR fails with hook.ErrTokenRefused (before this issue, the second
// revocation blocked the token brought by the first).
func TestRevokedTwice(t *testing.T) {
	testutil.Slow(t)
	const n = 4
	k, err := acltest.Key()
	require.NoError(t, err)
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: time.Hour, Key: k})
	require.NoError(t, err)
	cred := entratest.NewCachedCredential(iss, 0)
	ca, err := entratest.NewTestCA()
	require.NoError(t, err)
	srvTLS, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	gw := entratest.StartGateway(t, iss, entratest.StartRedis(t, nil).Addr(), &entratest.GatewayOptions{TLS: srvTLS})
	base := runtime.NumGoroutine()
	p, err := provider.New(cred, nil)
	require.NoError(t, err)
	h := hook.New(p, nil)
	rdb := NewClient(h, &redis.Options{Addr: gw.Addr(), TLSConfig: ca.ClientTLSConfig()})
	ctx := context.Background()
	w := startWorkers(rdb, n, "revoked")
	require.True(t, waitFor(5*time.Second, func() bool { return w.oks.Load() > 0 }), "no INCR before the revocations")
	for i := range 2 {
		_, tok, err := p.CredentialsProviderContext(ctx)
		require.NoError(t, err)
		cred.Forget() // the credential has a new token by then
		w.mark.Store(time.Now().UnixNano())
		for j := range w.after {
			w.after[j].Store(0)
		}
		dropped := gw.Revoke(tok)
		all := waitFor(5*time.Second, func() bool { k, _ := w.recovered(); return k == n })
		got, took := w.recovered()
		t.Logf("revocation %d (%d connections dropped): %d of %d goroutines succeeded again, the last %v later; %d INCR failed so far",
			i+1, dropped, got, n, took.Round(time.Millisecond), w.fails.Load())
		require.True(t, all, "revocation %d: %d of %d goroutines succeeded again within 5 s", i+1, got, n)
	}
	w.halt()
	if err, _ := w.lastErr.Load().(error); err != nil {
		assert.NotErrorIs(t, err, hook.ErrTokenRefused)
	}
	assert.False(t, h.Stats().Blocked)
	require.NoError(t, rdb.Close())
	require.NoError(t, h.Close())
	require.NoError(t, p.Close())
	require.NoError(t, iss.Close())
	require.NoError(t, gw.Close())
	testutil.WaitGoroutines(t, base)
}

package e2e_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/internal/canary"
)

// a. The real ManagedIdentityCredential, the provider, entraredis.NewClient, the gateway and
// redis-server: commands work, and the gateway accepted the username because it is the oid.
func TestManagedIdentityToRedis(t *testing.T) {
	r := newRig(t, rigOptions{lifetime: 2 * time.Minute})
	c := r.client(nil)
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "greeting", "hello", 0).Err())
	v, err := c.Get(ctx, "greeting").Result()
	require.NoError(t, err)
	assert.Equal(t, "hello", v)

	info, ok := r.p.Token()
	require.True(t, ok)
	assert.Equal(t, r.iss.ObjectID(), info.Username)
	st := r.gw.Stats()
	assert.Positive(t, st.AuthAccepted, "the gateway checks user == oid, signature, aud, exp")
	assert.Zero(t, st.AuthRefused)
	assert.Zero(t, st.NoAuth)
	assert.Equal(t, int64(1), r.iss.Stats().Served, "one token from the managed-identity endpoint")
}

// b. Rotation under load: 3 s tokens, 32 goroutines INCR their own counters; no error reaches a
// caller and every counter equals its acknowledged replies.
func TestRotationUnderLoad(t *testing.T) {
	d := 15 * time.Second
	if os.Getenv("ENTRAREDIS_SOAK") == "1" {
		d = 30 * time.Second
	} else if testing.Short() {
		d = 5 * time.Second
	}
	r := newRig(t, rigOptions{lifetime: 3 * time.Second})
	c := r.client(nil)
	require.NoError(t, c.Ping(context.Background()).Err())
	start := r.refreshed.Load()
	cn := canary.Start(t, r.iss, r.gw.Addr(), nil, 3*time.Second)

	l := startIncr(c, "b", 32, 5*time.Second, 0)
	time.Sleep(d) // the load runs for d: this is the measurement, not synchronisation
	l.Stop()
	acked, failed := l.total()
	rotations := r.refreshed.Load() - start
	late := cn.Wait(t)
	gs, hs := r.gw.Stats(), r.h.Stats()
	closed := gs.ExpiryCloses - 1 // but the canary's
	t.Logf("b: %s, 32 workers, 3 s tokens: %d INCRs acknowledged, %d errors, %d rotations; gateway: %d connections, %d closed at expiry (and an idle canary, %s after its expiry), %d AUTH accepted, %d refused; hook: %d retries (%d auth), %d connections retired",
		d, acked, failed, rotations, gs.Connections, closed, late.Round(time.Millisecond), gs.AuthAccepted, gs.AuthRefused, hs.Retries, hs.AuthRetries, hs.ConnsRetired)
	assert.Zero(t, failed, "errors reached callers: %v", l.errorTexts())
	assert.Zero(t, closed, "connections the gateway closed at expiry: every one in use is renewed in place")
	assert.GreaterOrEqual(t, rotations, int64(d/(4*time.Second)), "tokens rotated (each lives 3-4 s, refreshed at 50-75%)")
	l.checkCounters(t, c, "b", 0)
	noTokenIn(t, r.iss, l.errorTexts())
}

// c. Identity-provider outages: one shorter than the token's remaining life goes unnoticed; one
// past expiry fails commands with errors that name the cause, and the client recovers within 2 s of
// the identity provider coming back.
func TestIdentityProviderOutage(t *testing.T) {
	r := newRig(t, rigOptions{lifetime: 6 * time.Second})
	c := r.client(nil)
	require.NoError(t, c.Ping(context.Background()).Err())

	t.Run("shorter than the token's life", func(t *testing.T) {
		info, ok := r.p.Token() // the token PING fetched
		require.True(t, ok)
		// From just before the refresh is due until 1 s before the token expires: every refresh
		// attempt in between fails.
		closes := r.gw.Stats().ExpiryCloses
		cn := canary.Start(t, r.iss, r.gw.Addr(), nil, 2*time.Second)
		l := startIncr(c, "c1", 4, 3*time.Second, 10*time.Millisecond)
		time.Sleep(time.Until(info.RefreshAt.Add(-200 * time.Millisecond)))
		outage := time.Until(info.ExpiresOn.Add(-time.Second))
		failedBefore := r.iss.Stats().Failed
		r.iss.FailFor(outage, http.StatusServiceUnavailable)
		r.waitRefresh(15 * time.Second) // the first refresh after the outage
		time.Sleep(time.Second)         // and some traffic on the new token
		l.Stop()
		acked, failed := l.total()
		idpFailures := r.iss.Stats().Failed - failedBefore
		late := cn.Wait(t)
		closed := r.gw.Stats().ExpiryCloses - closes - 1 // but the canary's
		t.Logf("c1: outage %s ending 1 s before a 6 s token expired: %d INCRs, %d errors, %d token requests failed by the outage, %d closed at expiry (and an idle canary, %s after its expiry)",
			outage.Round(time.Millisecond), acked, failed, idpFailures, closed, late.Round(time.Millisecond))
		assert.Zero(t, failed, "errors: %v", l.errorTexts())
		assert.Zero(t, closed, "connections the gateway closed at expiry")
		assert.Positive(t, idpFailures, "the outage was hit")
		l.checkCounters(t, c, "c1", 0)
	})

	t.Run("past expiry", func(t *testing.T) {
		info, ok := r.p.Token() // the one fetched after the first outage
		require.True(t, ok)
		outage := time.Until(info.ExpiresOn.Add(2 * time.Second)) // 2 s without a valid token
		closes := r.gw.Stats().ExpiryCloses
		cn := canary.Start(t, r.iss, r.gw.Addr(), nil, 2*time.Second)
		r.iss.FailFor(outage, http.StatusServiceUnavailable)
		back := time.Now().Add(outage)
		l := startIncr(c, "c2", 4, time.Second, 50*time.Millisecond)
		time.Sleep(time.Until(back) + 3*time.Second) // the outage, then 3 s of recovery
		l.Stop()
		acked, failed := l.total()

		// Recovery: from the identity provider's return to each worker's first success after it.
		var worst time.Duration
		first := time.Duration(-1)
		for i := range l.oks {
			k, _ := slices.BinarySearchFunc(l.oks[i], back, func(a, b time.Time) int { return a.Compare(b) })
			require.Less(t, k, len(l.oks[i]), "worker %d never recovered", i)
			rec := max(l.oks[i][k].Sub(back), 0)
			worst = max(worst, rec)
			if first < 0 || rec < first {
				first = rec
			}
			for _, f := range l.fails[i] {
				assert.False(t, f.After(l.oks[i][k]), "worker %d failed after recovering", i)
			}
		}
		texts := l.errorTexts()
		late := cn.Wait(t)
		closed := r.gw.Stats().ExpiryCloses - closes - 1 // but the canary's
		t.Logf("c2: outage %s, 2 s past the token's expiry: %d INCRs, %d errors; recovery after the IdP came back: first success %s, all workers %s; %d connections closed at expiry (and an idle canary, %s after its expiry), %d retired by the hook; errors: %q",
			outage.Round(time.Millisecond), acked, failed, first.Round(time.Millisecond), worst.Round(time.Millisecond), closed, late.Round(time.Millisecond), r.h.Stats().ConnsRetired, texts)
		assert.Positive(t, failed, "commands failed past expiry")
		assert.Less(t, worst, 2*time.Second, "recovered within 2 s")
		for _, e := range texts {
			assert.True(t, strings.Contains(e, "503") || strings.Contains(e, "no valid token"), "the error names the cause: %s", e)
		}
		noTokenIn(t, r.iss, texts)
		l.checkCounters(t, c, "c2", 0)
	})
}

// d. redis-server restarts mid-run (append-only file, fsync always): the client recovers, and no
// acknowledged write is lost.
func TestRedisRestart(t *testing.T) {
	r := newRig(t, rigOptions{lifetime: 3 * time.Second, redisArgs: []string{"appendonly yes", "appendfsync always"}})
	c := r.client(nil)
	require.NoError(t, c.Ping(context.Background()).Err())
	l := startIncr(c, "d", 8, 2*time.Second, time.Millisecond)
	time.Sleep(2 * time.Second)
	restartStart := time.Now()
	r.srv.Restart(t)
	restarted := time.Now()
	time.Sleep(3 * time.Second)
	l.Stop()
	acked, failed := l.total()
	var worst time.Duration
	for i := range l.oks {
		k, _ := slices.BinarySearchFunc(l.oks[i], restarted, func(a, b time.Time) int { return a.Compare(b) })
		require.Less(t, k, len(l.oks[i]), "worker %d never recovered", i)
		worst = max(worst, l.oks[i][k].Sub(restarted))
	}
	// An INCR in flight when the server shut down ran, but its reply was lost with the connection;
	// go-redis's own retry (MaxRetries, default 3, retries EOF) then sent it again: it ran twice.
	// So a counter may exceed its acknowledged INCRs by up to go-redis's retries; none may be lost.
	twice := l.checkCounters(t, c, "d", 3)
	t.Logf("d: restart took %s; %d INCRs acknowledged, %d errors %q; every worker succeeded again within %s of the server's return; %d INCRs ran without an acknowledged success (in flight at the shutdown, sent again by go-redis)",
		restarted.Sub(restartStart).Round(time.Millisecond), acked, failed, l.errorTexts(), worst.Round(time.Millisecond), twice)
	assert.Less(t, worst, 2*time.Second)
}

// e. A 3-master cluster, each node behind a gateway, with rotation: no error.
func TestClusterRotation(t *testing.T) {
	r := newRig(t, rigOptions{lifetime: 3 * time.Second, noServer: true})
	cl := entratest.StartCluster(t, r.iss, nil)
	c := entraredis.NewClusterClient(r.h, &redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Ping(context.Background()).Err())
	start := r.refreshed.Load()
	cn := canary.Start(t, r.iss, cl.Addrs()[0], nil, 3*time.Second)
	l := startIncr(c, "e", 12, 5*time.Second, 0)
	time.Sleep(8 * time.Second)
	l.Stop()
	acked, failed := l.total()
	late := cn.Wait(t)
	st := cl.Stats()
	t.Logf("e: cluster of 3 behind gateways, 8 s, 3 s tokens: %d INCRs, %d errors, %d rotations; gateways: %d connections, %d closed at expiry (and an idle canary, %s after its expiry), %d AUTH accepted, %d refused; hook: %d connections retired",
		acked, failed, r.refreshed.Load()-start, st.Connections, st.ExpiryCloses-1, late.Round(time.Millisecond), st.AuthAccepted, st.AuthRefused, r.h.Stats().ConnsRetired)
	assert.Zero(t, failed, "errors: %v", l.errorTexts())
	for _, g := range cl.Gateways() {
		assert.Positive(t, g.Stats().AuthAccepted, "node behind %s used", g.Addr())
	}
	l.checkCounters(t, c, "e", 0)
}

// f. Pub/sub across 3 rotations: the subscriber keeps receiving; messages lost per rotation.
func TestPubSubAcrossRotations(t *testing.T) {
	for _, proto := range []int{3, 2} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			r := newRig(t, rigOptions{lifetime: 3 * time.Second})
			sub := r.client(&redis.Options{Protocol: proto})
			pub := r.client(&redis.Options{Protocol: proto})
			ctx := context.Background()
			ps := sub.Subscribe(ctx, "f")
			t.Cleanup(func() { _ = ps.Close() })
			_, err := ps.Receive(ctx)
			require.NoError(t, err)
			ch := ps.Channel()

			var received atomic.Int64
			var lastSeen atomic.Int64
			recvDone := make(chan struct{})
			go func() {
				defer close(recvDone)
				for m := range ch {
					received.Add(1)
					var n int64
					_, _ = fmt.Sscan(m.Payload, &n)
					lastSeen.Store(n)
				}
			}()

			start := r.refreshed.Load()
			cn := canary.Start(t, r.iss, r.gw.Addr(), nil, 3*time.Second)
			var published, unheard, pubErrs int64
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			deadline := time.Now().Add(20 * time.Second)
			var thirdAt time.Time
			for thirdAt.IsZero() || time.Since(thirdAt) < time.Second {
				if thirdAt.IsZero() && r.refreshed.Load()-start >= 3 {
					thirdAt = time.Now()
				}
				require.True(t, time.Now().Before(deadline), "3 rotations did not happen in 20 s")
				<-tick.C
				published++
				n, err := pub.Publish(ctx, "f", fmt.Sprint(published)).Result()
				switch {
				case err != nil:
					pubErrs++
				case n == 0:
					unheard++ // no subscriber at that moment: the subscriber was reconnecting
				}
			}
			// The subscriber still receives after the rotations: a last message arrives.
			published++
			require.NoError(t, pub.Publish(ctx, "f", fmt.Sprint(published)).Err())
			require.Eventually(t, func() bool { return lastSeen.Load() == published }, 3*time.Second, 10*time.Millisecond,
				"the subscriber stopped receiving")
			rotations := r.refreshed.Load() - start
			lost := published - pubErrs - received.Load()
			hs := r.h.Stats()
			late := cn.Wait(t)
			closed := r.gw.Stats().ExpiryCloses - 1 // but the canary's
			t.Logf("f: RESP%d, %d rotations: %d published (%d publish errors), %d received, %d lost (%.1f per rotation), %d published while no subscriber; gateway closed %d at expiry (and an idle canary, %s after its expiry); hook: %d pub/sub re-AUTH in place, %d moved, %d move failures, %d pub/sub reconnects; %d renewed in place (%d idle), %d refused, %d retired, %d dials",
				proto, rotations, published, pubErrs, received.Load(), lost, float64(lost)/float64(rotations), unheard, closed, late.Round(time.Millisecond), hs.PubSubReauths, hs.PubSubMoved, hs.PubSubMoveFailures, hs.PubSubClosed,
				hs.Reauths, hs.IdleReauths, hs.ReauthFailures, hs.ConnsRetired, hs.Dials)
			assert.Zero(t, pubErrs)
			// The subscriber is renewed in place (RESP3) or reconnected before its token expires
			// (RESP2); the publisher is renewed at each request: the gateway closes none of them.
			assert.Zero(t, closed, "connections the gateway closed at expiry")
			require.NoError(t, ps.Close())
			<-recvDone
		})
	}
}

// g. A TLS gateway with a test CA: works with the right RootCAs, fails clearly without.
func TestTLS(t *testing.T) {
	ca, err := entratest.NewTestCA()
	require.NoError(t, err)
	srvCfg, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	r := newRig(t, rigOptions{lifetime: 2 * time.Minute, gateway: &entratest.GatewayOptions{TLS: srvCfg}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ok := r.client(&redis.Options{TLSConfig: ca.ClientTLSConfig()})
	require.NoError(t, ok.Set(ctx, "k", "v", 0).Err())
	assert.Equal(t, "v", ok.Get(ctx, "k").Val())

	bad := r.client(&redis.Options{TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}, MaxRetries: -1})
	err = bad.Ping(ctx).Err()
	require.Error(t, err)
	var ua x509.UnknownAuthorityError
	assert.True(t, errors.As(err, &ua) || strings.Contains(err.Error(), "certificate signed by unknown authority"), "clear error: %v", err)
	t.Logf("g: without the CA: %v", err)
}

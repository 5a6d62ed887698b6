package rueidisentra

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/provider"
)

// The proofs run the real ManagedIdentityCredential against entratest's managed-identity endpoint,
// and rueidis over TLS against entratest's Entra gateway (it closes a connection when its token
// expires) in front of a real redis-server, with tokens living a few seconds.

var testKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// counter counts the calls to the credential it wraps.
type counter struct {
	azcore.TokenCredential
	calls atomic.Int64
}

func (c *counter) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.calls.Add(1)
	return c.TokenCredential.GetToken(ctx, o)
}

type env struct {
	iss  *entratest.Issuer
	ca   *entratest.TestCA
	srv  *entratest.RedisServer
	gw   *entratest.Gateway
	cred *counter
	p    *provider.Provider
}

// start runs an issuer minting tokens of the given life, its managed-identity endpoint, a
// redis-server and a TLS gateway (closing connections idle for idle[0], when given), and a provider
// on the real managed-identity credential.
func start(t *testing.T, life time.Duration, idle ...time.Duration) *env {
	t.Helper()
	k, err := testKey()
	require.NoError(t, err)
	e := &env{}
	e.iss, err = entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: life, Key: k})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.iss.Close() })
	e.iss.SetManagedIdentityEnv(t)
	// No azidentity retries: one credential call is one HTTP request.
	mi, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}},
	})
	require.NoError(t, err)
	e.cred = &counter{TokenCredential: mi}
	e.ca, err = entratest.NewTestCA()
	require.NoError(t, err)
	srvTLS, err := e.ca.ServerTLSConfig()
	require.NoError(t, err)
	e.srv = entratest.StartRedis(t, nil)
	gwo := &entratest.GatewayOptions{TLS: srvTLS}
	if len(idle) > 0 {
		gwo.IdleTimeout = idle[0]
	}
	e.gw = entratest.StartGateway(t, e.iss, e.srv.Addr(), gwo)
	e.p, err = provider.New(e.cred, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.p.Close() })
	return e
}

// client returns NewClient on the gateway (or addrs), closed at cleanup.
func (e *env) client(t *testing.T, opt rueidis.ClientOption, addrs ...string) rueidis.Client {
	t.Helper()
	if len(addrs) == 0 {
		addrs = []string{e.gw.Addr()}
	}
	opt.InitAddress = addrs
	opt.TLSConfig = e.ca.ClientTLSConfig()
	c, err := NewClient(e.p, opt)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// passExpiries waits until n tokens of the provider, one after the other, have expired: every
// connection has lived through n expiries.
func passExpiries(t *testing.T, p *provider.Provider, n int) {
	t.Helper()
	for range n {
		var info provider.TokenInfo
		require.Eventually(t, func() (ok bool) { info, ok = p.Token(); return ok }, 5*time.Second, 10*time.Millisecond)
		time.Sleep(time.Until(info.ExpiresOn.Add(200 * time.Millisecond))) // a wall-clock event: the expiry
	}
}

// load runs INCR on keys from workers goroutines until stop, counting acknowledged replies per key.
type load struct {
	keys  []string
	acked []atomic.Int64
	errs  atomic.Int64
	other atomic.Int64 // errors not wrapping provider.ErrTokenUnavailable
	mu    sync.Mutex
	first error
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startLoad(c rueidis.Client, workers int, keys ...string) *load {
	l := &load{keys: keys, acked: make([]atomic.Int64, len(keys)), stop: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := w; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				k := i % len(keys)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := c.Do(ctx, c.B().Incr().Key(keys[k]).Build()).Error()
				cancel()
				if err != nil {
					l.fail(err)
					continue
				}
				l.acked[k].Add(1)
			}
		}()
	}
	return l
}

func (l *load) fail(err error) {
	l.errs.Add(1)
	if !errors.Is(err, provider.ErrTokenUnavailable) {
		l.other.Add(1)
	}
	l.mu.Lock()
	if l.first == nil {
		l.first = err
	}
	l.mu.Unlock()
}

func (l *load) end() { close(l.stop); l.wg.Wait() }

func (l *load) total() (n int64) {
	for i := range l.acked {
		n += l.acked[i].Load()
	}
	return n
}

// check compares each key's counter in redis with its acknowledged INCRs.
func (l *load) check(t *testing.T, c rueidis.Client) {
	t.Helper()
	for i, k := range l.keys {
		v, err := c.Do(context.Background(), c.B().Get().Key(k).Build()).AsInt64()
		require.NoError(t, err)
		assert.Equal(t, l.acked[i].Load(), v, "key %s: counter vs acknowledged INCRs", k)
	}
}

// TestINCRThroughRotations: 16 goroutines send INCR through 4 token expiries (3 s tokens): no
// connection is closed at expiry, no command fails, no connection is dialled after the first
// ones, each counter equals its acknowledged replies, and no goroutine is left after Close.
func TestINCRThroughRotations(t *testing.T) {
	base := runtime.NumGoroutine()
	e := start(t, 3*time.Second)
	c := e.client(t, rueidis.ClientOption{})
	require.NoError(t, c.Do(context.Background(), c.B().Ping().Build()).Error())
	l := startLoad(c, 16, "r:a", "r:b", "r:c", "r:d")
	require.Eventually(t, func() bool { return l.total() > 100 }, 5*time.Second, 10*time.Millisecond)
	dialled := e.gw.Stats().Connections
	calls := e.cred.calls.Load()
	passExpiries(t, e.p, 4)
	l.end()
	st := e.gw.Stats()
	t.Logf("INCR acknowledged: %d; errors: %d; connections: %d, of which dialled during the rotations: %d; expiry closes: %d; credential calls during: %d; AUTH accepted: %d",
		l.total(), l.errs.Load(), st.Connections, st.Connections-dialled, st.ExpiryCloses, e.cred.calls.Load()-calls, st.AuthAccepted)
	assert.Zero(t, st.ExpiryCloses, "connections closed at token expiry")
	assert.Zero(t, l.errs.Load(), "errors (first: %v)", l.first)
	assert.Equal(t, dialled, st.Connections, "redials during the rotations")
	l.check(t, c)
	assert.LessOrEqual(t, e.cred.calls.Load()-calls, int64(8), "credential calls: about one per token")

	c.Close()
	require.NoError(t, e.p.Close())
	e.gw.Close()
	e.srv.Close()
	e.iss.Close()
	waitGoroutines(t, base)
}

// firstLine is an error's first line (azidentity's run over several).
func firstLine(err error) string {
	if err == nil {
		return "<nil>"
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// waitGoroutines waits, with a deadline, until no more goroutines run than base (not
// require.Eventually: it runs goroutines of its own).
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > base; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
	}
}

// TestIdleThroughExpiries: connections with nothing to send (the pipeline's, one of the pool
// for blocking commands, and a dedicated one held by the caller) live through 3 expiries (2 s
// tokens) behind a gateway that also closes connections idle for 3 s, as Azure does after 10
// minutes: rueidis's timer sends each the next token (also while checked out as dedicated), and
// its background PING (after 1-2 Dialer.KeepAlive of silence: 1-2 s by default) keeps them alive,
// so none is closed and the next commands need no dial.
func TestIdleThroughExpiries(t *testing.T) {
	e := start(t, 2*time.Second, 3*time.Second)
	c := e.client(t, rueidis.ClientOption{})
	ctx := context.Background()
	require.NoError(t, c.Do(ctx, c.B().Ping().Build()).Error())
	require.True(t, rueidis.IsRedisNil(c.Do(ctx, c.B().Blpop().Key("idle").Timeout(0.01).Build()).Error()))
	d, release := c.Dedicate()
	defer release()
	require.NoError(t, d.Do(ctx, d.B().Ping().Build()).Error())
	dialled := e.gw.Stats().Connections
	passExpiries(t, e.p, 3)
	st := e.gw.Stats()
	require.NoError(t, c.Do(ctx, c.B().Ping().Build()).Error())
	require.NoError(t, d.Do(ctx, d.B().Ping().Build()).Error())
	st = e.gw.Stats()
	t.Logf("connections: %d (open %d); expiry closes: %d; idle closes: %d; AUTH accepted: %d", st.Connections, st.Active, st.ExpiryCloses, st.IdleCloses, st.AuthAccepted)
	assert.Zero(t, st.ExpiryCloses)
	assert.Zero(t, st.IdleCloses)
	assert.Equal(t, dialled, st.Connections, "redials")
}

// TestPubSubRESP3: a subscriber on a RESP3 connection (rueidis's default) receives every message
// published (10 pipelined every 10 ms) through 3 expiries (3 s tokens): the AUTH goes between the
// messages.
func TestPubSubRESP3(t *testing.T) {
	e := start(t, 3*time.Second)
	c := e.client(t, rueidis.ClientOption{})
	sent, got, twice, closes, err := pubsub(t, e, c, 3, 10)
	t.Logf("RESP3 pub/sub: published %d, received %d, %d twice; expiry closes: %d; Receive error: %v", sent, got, twice, closes, err)
	assert.Equal(t, sent, got, "messages lost")
	assert.Zero(t, twice)
	assert.Zero(t, closes)
	assert.NoError(t, err)
}

// pubsub runs a subscriber and a publisher through n expiries, burst messages pipelined every 10
// ms (so that some are in flight at any moment); it returns the messages the server acknowledged,
// those of them received (distinct), those received twice, the expiry closes, and Receive's error.
func pubsub(t *testing.T, e *env, c rueidis.Client, n, burst int) (sent, got, twice, closes int64, rerr error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	seen := map[int64]bool{}
	var dups int64
	// What PUBLISH answered for each acknowledged message (the subscribers the server gave it to),
	// for a loss's report; written by the publisher, read once it has stopped.
	type published struct {
		at        time.Duration
		receivers int64
	}
	acked := map[int64]published{}
	count := func() (got, twice int64) {
		mu.Lock()
		defer mu.Unlock()
		for i := range acked {
			if seen[i] {
				got++
			}
		}
		return got, dups
	}
	subscribed := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- c.Receive(ctx, c.B().Subscribe().Channel("ch").Build(), func(m rueidis.PubSubMessage) {
			if m.Message == "ready" {
				select {
				case <-subscribed:
				default:
					close(subscribed)
				}
				return
			}
			i, _ := strconv.ParseInt(m.Message, 10, 64)
			mu.Lock()
			defer mu.Unlock()
			if seen[i] {
				dups++ // published during a move: from both connections
			}
			seen[i] = true
		})
	}()
	// Publish "ready" until the subscriber hears it.
	require.Eventually(t, func() bool {
		_ = c.Do(ctx, c.B().Publish().Channel("ch").Message("ready").Build()).Error()
		select {
		case <-subscribed:
			return true
		default:
			return false
		}
	}, 5*time.Second, 20*time.Millisecond)
	before := e.gw.Stats().ExpiryCloses
	stop := make(chan struct{})
	t0 := time.Now()
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for next := int64(0); ; {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			at := time.Since(t0)
			cmds := make(rueidis.Commands, burst)
			for j := range cmds {
				cmds[j] = c.B().Publish().Channel("ch").Message(strconv.FormatInt(next+int64(j), 10)).Build()
			}
			for j, r := range c.DoMulti(ctx, cmds...) {
				if n, err := r.AsInt64(); err == nil {
					mu.Lock()
					acked[next+int64(j)] = published{at, n}
					mu.Unlock()
				}
			}
			next += int64(burst)
		}
	}()
	passExpiries(t, e.p, n)
	close(stop)
	<-pubDone
	mu.Lock()
	sent = int64(len(acked))
	mu.Unlock()
	// Every published message is delivered before a later reply on the same server: wait for the
	// last one, or the deadline.
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if n, _ := count(); n >= sent {
			break
		}
	}
	closes = e.gw.Stats().ExpiryCloses - before
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			rerr = err
		}
	case <-time.After(5 * time.Second):
		rerr = errors.New("Receive did not return after cancel")
	}
	got, twice = count()
	mu.Lock()
	for i, p := range acked {
		if !seen[i] {
			t.Logf("message %d lost: published at %v to %d subscribers", i, p.at.Round(time.Millisecond), p.receivers)
		}
	}
	mu.Unlock()
	return sent, got, twice, closes, rerr
}

// TestClientSideCaching: with client-side caching on (rueidis's default), reads served from the
// local cache stay consistent through 3 expiries (3 s tokens): the tracking connection is
// renewed in place, so no invalidation is missed and no cached value outlives a write.
func TestClientSideCaching(t *testing.T) {
	e := start(t, 3*time.Second)
	c := e.client(t, rueidis.ClientOption{})
	ctx := context.Background()
	require.NoError(t, c.Do(ctx, c.B().Set().Key("cached").Value("0").Build()).Error())
	// rueidis may open a second connection of its pipeline pool on the way: count closes, not dials.
	closed := func() int64 { st := e.gw.Stats(); return st.Connections - st.Active }
	var hits, reads, stale int64
	deadline := make(chan struct{})
	go func() { passExpiries(t, e.p, 3); close(deadline) }()
	for i := 1; ; i++ {
		select {
		case <-deadline:
			goto done
		default:
		}
		// Read through the cache a few times, then write: the next read must see the write.
		for range 5 {
			r := c.DoCache(ctx, c.B().Get().Key("cached").Cache(), time.Minute)
			v, err := r.ToString()
			require.NoError(t, err)
			reads++
			if r.IsCacheHit() {
				hits++
			}
			if v != strconv.Itoa(i-1) {
				stale++
			}
		}
		require.NoError(t, c.Do(ctx, c.B().Set().Key("cached").Value(strconv.Itoa(i)).Build()).Error())
		// The invalidation is a push on the tracking connection: it arrives right after the write's
		// reply; wait for it as a reader would (a read after it sees the new value).
		require.Eventually(t, func() bool {
			v, err := c.DoCache(ctx, c.B().Get().Key("cached").Cache(), time.Minute).ToString()
			return err == nil && v == strconv.Itoa(i)
		}, 2*time.Second, time.Millisecond)
	}
done:
	st := e.gw.Stats()
	t.Logf("cached reads: %d, cache hits: %d, stale reads: %d; expiry closes: %d; connections: %d, closed: %d", reads, hits, stale, st.ExpiryCloses, st.Connections, closed())
	assert.Zero(t, st.ExpiryCloses)
	assert.Zero(t, stale)
	assert.Greater(t, hits, reads/2, "the cache serves most reads")
	assert.Zero(t, closed(), "connections closed (and redialled)")
}

// TestOutagePastExpiry: the managed-identity endpoint answers HTTP 500 from before the refresh
// until 3 s past the token's expiry while 8 goroutines send INCR. Measured: credential calls per
// second and connections dialled per second past expiry (each dial waits for the provider's next
// paced attempt), the time from the endpoint's return to the first INCR that succeeds, the
// errors, and counters against acknowledged replies.
func TestOutagePastExpiry(t *testing.T) {
	e := start(t, 3*time.Second)
	c := e.client(t, rueidis.ClientOption{})
	ctx := context.Background()
	require.NoError(t, c.Do(ctx, c.B().Set().Key("o").Value("0").Build()).Error())
	info, ok := e.p.Token()
	require.True(t, ok)
	e.iss.FailFor(time.Hour, http.StatusInternalServerError)
	l := startLoad(c, 8, "o")
	require.Eventually(t, func() bool { return l.total() > 100 }, 5*time.Second, time.Millisecond)
	open := e.gw.Stats().Active

	time.Sleep(time.Until(info.ExpiresOn.Add(500 * time.Millisecond))) // past the expiry
	calls0, st0, t0 := e.cred.calls.Load(), e.gw.Stats(), time.Now()
	acked0 := l.total()
	time.Sleep(3 * time.Second) // the measured window
	calls1, st1, t1 := e.cred.calls.Load(), e.gw.Stats(), time.Now()
	acked1 := l.total()
	secs := t1.Sub(t0).Seconds()
	callsPerSec := float64(calls1-calls0) / secs
	dialsPerSec := float64(st1.Connections-st0.Connections) / secs

	e.iss.FailFor(0, 0)
	back := time.Now()
	var recovery time.Duration
	require.Eventually(t, func() bool {
		if l.total() > acked1 {
			recovery = time.Since(back)
			return true
		}
		return false
	}, 10*time.Second, time.Millisecond)
	l.end()

	v, err := c.Do(ctx, c.B().Get().Key("o").Build()).AsInt64()
	require.NoError(t, err)
	t.Logf("past expiry, over %.1f s: credential calls/s %.1f, dials/s %.1f, INCR acknowledged %d; recovery %v; errors %d, of which not provider.ErrTokenUnavailable %d (first error: %v); counter %d, acknowledged %d",
		secs, callsPerSec, dialsPerSec, acked1-acked0, recovery.Round(time.Millisecond), l.errs.Load(), l.other.Load(), firstLine(l.first), v, l.total())
	assert.LessOrEqual(t, callsPerSec, 4.0, "the provider paces the credential")
	assert.Zero(t, acked1-acked0, "no INCR succeeds without a token")
	assert.Less(t, recovery, 2*time.Second)
	assert.LessOrEqual(t, dialsPerSec, 10.0, "dials follow the credential's pace")
	// Other errors: the INCRs in flight when the server closed the connections at expiry (EOF),
	// at most one per goroutine and connection.
	assert.LessOrEqual(t, l.other.Load(), int64(8)*open)
	assert.Greater(t, l.errs.Load()-l.other.Load(), int64(0), "the failure is provider.ErrTokenUnavailable")
	// An INCR in flight when its connection closed may have been applied without a reply: the
	// counter may exceed the acknowledged count by some of the failed ones, never fall short.
	assert.GreaterOrEqual(t, v, l.total())
	assert.LessOrEqual(t, v-l.total(), int64(8)*open, "only INCRs in flight at a close: at most one per goroutine and connection")
}

// TestCluster: the cluster client against entratest's 3-master cluster (a TLS gateway per node):
// INCR on keys of every node through 3 expiries, no close at expiry, no error, no connection
// closed, counters equal to acknowledged replies.
func TestCluster(t *testing.T) {
	e := start(t, 3*time.Second)
	srvTLS, err := e.ca.ServerTLSConfig()
	require.NoError(t, err)
	cl := entratest.StartCluster(t, e.iss, &entratest.ClusterOptions{Gateway: &entratest.GatewayOptions{TLS: srvTLS}})
	c := e.client(t, rueidis.ClientOption{}, cl.Addrs()...)
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"} // slots on all three masters
	l := startLoad(c, 16, keys...)
	require.Eventually(t, func() bool { return l.total() > 100 }, 10*time.Second, 10*time.Millisecond)
	// From now on: rueidis closes its seed connection once it has the topology.
	closed := func() int64 { st := cl.Stats(); return st.Connections - st.Active }
	closed0 := closed()
	passExpiries(t, e.p, 3)
	l.end()
	st := cl.Stats()
	t.Logf("cluster: INCR acknowledged %d; errors %d; connections %d, closed during the rotations %d; expiry closes %d", l.total(), l.errs.Load(), st.Connections, closed()-closed0, st.ExpiryCloses)
	assert.Zero(t, st.ExpiryCloses)
	assert.Zero(t, l.errs.Load(), "first error: %v", l.first)
	assert.Zero(t, closed()-closed0, "connections closed")
	l.check(t, c)
}

// TestClusterPubSubRESP2: a RESP2 subscriber of the cluster client is moved before expiry too
// (its dedicated connection goes to the channel's node): every message arrives, none is closed at
// expiry, no error. (Across nodes, a message can overtake another during a move.)
func TestClusterPubSubRESP2(t *testing.T) {
	e := start(t, 3*time.Second)
	srvTLS, err := e.ca.ServerTLSConfig()
	require.NoError(t, err)
	cl := entratest.StartCluster(t, e.iss, &entratest.ClusterOptions{Gateway: &entratest.GatewayOptions{TLS: srvTLS}})
	c := e.client(t, rueidis.ClientOption{AlwaysRESP2: true, DisableCache: true}, cl.Addrs()...)
	sent, got, twice, _, err := pubsub(t, e, c, 3, 10)
	st := cl.Stats()
	t.Logf("cluster RESP2 pub/sub: published %d, received %d, %d twice; expiry closes %d; Receive error: %v", sent, got, twice, st.ExpiryCloses, err)
	// A move closing the old connection at once lost what was in flight on it (10 of 8740 with
	// bursts): the old one now ends with UNSUBSCRIBE, whose confirmations follow those messages,
	// and on a cluster only clusterGrace after the new one is confirmed (the two may be on
	// different nodes, each reached by a message over the cluster bus at its own pace: a burst of
	// 10 was lost once in CI without it).
	assert.Equal(t, sent, got, "messages lost")
	assert.Zero(t, st.ExpiryCloses)
	assert.NoError(t, err)
}

// blocker is a consumer of BLPOP or XREAD BLOCK in a loop, and its producer.
type blocker struct {
	name    string
	timeout time.Duration // of each blocking call; 0 blocks until data
	every   time.Duration // the producer's period
}

func (b blocker) xread() bool { return b.name == "XREAD" }

// run consumes and produces through n expiries; it returns the items produced and consumed, and
// the consumer's errors (the first one too).
func (b blocker) run(t *testing.T, e *env, c rueidis.Client, n int) (pushed, consumed, errs int64, first error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got atomic.Int64
	var nerr atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{})
	go func() {
		defer close(done)
		last := "0"
		for ctx.Err() == nil {
			var cmd rueidis.Completed
			if b.xread() {
				cmd = c.B().Xread().Block(b.timeout.Milliseconds()).Streams().Key("stream").Id(last).Build()
			} else {
				cmd = c.B().Blpop().Key("list").Timeout(b.timeout.Seconds()).Build()
			}
			r := c.Do(ctx, cmd)
			switch err := r.Error(); {
			case rueidis.IsRedisNil(err):
			case err != nil:
				if ctx.Err() == nil {
					nerr.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			case b.xread():
				m, err := r.AsXRead()
				require.NoError(t, err)
				for _, x := range m["stream"] {
					last = x.ID
					got.Add(1)
				}
			default:
				got.Add(1)
			}
		}
	}()
	stop := make(chan struct{})
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		tk := time.NewTicker(b.every)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			var cmd rueidis.Completed
			if b.xread() {
				cmd = c.B().Xadd().Key("stream").Id("*").FieldValue().FieldValue("n", "1").Build()
			} else {
				cmd = c.B().Lpush().Key("list").Element("x").Build()
			}
			if c.Do(ctx, cmd).Error() == nil {
				pushed++
			}
		}
	}()
	passExpiries(t, e.p, n)
	close(stop)
	<-prodDone
	assert.Eventually(t, func() bool { return got.Load() >= pushed }, 5*time.Second, 10*time.Millisecond)
	cancel()
	<-done
	if v := firstErr.Load(); v != nil {
		first = v.(error)
	}
	return pushed, got.Load(), nerr.Load(), first
}

// TestBlocking: a BLPOP and an XREAD BLOCK consumer blocking until data (timeout 0) through 3
// expiries (3 s tokens), with nothing pushed, data every second, or every 50 ms. NewClient's
// client sends each as blocks shorter than the renewal lead allows (187 ms here, 90 s on Azure),
// so the refresh AUTH queued behind one runs before the expiry: every item pushed is consumed, no
// error, no close at expiry.
func TestBlocking(t *testing.T) {
	for _, b := range []blocker{
		{name: "BLPOP", every: time.Hour}, // nothing pushed
		{name: "XREAD", every: time.Hour},
		{name: "BLPOP", every: time.Second},
		{name: "XREAD", every: time.Second},
		{name: "BLPOP", every: 50 * time.Millisecond},
	} {
		name := fmt.Sprintf("%s 0, data every %v", b.name, b.every)
		if b.every == time.Hour {
			name = b.name + " 0, nothing pushed"
		}
		t.Run(name, func(t *testing.T) {
			e := start(t, 3*time.Second)
			c := e.client(t, rueidis.ClientOption{})
			pushed, consumed, errs, first := b.run(t, e, c, 3)
			st := e.gw.Stats()
			t.Logf("pushed %d, consumed %d, errors %d (first: %v); expiry closes %d, connections %d", pushed, consumed, errs, first, st.ExpiryCloses, st.Connections)
			assert.Equal(t, pushed, consumed)
			assert.Zero(t, errs, "first: %v", first)
			assert.Zero(t, st.ExpiryCloses)
		})
	}
}

// TestBlockingTimeoutKept: a block split in shorter ones still ends at the caller's timeout,
// with Redis's answer (nil), and returns an element as soon as one is pushed.
func TestBlockingTimeoutKept(t *testing.T) {
	e := start(t, 3*time.Second)
	c := e.client(t, rueidis.ClientOption{})
	ctx := context.Background()
	start := time.Now()
	err := c.Do(ctx, c.B().Blpop().Key("kept").Timeout(1).Build()).Error()
	took := time.Since(start)
	assert.True(t, rueidis.IsRedisNil(err), "%v", err)
	assert.GreaterOrEqual(t, took, time.Second)
	assert.Less(t, took, 1500*time.Millisecond)

	go func() {
		time.Sleep(700 * time.Millisecond) // lands inside a later block than the first
		_ = c.Do(ctx, c.B().Rpush().Key("kept").Element("v").Build()).Error()
	}()
	start = time.Now()
	kv, err := c.Do(ctx, c.B().Blpop().Key("kept").Timeout(5).Build()).AsStrSlice()
	require.NoError(t, err)
	assert.Equal(t, []string{"kept", "v"}, kv)
	assert.Less(t, time.Since(start), 2*time.Second)
	// XREAD's "$": an entry added after the call began is returned, none before it.
	require.NoError(t, c.Do(ctx, c.B().Xadd().Key("ks").Id("*").FieldValue().FieldValue("n", "old").Build()).Error())
	go func() {
		time.Sleep(700 * time.Millisecond)
		_ = c.Do(ctx, c.B().Xadd().Key("ks").Id("*").FieldValue().FieldValue("n", "new").Build()).Error()
	}()
	m, err := c.Do(ctx, c.B().Xread().Block(5000).Streams().Key("ks").Id("$").Build()).AsXRead()
	require.NoError(t, err)
	require.Len(t, m["ks"], 1)
	assert.Equal(t, "new", m["ks"][0].FieldValues["n"])
}

// TestBlockingPastExpiry measures what rueidis's own mechanism cannot do (a client made with
// AuthCredentialsFn alone): a BLPOP 0 that nothing answers holds its connection past the token's
// expiry (the refresh AUTH queued behind it), and the server closes the connection. Measured: the
// consumer's errors, the closes, and that the next BLPOP works (rueidis dials again).
func TestBlockingPastExpiry(t *testing.T) {
	e := start(t, 3*time.Second)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{e.gw.Addr()}, TLSConfig: e.ca.ClientTLSConfig(), AuthCredentialsFn: AuthCredentialsFn(e.p)})
	require.NoError(t, err)
	defer c.Close()
	b := blocker{name: "BLPOP", timeout: 0, every: time.Hour} // nothing pushed
	_, _, errs, first := b.run(t, e, c, 2)
	st := e.gw.Stats()
	t.Logf("AuthCredentialsFn alone, BLPOP 0 through 2 expiries, nothing pushed: consumer errors %d (first: %v); expiry closes %d; connections %d", errs, first, st.ExpiryCloses, st.Connections)
	assert.GreaterOrEqual(t, st.ExpiryCloses, int64(1), "the server closes the blocked connection at expiry")
	assert.GreaterOrEqual(t, errs, int64(1), "the blocked BLPOP fails")
	// The next one dials again and works (another key: the cancelled BLPOP may still wait on "list").
	require.NoError(t, c.Do(context.Background(), c.B().Lpush().Key("list2").Element("y").Build()).Error())
	require.NoError(t, c.Do(context.Background(), c.B().Blpop().Key("list2").Timeout(1).Build()).Error())
}

// TestPubSubRESP2: a RESP2 subscriber (AlwaysRESP2) refuses AUTH, so NewClient's client moves
// it to a new connection on the newer token before its token expires: every message published
// (10 pipelined every 10 ms, so that some are in flight on the old connection when the new one is
// confirmed) through 3 expiries arrives, none is closed at expiry, Receive returns no error, no
// goroutine is left after Close; a message published during a move may arrive twice (counted).
func TestPubSubRESP2(t *testing.T) {
	base := runtime.NumGoroutine()
	e := start(t, 3*time.Second)
	c := e.client(t, rueidis.ClientOption{AlwaysRESP2: true, DisableCache: true})
	sent, got, twice, closes, err := pubsub(t, e, c, 3, 10)
	t.Logf("RESP2 pub/sub, NewClient: published %d, received %d, %d twice; expiry closes %d; connections %d; Receive error: %v", sent, got, twice, closes, e.gw.Stats().Connections, err)
	assert.Equal(t, sent, got, "messages lost")
	assert.Zero(t, closes)
	assert.NoError(t, err)
	c.Close()
	require.NoError(t, e.p.Close())
	e.gw.Close()
	e.srv.Close()
	e.iss.Close()
	waitGoroutines(t, base)
}

// TestPubSubRESP2Alone measures rueidis's own mechanism there (a client made with
// AuthCredentialsFn alone): the server closes the RESP2 subscriber when its token expires,
// Receive returns the connection's error (EOF), and the messages published after it are lost
// unless the caller subscribes again.
func TestPubSubRESP2Alone(t *testing.T) {
	e := start(t, 3*time.Second)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{e.gw.Addr()}, TLSConfig: e.ca.ClientTLSConfig(),
		AlwaysRESP2: true, DisableCache: true, AuthCredentialsFn: AuthCredentialsFn(e.p)})
	require.NoError(t, err)
	defer c.Close()
	sent, got, _, closes, err := pubsub(t, e, c, 3, 1)
	t.Logf("RESP2 pub/sub, AuthCredentialsFn alone, 3 expiries: published %d, received %d (lost %d); expiry closes %d; Receive error: %v", sent, got, sent-got, closes, err)
	assert.GreaterOrEqual(t, closes, int64(1), "the RESP2 subscriber is closed at expiry")
	assert.Less(t, got, sent, "messages are lost")
}

// TestINCRConnectionPool measures the same load with DisableAutoPipelining, where rueidis's
// mechanism falls short: each command takes a connection of a pool, whose refresh timer is
// paused while the connection is checked out and restarted when it is returned. A connection
// taken back at once, again and again, may never run its refresh before the expiry (the server
// closes it: an INCR in flight then fails with EOF, applied or not); a connection taken while its
// refresh runs is closed by the pool (a redial, the command going to another connection).
// Measured: redials per rotation, closes at expiry, errors, and counters against acknowledged
// replies (the only INCRs applied without a reply are among the failed ones).
func TestINCRConnectionPool(t *testing.T) {
	if os.Getenv("ENTRAREDIS_CLIENT_BUGS") == "" {
		// With DisableAutoPipelining the client's refresh timer can fire on a pipe without a
		// queue and panic (pipe.go:1198 in v1.0.80, nil p.queue in refreshAuth's Do), which ends
		// the whole test binary: this measurement runs only when asked for.
		t.Skip("set ENTRAREDIS_CLIENT_BUGS=1 to measure DisableAutoPipelining (the client itself can panic)")
	}
	const rotations = 4
	e := start(t, 3*time.Second)
	// NewClient refuses DisableAutoPipelining (ErrNoAutoPipelining): AuthCredentialsFn alone.
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{e.gw.Addr()}, TLSConfig: e.ca.ClientTLSConfig(),
		DisableAutoPipelining: true, AuthCredentialsFn: AuthCredentialsFn(e.p),
	})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	keys := []string{"p:a", "p:b", "p:c", "p:d"}
	l := startLoad(c, 16, keys...)
	require.Eventually(t, func() bool { return l.total() > 100 }, 5*time.Second, 10*time.Millisecond)
	closed := func() int64 { st := e.gw.Stats(); return st.Connections - st.Active }
	closed0 := closed()
	passExpiries(t, e.p, rotations)
	l.end()
	st := e.gw.Stats()
	perRotation := float64(closed()-closed0) / rotations
	var sum int64
	for _, k := range keys {
		v, err := c.Do(context.Background(), c.B().Get().Key(k).Build()).AsInt64()
		require.NoError(t, err)
		sum += v
	}
	t.Logf("DisableAutoPipelining: INCR acknowledged %d, applied %d; errors %d (first: %v); connections %d (open %d), closed during %d rotations %d (%.1f per rotation); expiry closes %d",
		l.total(), sum, l.errs.Load(), l.first, st.Connections, st.Active, rotations, closed()-closed0, perRotation, st.ExpiryCloses)
	assert.Greater(t, perRotation, 1.0, "the pool redials connections at each rotation")
	assert.LessOrEqual(t, perRotation, float64(st.Active)+1, "at most about one redial per pooled connection per rotation")
	assert.GreaterOrEqual(t, sum, l.total())
	assert.LessOrEqual(t, sum-l.total(), l.errs.Load(), "INCRs applied without a reply are among the failed ones")
}

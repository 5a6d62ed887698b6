package entraredis

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/internal/acltest"
	"github.com/entraredis/entraredis/internal/testutil"
	"github.com/entraredis/entraredis/provider"
)

// Every way go-redis uses a connection, through a TLS gateway that closes a connection when its
// token expires (as Azure does) in front of a real redis-server, with tokens of a few seconds.

// connRig is an issuer, a real redis-server behind a TLS gateway, a provider and a hook.
type connRig struct {
	iss  *entratest.Issuer
	gw   *entratest.Gateway
	p    *provider.Provider
	h    *hook.Hook
	tls  *tls.Config
	dial atomic.Int64 // raw dials by the counting dialer
}

func requireRedis(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not found in PATH: make test installs it (Debian/Ubuntu: sudo apt-get install redis-server)")
	}
}

func newConnRig(t *testing.T, life time.Duration, gwOpts *entratest.GatewayOptions, hookOpts *hook.Options) *connRig {
	t.Helper()
	requireRedis(t)
	k, err := acltest.Key()
	require.NoError(t, err)
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: life, Key: k})
	require.NoError(t, err)
	t.Cleanup(func() { iss.Close() })
	ca, err := entratest.NewTestCA()
	require.NoError(t, err)
	srvTLS, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	var o entratest.GatewayOptions
	if gwOpts != nil {
		o = *gwOpts
	}
	o.TLS = srvTLS
	r := &connRig{iss: iss, tls: ca.ClientTLSConfig()}
	r.gw = entratest.StartGateway(t, iss, entratest.StartRedis(t, nil).Addr(), &o)
	r.p, err = provider.New(iss, nil)
	require.NoError(t, err)
	t.Cleanup(func() { r.p.Close() })
	if testing.Verbose() && hookOpts == nil && os.Getenv("ENTRAREDIS_DEBUG") != "" {
		hookOpts = &hook.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	}
	r.h = hook.New(r.p, hookOpts)
	t.Cleanup(func() { r.h.Close() })
	return r
}

// Production's ratio (DESIGN.md): go-redis's timeouts far shorter than a token's life, as its
// seconds are against an hour. The pub/sub, idle and blocking tests run at it: 200 ms against 3 s
// tokens.
const (
	prodTimeout = 200 * time.Millisecond
	prodLife    = 3 * time.Second
)

// prodRatio sets go-redis's read and write timeouts of o to prodTimeout.
func prodRatio(o *redis.Options) *redis.Options {
	o.ReadTimeout, o.WriteTimeout = prodTimeout, prodTimeout
	return o
}

// options returns client options with a dialer that counts the raw connections it makes.
func (r *connRig) options(poolSize int) *redis.Options {
	d := &tls.Dialer{Config: r.tls}
	return &redis.Options{
		Addr: r.gw.Addr(), PoolSize: poolSize,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			r.dial.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
}

// rotations waits until the provider has cached n tokens after the current one and the last of
// the earlier ones has expired, so that every connection has lived through n expiries.
func (r *connRig) rotations(t *testing.T, n int) { waitRotations(t, r.p, r.iss.Lifetime(), n) }

// waitRotations waits until p has cached n tokens after its current one and the last of the
// earlier ones has expired; tokens live life.
func waitRotations(t *testing.T, p *provider.Provider, life time.Duration, n int) {
	t.Helper()
	var info provider.TokenInfo
	require.Eventually(t, func() bool {
		var ok bool
		info, ok = p.Token()
		return ok
	}, 5*time.Second, 10*time.Millisecond, "a first token")
	require.Eventually(t, func() bool {
		now, ok := p.Token()
		return ok && now.Generation >= info.Generation+uint64(n)
	}, time.Duration(n+2)*2*life, 10*time.Millisecond, "%d rotations", n)
	for time.Now().Before(info.ExpiresOn.Add(100 * time.Millisecond)) {
		time.Sleep(20 * time.Millisecond) // an observation window: the old token's expiry passes
	}
}

// incrThrough INCRs a counter per worker until wait returns; it returns the acknowledged INCRs per
// counter ("counter:N") and the errors.
func incrThrough(ctx context.Context, rdb redis.UniversalClient, workers int, wait func()) ([]int64, []error) {
	stop := make(chan struct{})
	var acked []int64
	var errs []error
	done := make(chan struct{})
	go func() {
		defer close(done)
		acked, errs = load(ctx, workers, stop, func(ctx context.Context, key string) (int64, error) {
			return 1, rdb.Incr(ctx, key).Err()
		})
	}()
	wait()
	close(stop)
	<-done
	return acked, errs
}

// byKey names load's counters ("<prefix>counter:N"), for checkCounters.
func byKey(prefix string, acked []int64) result {
	r := result{acked: map[string]int64{}}
	for w, n := range acked {
		r.acked[fmt.Sprintf("%scounter:%d", prefix, w)] = n
	}
	return r
}

// load runs workers INCRing their own counter until stop; it returns the acknowledged INCRs per
// counter and the errors.
func load(ctx context.Context, workers int, stop <-chan struct{}, op func(ctx context.Context, key string) (int64, error)) ([]int64, []error) {
	acked := make([]int64, workers)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			key := fmt.Sprintf("counter:%d", w)
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := op(ctx, key)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					continue
				}
				acked[w] += n
			}
		})
	}
	wg.Wait()
	return acked, errs
}

// TestEveryConnectionGuarded: the MinIdleConns prefill dials inside redis.NewClient, before a hook
// can be added; the guard is in the Dialer, so every raw dial is a guarded one, and the INCR load
// sees no error, no close at expiry, and counters equal to the acknowledged INCRs.
func TestEveryConnectionGuarded(t *testing.T) {
	testutil.Slow(t)
	r := newConnRig(t, 3*time.Second, nil, nil)
	opt := r.options(8)
	opt.MinIdleConns = 8
	rdb := NewClient(r.h, opt)
	defer rdb.Close()
	ctx := context.Background()
	require.Eventually(t, func() bool { return r.dial.Load() >= 8 }, 5*time.Second, 10*time.Millisecond, "prefill")

	acked, errs := incrThrough(ctx, rdb, 16, func() { r.rotations(t, 2) })
	st, gw := r.h.Stats(), r.gw.Stats()
	t.Logf("raw dials %d, guarded %d; closes at expiry %d; renewed in place %d (idle %d); retired %d; errors %d",
		r.dial.Load(), st.Dials, gw.ExpiryCloses, st.Reauths, st.IdleReauths, st.ConnsRetired, len(errs))
	assert.Empty(t, errs)
	assert.Equal(t, uint64(r.dial.Load()), st.Dials, "raw dials == guarded dials")
	assert.Zero(t, gw.ExpiryCloses)
	checkCounters(t, rdb, byKey("", acked))
}

// TestEveryClusterConnectionGuarded: node clients of a cluster are made as the cluster discovers
// its nodes, each with its own MinIdleConns prefill; the guard is in every node's Dialer too.
func TestEveryClusterConnectionGuarded(t *testing.T) {
	testutil.Slow(t)
	r := newClusterRig(t, 3*time.Second)
	iss, ca, cl, p, h := r.iss, r.ca, r.cl, r.p, r.h
	var raw atomic.Int64
	d := &tls.Dialer{Config: ca.ClientTLSConfig()}
	rdb := NewClusterClient(h, &redis.ClusterOptions{
		Addrs: cl.Addrs(), PoolSize: 4, MinIdleConns: 2,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	})
	defer rdb.Close()
	ctx := context.Background()
	require.NoError(t, rdb.Ping(ctx).Err())
	acked, errs := incrThrough(ctx, rdb, 8, func() { waitRotations(t, p, iss.Lifetime(), 2) })
	st, gw := h.Stats(), cl.Stats()
	t.Logf("raw dials %d, guarded %d; closes at expiry %d; renewed in place %d (idle %d); retired %d; errors %d",
		raw.Load(), st.Dials, gw.ExpiryCloses, st.Reauths, st.IdleReauths, st.ConnsRetired, len(errs))
	assert.Empty(t, errs)
	assert.Equal(t, uint64(raw.Load()), st.Dials, "raw dials == guarded dials")
	assert.GreaterOrEqual(t, raw.Load(), int64(3*2), "every node's prefill")
	assert.Zero(t, gw.ExpiryCloses, "idle node connections too are renewed before expiry")
	checkCounters(t, rdb, byKey("", acked))
}

// clusterRig is a 3-master cluster behind entratest's TLS gateways (closing connections at their
// token's expiry), an issuer of tokens of life, a provider and a hook.
type clusterRig struct {
	iss *entratest.Issuer
	ca  *entratest.TestCA
	cl  *entratest.Cluster
	p   *provider.Provider
	h   *hook.Hook
}

func newClusterRig(t *testing.T, life time.Duration) *clusterRig {
	t.Helper()
	requireRedis(t)
	k, err := acltest.Key()
	require.NoError(t, err)
	r := &clusterRig{}
	r.iss, err = entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: life, Key: k})
	require.NoError(t, err)
	t.Cleanup(func() { r.iss.Close() })
	r.ca, err = entratest.NewTestCA()
	require.NoError(t, err)
	srvTLS, err := r.ca.ServerTLSConfig()
	require.NoError(t, err)
	r.cl = entratest.StartCluster(t, r.iss, &entratest.ClusterOptions{Gateway: &entratest.GatewayOptions{TLS: srvTLS}})
	r.p, err = provider.New(r.iss, nil)
	require.NoError(t, err)
	t.Cleanup(func() { r.p.Close() })
	r.h = hook.New(r.p, nil)
	t.Cleanup(func() { r.h.Close() })
	return r
}

// TestLargeTransactions: a MULTI/EXEC larger than go-redis's write buffer is flushed in several
// writes; the connection is followed through all of them and renewed after EXEC, for
// TxPipelined, Watch and a sticky rdb.Conn().
func TestLargeTransactions(t *testing.T) {
	testutil.Slow(t)
	big := strings.Repeat("x", 40<<10)
	r := newConnRig(t, 3*time.Second, nil, nil)
	rdb := NewClient(r.h, r.options(4))
	defer rdb.Close()
	ctx := context.Background()
	sticky := rdb.Conn()
	defer sticky.Close()
	// One handshake at a time first: go-redis v9.23 writes the options it shares with a sticky
	// Conn when the maintenance-notifications handshake fails, without a common lock (a race
	// that is go-redis's, not this test's subject).
	require.NoError(t, rdb.Ping(ctx).Err())
	require.NoError(t, sticky.Ping(ctx).Err())
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error { p.Ping(ctx); return nil })
	require.NoError(t, err)
	ops := map[string]func(ctx context.Context, key string) (int64, error){
		"TxPipelined": func(ctx context.Context, key string) (int64, error) {
			_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key+":big", big, 0)
				p.Incr(ctx, key)
				return nil
			})
			return 1, err
		},
		"Watch": func(ctx context.Context, key string) (int64, error) {
			return 1, rdb.Watch(ctx, func(tx *redis.Tx) error {
				_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
					p.Set(ctx, key+":big", big, 0)
					p.Incr(ctx, key)
					return nil
				})
				return err
			}, key)
		},
	}
	var mu sync.Mutex // the sticky connection serves one goroutine at a time
	ops["Conn"] = func(ctx context.Context, key string) (int64, error) {
		mu.Lock()
		defer mu.Unlock()
		_, err := sticky.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key+":big", big, 0)
			p.Incr(ctx, key)
			return nil
		})
		return 1, err
	}
	stop := make(chan struct{})
	results := map[string][]int64{}
	var errs []error
	var wg sync.WaitGroup
	var rmu sync.Mutex
	for name, op := range ops {
		wg.Go(func() {
			acked, e := load(ctx, 2, stop, func(ctx context.Context, key string) (int64, error) { return op(ctx, name+":"+key) })
			rmu.Lock()
			results[name], errs = acked, append(errs, e...)
			rmu.Unlock()
		})
	}
	r.rotations(t, 2)
	close(stop)
	wg.Wait()
	st, gw := r.h.Stats(), r.gw.Stats()
	t.Logf("closes at expiry %d; renewed in place %d (idle %d); retired %d; errors %d", gw.ExpiryCloses, st.Reauths, st.IdleReauths, st.ConnsRetired, len(errs))
	assert.Empty(t, errs)
	assert.Zero(t, gw.ExpiryCloses)
	assert.Zero(t, st.ConnsRetired, "never left inside MULTI")
	for name, acked := range results {
		checkCounters(t, rdb, byKey(name+":", acked))
	}
}

// TestIdleConnectionsRenewed: pooled and sticky connections that sit idle through two rotations
// are renewed in the background: no close at expiry, no redial, no error afterwards.
func TestIdleConnectionsRenewed(t *testing.T) {
	testutil.Slow(t)
	r := newConnRig(t, prodLife, nil, nil)
	rdb := NewClient(r.h, prodRatio(r.options(4)))
	defer rdb.Close()
	ctx := context.Background()
	sticky := rdb.Conn()
	defer sticky.Close()
	require.NoError(t, sticky.Ping(ctx).Err())
	var wg sync.WaitGroup
	for range 4 { // four pooled connections in use at once, then idle
		wg.Go(func() { assert.ErrorIs(t, rdb.BLPop(ctx, time.Second, "nothing").Err(), redis.Nil) })
	}
	wg.Wait()
	dials, conns := r.h.Stats().Dials, r.gw.Stats().Connections
	require.GreaterOrEqual(t, dials, uint64(2))

	r.rotations(t, 2)
	for i := range 10 {
		require.NoError(t, rdb.Incr(ctx, "pooled").Err(), "pooled %d", i)
		require.NoError(t, sticky.Incr(ctx, "sticky").Err(), "sticky %d", i)
	}
	st, gw := r.h.Stats(), r.gw.Stats()
	t.Logf("idle renewals %d; closes at expiry %d; dials %d -> %d; gateway connections %d -> %d",
		st.IdleReauths, gw.ExpiryCloses, dials, st.Dials, conns, gw.Connections)
	assert.Zero(t, gw.ExpiryCloses)
	assert.Equal(t, dials, st.Dials, "no redial")
	assert.Equal(t, conns, gw.Connections)
	// The last rotation may still be ahead of the idle pass when the commands start (they renew
	// in place then): at least one idle renewal per connection.
	assert.GreaterOrEqual(t, st.IdleReauths, dials, "every connection renewed while idle")
}

// TestKeepAlive: the gateway closes connections idle for 1.5 s (Azure: 10 minutes); the guard
// PINGs idle ones, so none is closed and none redialled.
func TestKeepAlive(t *testing.T) {
	testutil.Slow(t)
	r := newConnRig(t, time.Hour, &entratest.GatewayOptions{IdleTimeout: 1500 * time.Millisecond}, &hook.Options{KeepAlive: time.Second})
	rdb := NewClient(r.h, prodRatio(r.options(2)))
	defer rdb.Close()
	ctx := context.Background()
	require.NoError(t, rdb.Ping(ctx).Err())
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // idle: an observation window
	}
	require.NoError(t, rdb.Ping(ctx).Err())
	st, gw := r.h.Stats(), r.gw.Stats()
	t.Logf("keep-alive PINGs %d; idle closes %d; dials %d", st.KeepAlives, gw.IdleCloses, st.Dials)
	assert.Zero(t, gw.IdleCloses)
	assert.Equal(t, uint64(1), st.Dials)
	assert.GreaterOrEqual(t, st.KeepAlives, uint64(2))
}

// TestBlockingCommands: blocking commands never sit on a connection at its token's expiry. A
// BLPOP with a timeout longer than the token returns nil on time; with 0 it waits through
// rotations and gets the element pushed; consumers of every blocking kind get every element.
func TestBlockingCommands(t *testing.T) {
	testutil.Slow(t)
	r := newConnRig(t, prodLife, nil, nil)
	rdb := NewClient(r.h, prodRatio(r.options(8)))
	defer rdb.Close()
	ctx := context.Background()

	t.Run("timeout past the token", func(t *testing.T) {
		start := time.Now()
		err := rdb.BLPop(ctx, 7*time.Second, "empty").Err()
		took := time.Since(start)
		t.Logf("BLPOP 7s returned %v after %v", err, took)
		require.ErrorIs(t, err, redis.Nil)
		assert.InDelta(t, 7, took.Seconds(), 0.3, "nil at its own timeout")
	})
	t.Run("WAIT", func(t *testing.T) {
		// WAIT waits for its own connection's writes: never sent twice (a second block could run on
		// another pooled connection), only capped to end before the token must be renewed.
		// Measured where it cannot drift: the timeout written to the server (seen by a hook inside
		// the guard's), against what is left of the provider's newest token then (exp is a whole
		// second rounded up: a 3 s token lives up to 4 s).
		var sent []string
		var left []time.Duration
		rdb.AddHook(argsHook(func(cmd redis.Cmder) {
			if cmd.Name() == "wait" {
				info, _ := r.p.Token()
				sent, left = append(sent, fmt.Sprint(cmd.Args()[2])), append(left, time.Until(info.ExpiresOn))
			}
		}))
		start := time.Now()
		n, err := rdb.Wait(ctx, 1, 5*time.Second).Result() // longer than any 3 s token lives
		took := time.Since(start)
		require.NoError(t, err)
		assert.Zero(t, n, "no replica")
		t.Logf("WAIT 5000 ms sent as %v ms with %v left of the token, returned after %v", sent, left, took)
		require.NotEmpty(t, sent)
		for i, a := range sent { // more than one only when the hook sent it again (nothing written)
			ms, err := strconv.Atoi(a)
			require.NoError(t, err)
			assert.Less(t, time.Duration(ms)*time.Millisecond, left[i], "capped within the token's life")
		}
	})
	consumers := map[string]func(ctx context.Context) (int, error){
		"BLPOP 0": func(ctx context.Context) (int, error) {
			_, err := rdb.BLPop(ctx, 0, "q:blpop").Result()
			return 1, err
		},
		"BRPOP": func(ctx context.Context) (int, error) {
			_, err := rdb.BRPop(ctx, 10*time.Second, "q:brpop").Result()
			return 1, err
		},
		"BLMOVE": func(ctx context.Context) (int, error) {
			_, err := rdb.BLMove(ctx, "q:blmove", "q:blmove:done", "LEFT", "RIGHT", 0).Result()
			return 1, err
		},
		"BLMPOP": func(ctx context.Context) (int, error) {
			_, v, err := rdb.BLMPop(ctx, 0, "left", 1, "q:blmpop").Result()
			return len(v), err
		},
		"BZPOPMIN": func(ctx context.Context) (int, error) {
			_, err := rdb.BZPopMin(ctx, 0, "q:bzpopmin").Result()
			return 1, err
		},
		"XREAD $": nil, // below: it must resume after the last entry it saw
	}
	var xlast atomic.Value
	xlast.Store("$")
	consumers["XREAD $"] = func(ctx context.Context) (int, error) {
		s, err := rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{"q:xread", xlast.Load().(string)}, Count: 1, Block: 0}).Result()
		if err != nil {
			return 0, err
		}
		xlast.Store(s[0].Messages[len(s[0].Messages)-1].ID)
		return len(s[0].Messages), nil
	}
	push := map[string]func(ctx context.Context, i int) error{
		"BLPOP 0":  func(ctx context.Context, i int) error { return rdb.RPush(ctx, "q:blpop", i).Err() },
		"BRPOP":    func(ctx context.Context, i int) error { return rdb.RPush(ctx, "q:brpop", i).Err() },
		"BLMOVE":   func(ctx context.Context, i int) error { return rdb.RPush(ctx, "q:blmove", i).Err() },
		"BLMPOP":   func(ctx context.Context, i int) error { return rdb.RPush(ctx, "q:blmpop", i).Err() },
		"BZPOPMIN": func(ctx context.Context, i int) error { return rdb.ZAdd(ctx, "q:bzpopmin", redis.Z{Member: i}).Err() },
		"XREAD $": func(ctx context.Context, i int) error {
			return rdb.XAdd(ctx, &redis.XAddArgs{Stream: "q:xread", Values: []any{"i", i}}).Err()
		},
	}
	const pushes = 12
	got := map[string]*atomic.Int64{}
	for name := range consumers {
		got[name] = &atomic.Int64{}
	}
	var wg sync.WaitGroup
	var errs sync.Map
	for name, consume := range consumers {
		wg.Go(func() {
			for got[name].Load() < pushes {
				n, err := consume(ctx)
				if err != nil {
					errs.Store(name, err)
					return
				}
				got[name].Add(int64(n))
			}
		})
	}
	// XREAD's "$" means what is added after the call: push only once every consumer is blocked.
	require.Eventually(t, func() bool {
		info, err := rdb.Info(ctx, "clients").Result()
		return err == nil && strings.Contains(info, fmt.Sprintf("blocked_clients:%d\r", len(consumers)))
	}, 10*time.Second, 10*time.Millisecond, "every consumer blocked")
	// Pushes spread over two rotations, with pauses longer than a token's life in between.
	for i := range pushes {
		for name, p := range push {
			require.NoError(t, p(ctx, i), name)
		}
		if i%4 == 3 {
			time.Sleep(3500 * time.Millisecond) // consumers blocked through a token's expiry
		}
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		counts := map[string]int64{}
		for name, n := range got {
			counts[name] = n.Load()
		}
		st, gw := r.h.Stats(), r.gw.Stats()
		t.Fatalf("consumers did not get every element: %v of %d; hook %+v; gateway %+v", counts, pushes, st, gw)
	}
	errs.Range(func(k, v any) bool { t.Errorf("%s: %v", k, v); return true })
	st, gw := r.h.Stats(), r.gw.Stats()
	for name := range consumers {
		assert.Equal(t, int64(pushes), got[name].Load(), "%s: consumed == pushed", name)
	}
	t.Logf("blocks split %d; closes at expiry %d; retired %d; renewed in place %d", st.BlockingSplits, gw.ExpiryCloses, st.ConnsRetired, st.Reauths)
	assert.Zero(t, gw.ExpiryCloses, "no connection closed under a blocked command")
	assert.Positive(t, st.BlockingSplits)
}

// TestPubSubReceive: Receive sees only what Redis sends for the subscription, through rotations:
// over RESP3 the in-place AUTH's reply never reaches it (no stray *redis.Pong); over RESP2 the
// connection is moved to a new one underneath (no error, no re-subscription to see). No message
// is lost; over RESP2 one published during a move's round trip may arrive twice.
func TestPubSubReceive(t *testing.T) {
	testutil.Slow(t)
	for _, proto := range []int{3, 2} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			r := newConnRig(t, prodLife, nil, nil)
			opt := prodRatio(r.options(4))
			opt.Protocol = proto
			rdb := NewClient(r.h, opt)
			defer rdb.Close()
			ctx := context.Background()
			sub := rdb.Subscribe(ctx, "news")
			defer sub.Close()
			_, err := sub.Receive(ctx) // the subscription
			require.NoError(t, err)
			stop := make(chan struct{})
			var sent atomic.Int64
			var acked sync.Map // payloads the server acknowledged
			published := make(chan struct{})
			go func() {
				defer close(published)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					if rdb.Publish(ctx, "news", i).Err() == nil {
						sent.Add(1)
						acked.Store(strconv.Itoa(i), true)
					}
				}
			}()
			deadline := time.Now().Add(7 * time.Second) // two rotations and more
			seen := map[string]int{}
			for time.Now().Before(deadline) {
				m, err := sub.ReceiveTimeout(ctx, time.Second)
				require.NoError(t, err)
				msg, ok := m.(*redis.Message)
				require.True(t, ok, "Receive got %T %v, not a message", m, m)
				seen[msg.Payload]++
			}
			close(stop)
			<-published
			for ackedLost(&acked, seen) > 0 { // the last ones published (one that timed out at 200 ms may have gone through too)
				m, err := sub.ReceiveTimeout(ctx, time.Second)
				require.NoError(t, err)
				seen[m.(*redis.Message).Payload]++
			}
			dups := 0
			for _, n := range seen {
				dups += n - 1
			}
			st, gw := r.h.Stats(), r.gw.Stats()
			t.Logf("messages %d distinct of %d sent, %d twice; re-AUTHs in place %d, moves %d, closes %d; closes at expiry %d",
				len(seen), sent.Load(), dups, st.PubSubReauths, st.PubSubMoved, st.PubSubClosed, gw.ExpiryCloses)
			assert.Zero(t, ackedLost(&acked, seen), "none lost")
			assert.Zero(t, gw.ExpiryCloses)
			assert.Zero(t, st.PubSubClosed, "never closed under go-redis")
			if proto == 3 {
				assert.GreaterOrEqual(t, st.PubSubReauths, uint64(2))
				assert.Zero(t, dups)
			} else {
				assert.GreaterOrEqual(t, st.PubSubMoved, uint64(2))
				assert.LessOrEqual(t, dups, int(st.PubSubMoved), "at most one per move")
			}
		})
	}
}

// argsHook calls its function with each command a hook added after the guard's passes on.
type argsHook func(redis.Cmder)

func (h argsHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h argsHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h(cmd); return next(ctx, cmd) }
}
func (h argsHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// stopping is h, which then returns err instead of sending the command.
func (h argsHook) stopping(err error) redis.Hook { return stopHook{h, err} }

type stopHook struct {
	argsHook
	err error
}

func (h stopHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.argsHook(cmd); return h.err }
}

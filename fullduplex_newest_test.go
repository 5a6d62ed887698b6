//go:build goredis_newest

package entraredis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
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

// go-redis's full-duplex autopipeliner (v9.23) holds one pipeline-pool connection with a writer
// goroutine and a reader goroutine. The guard inserts its AUTH between two of the writer's
// commands and removes the reply where the reader meets it; this runs that through several token
// rotations, over plain TCP and over TLS, behind a gateway that closes connections at expiry.
//
// hooked: a client made for the usual path, whose autopipeliner is made full-duplex afterwards
// (the hook runs on go-redis's hook host goroutines). options: a client whose options ask for the
// full-duplex autopipeliner (Options.AutoPipelineOptions), which NewClient builds without the hook:
// the dialer carries the hook's dial checks and the guard, which renews and retires alone.
func TestFullDuplexAutoPipeline(t *testing.T) {
	for _, tc := range []struct {
		name             string
		withTLS, options bool
	}{{"tcp/hooked", false, false}, {"tls/hooked", true, false}, {"tcp/options", false, true}, {"tls/options", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			r := fdRig(t, prodLife, tc.withTLS)
			fd := &redis.AutoPipelineOptions{FullDuplex: true}
			opt := prodRatio(r.opt)
			if tc.options {
				opt.AutoPipelineOptions = fd
				fd = nil // the options' own
			}
			rdb := NewClient(r.h, opt)
			defer rdb.Close()
			ap, err := rdb.AutoPipelineWithOptions(fd)
			require.NoError(t, err)
			defer ap.Close()
			require.True(t, ap.Config().FullDuplex)
			ctx := context.Background()

			// Every worker INCRs its own key: each reply must be the previous one plus one, whatever
			// was inserted or removed on the connection around it.
			acked, errs, wrong := incrEach(ctx, ap, "fd", 16, func() { waitRotations(t, r.p, r.iss.Lifetime(), 3) })

			st, gw := r.h.Stats(), r.gw.Stats()
			var total int64
			for _, n := range acked {
				total += n
			}
			t.Logf("INCRs acknowledged %d; renewed in place %d (idle %d); retired %d; closes at expiry %d; errors %d; wrong replies %d",
				total, st.Reauths, st.IdleReauths, st.ConnsRetired, gw.ExpiryCloses, len(errs), len(wrong))
			assert.Empty(t, wrong, "every reply the previous one plus one")
			assert.Empty(t, errs)
			assert.Zero(t, gw.ExpiryCloses)
			assert.NotZero(t, st.Reauths, "renewed in place between the writer's commands")
			for w, n := range acked {
				v, err := rdb.Get(ctx, fmt.Sprintf("fd:%d", w)).Int64()
				require.NoError(t, err)
				assert.Equal(t, n, v, "fd:%d: server counter vs acknowledged INCRs", w)
			}
		})
	}
}

type fdRigT struct {
	iss *entratest.Issuer
	gw  *entratest.Gateway
	p   *provider.Provider
	h   *hook.Hook
	opt *redis.Options
}

// fdRig is connRig over plain TCP or TLS.
func fdRig(t *testing.T, life time.Duration, withTLS bool) *fdRigT {
	t.Helper()
	requireRedis(t)
	k, err := acltest.Key()
	require.NoError(t, err)
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: life, Key: k})
	require.NoError(t, err)
	t.Cleanup(func() { iss.Close() })
	var o entratest.GatewayOptions
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	if withTLS {
		ca, err := entratest.NewTestCA()
		require.NoError(t, err)
		o.TLS, err = ca.ServerTLSConfig()
		require.NoError(t, err)
		d := &tls.Dialer{Config: ca.ClientTLSConfig()}
		dial = d.DialContext
	}
	r := &fdRigT{iss: iss}
	r.gw = entratest.StartGateway(t, iss, entratest.StartRedis(t, nil).Addr(), &o)
	r.p, err = provider.New(iss, nil)
	require.NoError(t, err)
	t.Cleanup(func() { r.p.Close() })
	r.h = hook.New(r.p, &hook.Options{OnEvent: func(e hook.Event) {
		if e.Kind == hook.EventConnRetired {
			t.Logf("%s: retired %s (token expires %s)", time.Now().Format("15:04:05.000"), e.Addr, e.ExpiresOn.Format("15:04:05.000"))
		}
	}})
	t.Cleanup(func() { r.h.Close() })
	r.opt = &redis.Options{Addr: r.gw.Addr(), Dialer: dial}
	return r
}

func TestFullDuplexOptionSet(t *testing.T) {
	assert.True(t, fullDuplex(&redis.Options{AutoPipelineOptions: &redis.AutoPipelineOptions{FullDuplex: true}}))
	assert.False(t, fullDuplex(&redis.Options{AutoPipelineOptions: &redis.AutoPipelineOptions{MaxBatchSize: 10}}))
	assert.False(t, fullDuplex(&redis.Options{}))
}

// A client whose options ask for the full-duplex autopipeliner has no hook (see
// TestFullDuplexAutoPipeline): the dialer does the hook's dial checks. With no token to be had, a
// command through the autopipeliner and one through the client fail with the provider's error,
// and nothing reaches the server: not one connection.
func TestFullDuplexOptionsDialChecks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var mu sync.Mutex
	accepted := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted++
			mu.Unlock()
			c.Close()
		}
	}()
	p, err := provider.New(noCred{}, nil)
	require.NoError(t, err)
	defer p.Close()
	rdb := NewClient(p, &redis.Options{Addr: ln.Addr().String(), MaxRetries: -1,
		AutoPipelineOptions: &redis.AutoPipelineOptions{FullDuplex: true}})
	defer rdb.Close()
	require.True(t, fullDuplex(rdb.Options()))
	ap, err := rdb.AutoPipeline()
	require.NoError(t, err)
	defer ap.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	assert.ErrorIs(t, ap.Get(ctx, "k").Err(), provider.ErrTokenUnavailable)
	assert.ErrorIs(t, rdb.Get(ctx, "k").Err(), provider.ErrTokenUnavailable)
	mu.Lock()
	defer mu.Unlock()
	assert.Zero(t, accepted, "no connection without a token")
}

// TestFullDuplexNodeClients: a cluster or failover client whose options ask for the full-duplex
// autopipeliner gets no hook on its node clients either (go-redis v9.24 runs a cluster's as one
// full-duplex engine per master node client), and one without gets it. Seen from a hook added
// after the wiring, which stops each command there: with the hook before it, BLPOP 0 arrives
// split into a block that ends before the token must be renewed.
func TestFullDuplexNodeClients(t *testing.T) {
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: time.Hour})
	require.NoError(t, err)
	p, err := provider.New(iss, nil)
	require.NoError(t, err)
	defer p.Close()
	fd := &redis.AutoPipelineOptions{FullDuplex: true}
	for _, tc := range []struct {
		name string
		make func(opts *redis.AutoPipelineOptions, probe redis.Hook) redis.UniversalClient
	}{
		{"cluster", func(opts *redis.AutoPipelineOptions, probe redis.Hook) redis.UniversalClient {
			c := NewClusterClient(p, &redis.ClusterOptions{AutoPipelineOptions: opts, MaxRedirects: -1,
				ClusterSlots: func(context.Context) ([]redis.ClusterSlot, error) {
					return []redis.ClusterSlot{{Start: 0, End: 16383, Nodes: []redis.ClusterNode{{Addr: "127.0.0.1:1"}}}}, nil
				}})
			c.OnNewNode(func(n *redis.Client) { n.AddHook(probe) }) // after the node client is made, and wired
			return c
		}},
		{"failover", func(opts *redis.AutoPipelineOptions, probe redis.Hook) redis.UniversalClient {
			c := NewFailoverClient(p, &redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}, AutoPipelineOptions: opts})
			c.AddHook(probe)
			return c
		}},
	} {
		for _, opts := range []*redis.AutoPipelineOptions{nil, fd} {
			t.Run(fmt.Sprintf("%s/full duplex %t", tc.name, opts != nil), func(t *testing.T) {
				var seen []any
				stop := errors.New("stopped by the probe")
				c := tc.make(opts, argsHook(func(cmd redis.Cmder) {
					if cmd.Name() == "blpop" {
						seen = append(seen, cmd.Args()[2])
					}
					cmd.SetErr(stop)
				}).stopping(stop))
				defer c.Close()
				err := c.BLPop(context.Background(), 0, "q").Err()
				require.ErrorIs(t, err, stop)
				require.Len(t, seen, 1)
				if opts != nil {
					assert.Equal(t, int64(0), seen[0], "no hook: BLPOP 0 as the caller sent it")
				} else {
					assert.NotEqual(t, int64(0), seen[0], "the hook split BLPOP 0 into a shorter block")
				}
			})
		}
	}
}

// TestFullDuplexCluster: a cluster client whose options ask for the full-duplex autopipeliner
// (go-redis v9.24: one full-duplex engine per master node client, which have no hook then) through
// 3 rotations of 3 s tokens, TLS gateways in front of 3 masters that close connections at expiry,
// go-redis timeouts of 200 ms: the guard alone renews the engines' connections in place.
// Measured: INCRs acknowledged per key against the server's counters, wrong replies, errors,
// renewals in place, retirements, closes at expiry.
func TestFullDuplexCluster(t *testing.T) {
	testutil.Slow(t)
	r := newClusterRig(t, prodLife)
	iss, ca, cl, p, h := r.iss, r.ca, r.cl, r.p, r.h
	rdb := NewClusterClient(h, &redis.ClusterOptions{Addrs: cl.Addrs(), TLSConfig: ca.ClientTLSConfig(),
		ReadTimeout: prodTimeout, WriteTimeout: prodTimeout, AutoPipelineOptions: &redis.AutoPipelineOptions{FullDuplex: true}})
	defer rdb.Close()
	ap, err := rdb.AutoPipeline()
	require.NoError(t, err)
	defer ap.Close()
	require.True(t, ap.Config().FullDuplex)
	ctx := context.Background()

	acked, errs, wrong := incrEach(ctx, ap, "fdc", 16, func() { waitRotations(t, p, iss.Lifetime(), 3) }) // keys spread over the masters by slot
	st, gw := h.Stats(), cl.Stats()
	var total int64
	for _, n := range acked {
		total += n
	}
	t.Logf("cluster, full duplex from the options: INCRs acknowledged %d; renewed in place %d (idle %d); retired %d; closes at expiry %d; errors %d %q; wrong replies %d",
		total, st.Reauths, st.IdleReauths, st.ConnsRetired, gw.ExpiryCloses, len(errs), errs, len(wrong))
	assert.Empty(t, wrong, "every reply the previous one plus one")
	assert.Empty(t, errs)
	assert.Zero(t, gw.ExpiryCloses)
	assert.NotZero(t, st.Reauths, "renewed in place between the engines' commands")
	for w, n := range acked {
		v, err := rdb.Get(ctx, fmt.Sprintf("fdc:%d", w)).Int64()
		require.NoError(t, err)
		assert.Equal(t, n, v, "fdc:%d: server counter vs acknowledged INCRs", w)
	}
}

// incrEach runs workers goroutines, each INCRing its own key (prefix:i) through ap until during
// returns; it returns the INCRs acknowledged per worker, the first errors, and the replies that
// were not the previous one plus one.
func incrEach(ctx context.Context, ap *redis.AutoPipeliner, prefix string, workers int, during func()) (acked []int64, errs, wrong []string) {
	acked, last := make([]int64, workers), make([]int64, workers)
	var mu sync.Mutex
	loopEach(workers, during, func(w int) {
		key := fmt.Sprintf("%s:%d", prefix, w)
		n, err := ap.Incr(ctx, key).Result()
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			if len(errs) < 5 {
				errs = append(errs, err.Error())
			}
			return
		case n != last[w]+1:
			wrong = append(wrong, fmt.Sprintf("%s: %s %d after %d", key, time.Now().Format("15:04:05.000"), n, last[w]))
		default:
			acked[w]++
		}
		last[w] = n
	})
	return acked, errs, wrong
}

// loopEach runs workers goroutines, each calling step with its number over and over until during
// returns.
func loopEach(workers int, during func(), step func(w int)) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					step(w)
				}
			}
		})
	}
	during()
	close(stop)
	wg.Wait()
}

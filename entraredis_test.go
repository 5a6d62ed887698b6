package entraredis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/internal/acltest"
	"github.com/entraredis/entraredis/internal/canary"
	"github.com/entraredis/entraredis/internal/testutil"
	"github.com/entraredis/entraredis/provider"
)

// newProvider returns a provider on env's credential, closed by t.Cleanup.
func newProvider(t *testing.T, env *acltest.Env) *provider.Provider {
	t.Helper()
	p, err := provider.New(env, nil)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// offlineProvider is a provider that is never asked for a token.
func offlineProvider(t *testing.T) *provider.Provider {
	t.Helper()
	p, err := provider.New(noCred{}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

type noCred struct{}

func (noCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, errors.New("this test asks for no token")
}

// rejected mints tokens the servers do not know.
type rejected struct{ env *acltest.Env }

func (r rejected) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, exp, err := r.env.Issuer().Mint(time.Hour)
	return azcore.AccessToken{Token: tok, ExpiresOn: exp}, err
}

// wrongUse is one misuse of a constructor: its first argument (the provider, or a hook when
// viaHook) and its options.
type wrongUse struct {
	p          *provider.Provider
	h          *hook.Hook
	viaHook    bool
	user, pass string
	nilOpts    bool
}

// call calls a constructor with the provider or the hook of u.
func call[O any](u wrongUse, withP func(*provider.Provider, *O), withH func(*hook.Hook, *O), o *O) {
	if u.nilOpts {
		o = nil
	}
	if u.viaHook {
		withH(u.h, o)
	} else {
		withP(u.p, o)
	}
}

func TestConstructorsRejectWrongUse(t *testing.T) {
	p := offlineProvider(t)
	build := map[string]func(u wrongUse){
		"NewClient": func(u wrongUse) {
			call(u, func(p *provider.Provider, o *redis.Options) { NewClient(p, o) }, func(h *hook.Hook, o *redis.Options) { NewClient(h, o) },
				&redis.Options{Addr: "127.0.0.1:1", Username: u.user, Password: u.pass})
		},
		"NewClusterClient": func(u wrongUse) {
			call(u, func(p *provider.Provider, o *redis.ClusterOptions) { NewClusterClient(p, o) }, func(h *hook.Hook, o *redis.ClusterOptions) { NewClusterClient(h, o) },
				&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, Username: u.user, Password: u.pass})
		},
		"NewRing": func(u wrongUse) {
			call(u, func(p *provider.Provider, o *redis.RingOptions) { NewRing(p, o) }, func(h *hook.Hook, o *redis.RingOptions) { NewRing(h, o) },
				&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}, Username: u.user, Password: u.pass})
		},
		"NewFailoverClient": func(u wrongUse) {
			call(u, func(p *provider.Provider, o *redis.FailoverOptions) { NewFailoverClient(p, o) }, func(h *hook.Hook, o *redis.FailoverOptions) { NewFailoverClient(h, o) },
				&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}, Username: u.user, Password: u.pass})
		},
		"NewFailoverClusterClient": func(u wrongUse) {
			call(u, func(p *provider.Provider, o *redis.FailoverOptions) { NewFailoverClusterClient(p, o) }, func(h *hook.Hook, o *redis.FailoverOptions) { NewFailoverClusterClient(h, o) },
				&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}, Username: u.user, Password: u.pass})
		},
		"NewUniversalClient": func(u wrongUse) {
			call(u, func(p *provider.Provider, o *redis.UniversalOptions) { NewUniversalClient(p, o) }, func(h *hook.Hook, o *redis.UniversalOptions) { NewUniversalClient(h, o) },
				&redis.UniversalOptions{Addrs: []string{"127.0.0.1:1"}, Username: u.user, Password: u.pass})
		},
	}
	h := hook.New(p, nil)
	cases := []struct {
		name string
		use  wrongUse
		text string // what the panic must say, after "entraredis: <constructor>: "
	}{
		{"nil provider", wrongUse{}, "the provider is nil: create one with provider.New"},
		{"nil hook", wrongUse{viaHook: true}, "the hook is nil or was not made by hook.New: pass hook.New(p, opts)"},
		{"hook not made by hook.New", wrongUse{viaHook: true, h: &hook.Hook{}}, "the hook is nil or was not made by hook.New"},
		{"nil options", wrongUse{p: p, nilOpts: true}, "the options are nil: pass the cache's address"},
		{"nil options with a hook", wrongUse{h: h, viaHook: true, nilOpts: true}, "the options are nil"},
		{"password set", wrongUse{p: p, pass: "secret"}, "Password is set, but the Entra ID token is the password: remove it"},
		{"username set", wrongUse{h: h, viaHook: true, user: "someone"}, "Username is set, but the username is the token's oid claim: remove it"},
	}
	for fn, b := range build {
		for _, tc := range cases {
			t.Run(fn+"/"+tc.name, func(t *testing.T) {
				v := func() (v any) {
					defer func() { v = recover() }()
					b(tc.use)
					return nil
				}()
				msg, ok := v.(string)
				require.True(t, ok, "panics with a string, got %#v", v)
				assert.True(t, strings.HasPrefix(msg, "entraredis: "+fn+": "), "panic %q names the package and the constructor", msg)
				assert.Contains(t, msg, tc.text)
			})
		}
	}
}

func TestConstructorsRejectOtherCredentialProviders(t *testing.T) {
	p := offlineProvider(t)
	for name, o := range map[string]*redis.Options{
		"CredentialsProvider":          {CredentialsProvider: func() (string, string) { return "", "" }},
		"CredentialsProviderContext":   {CredentialsProviderContext: p.CredentialsProviderContext},
		"StreamingCredentialsProvider": {StreamingCredentialsProvider: p},
	} {
		assert.PanicsWithValue(t, "entraredis: NewClient: "+name+" is set, but the Entra ID provider supplies the credentials: remove it",
			func() { NewClient(p, o) }, name)
	}
}

func TestIsAzureHostAndTLSDefaults(t *testing.T) {
	for host, want := range map[string]bool{
		"mycache.redis.cache.windows.net:6380":             true,
		"MyCache.Redis.Cache.Windows.Net":                  true,
		"mycache.privatelink.redis.cache.windows.net:6380": true,
		"mycache.redis.cache.usgovcloudapi.net:6380":       true,
		"mycache.redis.cache.chinacloudapi.cn:6380":        true,
		"mycache.westeurope.redis.azure.net:10000":         true,
		"mycache.westeurope.redis.azure.net.:10000":        true,
		"mycache.eastus.redisenterprise.cache.azure.net":   true,
		"mycache.usgovvirginia.redis.usgovcloudapi.net":    true,
		"redis.cache.windows.net":                          false,
		"evil-redis.cache.windows.net.example.com:6380":    false,
		"mycache.redis.cache.windows.net.attacker.io:6380": false,
		"127.0.0.1:6379":   false,
		"[::1]:6379":       false,
		"localhost:6380":   false,
		"example.com:6380": false,
	} {
		assert.Equal(t, want, IsAzureHost(host), host)
	}

	p := offlineProvider(t)
	const host = "mycache.redis.cache.windows.net"
	t.Run("client", func(t *testing.T) {
		c := NewClient(p, &redis.Options{Addr: host + ":6380", Dialer: noDial(t)})
		defer c.Close()
		cfg := c.Options().TLSConfig
		require.NotNil(t, cfg)
		assert.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion)
		assert.Equal(t, host, cfg.ServerName)
	})
	t.Run("loopback stays plain", func(t *testing.T) {
		c := NewClient(p, &redis.Options{Addr: "127.0.0.1:6379"})
		defer c.Close()
		assert.Nil(t, c.Options().TLSConfig)
	})
	t.Run("the caller's TLSConfig is kept", func(t *testing.T) {
		mine := &tls.Config{MinVersion: tls.VersionTLS13}
		c := NewClient(p, &redis.Options{Addr: host + ":6380", TLSConfig: mine, Dialer: noDial(t)})
		defer c.Close()
		assert.Same(t, mine, c.Options().TLSConfig)
	})
	t.Run("cluster", func(t *testing.T) {
		c := NewClusterClient(p, &redis.ClusterOptions{Addrs: []string{"c.westeurope.redis.azure.net:10000"}, Dialer: noDial(t)})
		defer c.Close()
		require.NotNil(t, c.Options().TLSConfig)
		assert.Equal(t, "c.westeurope.redis.azure.net", c.Options().TLSConfig.ServerName)
	})
	t.Run("ring of several hosts: server name from each address", func(t *testing.T) {
		c := NewRing(p, &redis.RingOptions{Addrs: map[string]string{"a": "a.redis.cache.windows.net:6380", "b": "b.redis.cache.windows.net:6380"}, Dialer: noDial(t)})
		defer c.Close()
		cfg := c.Options().TLSConfig
		require.NotNil(t, cfg)
		assert.Empty(t, cfg.ServerName)
	})
	t.Run("failover: Sentinels on Azure hosts", func(t *testing.T) {
		o := &redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{host + ":26379"}, Dialer: noDial(t)}
		for name, c := range map[string]interface{ Options() *redis.Options }{
			"NewFailoverClient":  NewFailoverClient(p, o),
			"NewUniversalClient": NewUniversalClient(p, &redis.UniversalOptions{MasterName: "m", Addrs: o.SentinelAddrs, Dialer: noDial(t)}).(*redis.Client),
		} {
			cfg := c.Options().TLSConfig
			if assert.NotNil(t, cfg, name) {
				assert.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion, name)
				assert.Equal(t, host, cfg.ServerName, name)
			}
			require.NoError(t, c.(interface{ Close() error }).Close())
		}
		fc := NewFailoverClusterClient(p, o)
		defer fc.Close()
		require.NotNil(t, fc.Options().TLSConfig, "NewFailoverClusterClient")
		assert.Equal(t, host, fc.Options().TLSConfig.ServerName)
	})
	t.Run("mixed hosts stay as configured", func(t *testing.T) {
		c := NewClusterClient(p, &redis.ClusterOptions{Addrs: []string{host + ":6380", "127.0.0.1:7000"}, Dialer: noDial(t)})
		defer c.Close()
		assert.Nil(t, c.Options().TLSConfig)
	})
}

// noDial fails the test if a client dials: these tests name Azure hosts, and nothing may leave
// the machine.
func noDial(t *testing.T) func(context.Context, string, string) (net.Conn, error) {
	return func(_ context.Context, _, addr string) (net.Conn, error) {
		t.Errorf("dialled %s: tests must not leave loopback", addr)
		return nil, errors.New("no dialling in this test")
	}
}

// TestUserOptionsAreKept: pool size, OnConnect, the caller's own hooks and NewClient.
func TestUserOptionsAreKept(t *testing.T) {
	env := acltest.Start(t, &acltest.Options{Lifetime: time.Hour})
	p := newProvider(t, env)
	var connects atomic.Int32
	opt := &redis.Options{Addr: env.Addr(), PoolSize: 3, OnConnect: func(ctx context.Context, cn *redis.Conn) error {
		connects.Add(1)
		return nil
	}}
	c := NewClient(p, opt)
	defer c.Close()
	assert.Nil(t, opt.CredentialsProviderContext, "the caller's options are not modified")
	assert.Equal(t, 3, c.Options().PoolSize)
	var seen atomic.Int32
	c.AddHook(countHook{&seen})
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	assert.Equal(t, int32(1), connects.Load())
	assert.Positive(t, seen.Load())

	var made atomic.Int32
	cl := NewClusterClient(p, &redis.ClusterOptions{Addrs: []string{env.Addr()}, NewClient: func(o *redis.Options) *redis.Client {
		made.Add(1)
		return redis.NewClient(o)
	}})
	defer cl.Close()
	_ = cl.Ping(ctx).Err() // not a cluster: the node client is made all the same
	assert.Positive(t, made.Load(), "the caller's NewClient is used for node clients")
}

type countHook struct{ n *atomic.Int32 }

func (h countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// result of a load run.
type result struct {
	acked   map[string]int64
	errs    int64
	samples []string
	ops     int64
}

// incrLoad runs workers goroutines sending INCR (each on keys[i%len(keys)]) for d, alone, in
// pipelines and in MULTI/EXEC.
func incrLoad(rdb redis.UniversalClient, keys []string, workers int, d time.Duration) result {
	ctx := context.Background()
	acked := make([]atomic.Int64, len(keys))
	var errs, ops atomic.Int64
	var mu sync.Mutex
	var samples []string
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := i % len(keys)
			for time.Now().Before(deadline) {
				ops.Add(1)
				// A quarter of the workers pipeline two INCRs, a quarter send MULTI/EXEC:
				// pipelines have a connection pool of their own.
				var err error
				n := int64(1)
				switch i % 4 {
				case 2:
					n = 2
					_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
						p.Incr(ctx, keys[k])
						p.Incr(ctx, keys[k])
						return nil
					})
				case 3:
					_, err = rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
						p.Incr(ctx, keys[k])
						return nil
					})
				default:
					err = rdb.Incr(ctx, keys[k]).Err()
				}
				if err != nil {
					errs.Add(1)
					mu.Lock()
					if len(samples) < 5 {
						samples = append(samples, err.Error())
					}
					mu.Unlock()
					continue
				}
				acked[k].Add(n)
			}
		}()
	}
	wg.Wait()
	r := result{acked: map[string]int64{}, errs: errs.Load(), samples: samples, ops: ops.Load()}
	for i, k := range keys {
		r.acked[k] = acked[i].Load()
	}
	return r
}

// checkCounters compares each key's value with the acknowledged INCRs.
func checkCounters(t *testing.T, rdb redis.UniversalClient, r result) {
	t.Helper()
	for k, n := range r.acked {
		v, err := rdb.Get(context.Background(), k).Int64()
		require.NoError(t, err)
		assert.Equal(t, n, v, "key %s: value vs acknowledged INCRs", k)
	}
}

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "counter:" + strconv.Itoa(i)
	}
	return out
}

// rig is a set of servers enforcing Entra-like authentication and the credential they accept.
type rig struct {
	cred      azcore.TokenCredential
	minted    func() int64    // tokens handed out so far
	closes    func() int64    // connections the servers closed because their token expired
	tokens    func() []string // every token handed out
	newClient func(h *hook.Hook, poolSize int) redis.UniversalClient
	nodes     int64
	addr      string      // a standalone rig's address
	tls       *tls.Config // and its client TLS configuration
	// canary starts a connection that the server must close at its token's expiry (life); nil
	// where the server is not entratest's gateway.
	canary func(t *testing.T) *canary.Canary
}

// recorder remembers the tokens a credential hands out.
type recorder struct {
	azcore.TokenCredential
	mu   sync.Mutex
	toks []string
}

func (r *recorder) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	at, err := r.TokenCredential.GetToken(ctx, o)
	if err == nil {
		r.mu.Lock()
		r.toks = append(r.toks, at.Token)
		r.mu.Unlock()
	}
	return at, err
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.toks...)
}

func (r *recorder) count() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return int64(len(r.toks))
}

// gatewayRig: entratest's Entra emulator over TLS, as on Azure: a connection is closed when the
// token that authenticated it expires, a stale token gets "ERR WRONGPASS", every token has the
// same oid.
func gatewayRig(t *testing.T, cluster bool, life time.Duration) *rig {
	t.Helper()
	k, err := acltest.Key()
	require.NoError(t, err)
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: life, Key: k})
	require.NoError(t, err)
	ca, err := entratest.NewTestCA()
	require.NoError(t, err)
	srvTLS, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	rec := &recorder{TokenCredential: iss}
	r := &rig{cred: rec, minted: rec.count, tokens: rec.all, nodes: 1}
	clientTLS := ca.ClientTLSConfig()
	if cluster {
		c := entratest.StartCluster(t, iss, &entratest.ClusterOptions{Gateway: &entratest.GatewayOptions{TLS: srvTLS}})
		r.nodes = 3
		r.closes = func() int64 { return c.Stats().ExpiryCloses }
		r.canary = func(t *testing.T) *canary.Canary { return canary.Start(t, iss, c.Addrs()[0], clientTLS, life) }
		r.newClient = func(h *hook.Hook, poolSize int) redis.UniversalClient {
			return NewClusterClient(h, &redis.ClusterOptions{Addrs: c.Addrs(), PoolSize: poolSize, TLSConfig: clientTLS})
		}
		return r
	}
	srv := entratest.StartRedis(t, nil)
	gw := entratest.StartGateway(t, iss, srv.Addr(), &entratest.GatewayOptions{TLS: srvTLS})
	r.addr, r.tls = gw.Addr(), clientTLS
	r.closes = func() int64 { return gw.Stats().ExpiryCloses }
	r.canary = func(t *testing.T) *canary.Canary { return canary.Start(t, iss, gw.Addr(), clientTLS, life) }
	r.newClient = func(h *hook.Hook, poolSize int) redis.UniversalClient {
		return NewClient(h, &redis.Options{Addr: gw.Addr(), PoolSize: poolSize, TLSConfig: clientTLS})
	}
	return r
}

// aclRig: real redis-servers whose ACL mirrors the tokens (package acltest), over plain TCP.
func aclRig(t *testing.T, kind string, opts *acltest.Options) *rig {
	t.Helper()
	var env *acltest.Env
	r := &rig{nodes: 1}
	switch kind {
	case "ring":
		opts.Servers = 2
		env = acltest.Start(t, opts)
		r.nodes = 2
		r.newClient = func(h *hook.Hook, poolSize int) redis.UniversalClient {
			return NewRing(h, &redis.RingOptions{Addrs: map[string]string{"a": env.Addrs()[0], "b": env.Addrs()[1]}, PoolSize: poolSize})
		}
	default:
		env = acltest.Start(t, opts)
		r.newClient = func(h *hook.Hook, poolSize int) redis.UniversalClient {
			return NewClient(h, &redis.Options{Addr: env.Addr(), PoolSize: poolSize})
		}
	}
	r.cred = env
	r.minted = func() int64 { return env.Stats().Minted }
	r.closes = func() int64 { return env.Stats().ConnsClosed }
	r.tokens = env.Tokens
	return r
}

// TestRotation: 16 goroutines send INCR through token rotations of 2-3 s tokens; at each expiry the
// server closes the connections still on the expired token and refuses it from then on, as Azure
// does. No error reaches the caller, the counters equal the acknowledged replies, no connection
// is left for the server to close, and rotations cost at most a pool of new connections.
func TestRotation(t *testing.T) {
	testutil.Slow(t)
	life := 2 * time.Second
	for _, tc := range []struct {
		name string
		dur  time.Duration
		rig  func(t *testing.T) *rig
	}{
		{"Entra emulator over TLS", 8 * time.Second, func(t *testing.T) *rig { return gatewayRig(t, false, life) }},
		{"Entra emulator over TLS, cluster of 3 masters", 8 * time.Second, func(t *testing.T) *rig { return gatewayRig(t, true, life) }},
		{"ACL, connections closed at expiry", 4 * time.Second, func(t *testing.T) *rig { return aclRig(t, "", &acltest.Options{Lifetime: life}) }},
		{"ACL, connections left open", 4 * time.Second, func(t *testing.T) *rig { return aclRig(t, "", &acltest.Options{Lifetime: life, NoKill: true}) }},
		{"ACL, ring of 2 shards", 4 * time.Second, func(t *testing.T) *rig { return aclRig(t, "ring", &acltest.Options{Lifetime: life}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dur := tc.dur
			if testing.Short() {
				dur = min(dur, 4*time.Second)
			}
			testRotation(t, tc.name, tc.rig(t), dur)
		})
	}
}

func testRotation(t *testing.T, name string, r *rig, dur time.Duration) {
	const (
		workers  = 16
		poolSize = 8
	)
	base := runtime.NumGoroutine()
	var logs testutil.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := provider.New(r.cred, &provider.Options{Logger: logger})
	require.NoError(t, err)
	h := hook.New(p, &hook.Options{Logger: logger})
	rdb := r.newClient(h, poolSize)
	ctx := context.Background()
	ks := keys(workers)
	incrLoad(rdb, ks, workers, 300*time.Millisecond) // fills the pool
	for _, k := range ks {
		require.NoError(t, rdb.Del(ctx, k).Err())
	}
	warm, minted, closes := h.Stats().Dials, r.minted(), r.closes()
	var cn *canary.Canary
	if r.canary != nil {
		cn = r.canary(t)
	}

	res := incrLoad(rdb, ks, workers, dur)
	st := h.Stats()
	rotations := r.minted() - minted
	canaryLate := "none: the server is not the gateway"
	if cn != nil {
		canaryLate = cn.Wait(t).Round(time.Millisecond).String() + " after its expiry"
	}
	closed := r.closes() - closes
	if cn != nil {
		closed-- // the canary's
	}
	perRotation := float64(st.Dials-warm) / float64(max(rotations, 1))
	t.Logf("%s: %d operations (INCR, pipelines of 2 INCR, MULTI/EXEC) in %s by %d goroutines, %d errors %v; %d rotations, %d connections closed by the server at expiry; hook: %d connections renewed in place, %d retries (%d after auth errors), %d connections retired by the guard, %d dials after warm-up (%.1f per rotation, pool %d x %d nodes), %d gave up",
		name, res.ops, dur, workers, res.errs, res.samples, rotations, closed,
		st.Reauths, st.Retries, st.AuthRetries, st.ConnsRetired, st.Dials-warm, perRotation, poolSize, r.nodes, st.GaveUp)
	t.Logf("%s: the server closed an idle canary connection %s", name, canaryLate)

	assert.Zero(t, res.errs, "errors reached the caller: %v", res.samples)
	assert.GreaterOrEqual(t, rotations, int64(2), "the test must span token rotations")
	checkCounters(t, rdb, res)
	assert.LessOrEqual(t, perRotation, float64(int64(poolSize)*r.nodes), "new connections per rotation")
	if r.nodes == 1 {
		// With 16 goroutines on a pool of 8 every connection is in use, so each is renewed in
		// time. Spread over several nodes some sit idle through an expiry and the server closes
		// them; the guard then retires them at their next use, before sending anything. The
		// canary shows that the server would have closed any connection left on an expired token.
		assert.Zero(t, closed, "connections left for the server to close")
	}
	assert.Positive(t, st.Reauths, "connections are renewed in place (the hook is where they are)")
	out := logs.String()
	for i, tok := range r.tokens() {
		assert.False(t, strings.Contains(out, tok), "token %d appears in the logs", i)
	}

	require.NoError(t, rdb.Close())
	require.NoError(t, h.Close())
	require.NoError(t, p.Close())
	testutil.WaitGoroutines(t, base)
}

// TestRevokedToken: the server stops accepting the provider's current token out of band. The hook
// refreshes and the command succeeds, with or without the token's connections being closed.
func TestRevokedToken(t *testing.T) {
	for _, kill := range []bool{false, true} {
		t.Run(fmt.Sprintf("connections closed: %v", kill), func(t *testing.T) {
			env := acltest.Start(t, &acltest.Options{Lifetime: time.Hour})
			p := newProvider(t, env)
			h := hook.New(p, nil)
			rdb := NewClient(h, &redis.Options{Addr: env.Addr(), PoolSize: 2})
			defer rdb.Close()
			ctx := context.Background()
			require.NoError(t, rdb.Set(ctx, "n", 0, 0).Err())

			_, tok, err := p.CredentialsProviderContext(ctx)
			require.NoError(t, err)
			env.Revoke(tok, kill)
			if !kill {
				// The open connection is still authenticated: make the next command need a new one.
				require.NoError(t, rdb.Close())
				rdb = NewClient(h, &redis.Options{Addr: env.Addr(), PoolSize: 2})
			}
			n, err := rdb.Incr(ctx, "n").Result()
			require.NoError(t, err)
			assert.Equal(t, int64(1), n, "applied once")
			_, tok2, err := p.CredentialsProviderContext(ctx)
			require.NoError(t, err)
			assert.False(t, tok == tok2, "the provider holds a new token")
			assert.Equal(t, uint64(1), h.Stats().AuthRetries)
		})
	}
}

// TestRejectedEveryTime: a credential whose tokens the server never accepts: the hook refreshes
// once, and when the new token is refused too, stops and returns the server's answer explained
// (hook.ErrTokenRefused), without sending the command again.
func TestRejectedEveryTime(t *testing.T) {
	env := acltest.Start(t, &acltest.Options{Lifetime: time.Hour})
	p, err := provider.New(rejected{env}, nil)
	require.NoError(t, err)
	defer p.Close()
	h := hook.New(p, &hook.Options{MaxRetries: 2})
	rdb := NewClient(h, &redis.Options{Addr: env.Addr()})
	defer rdb.Close()
	err = rdb.Ping(context.Background()).Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "WRONGPASS")
	assert.ErrorIs(t, err, hook.ErrTokenRefused)
	st := h.Stats()
	assert.Equal(t, uint64(1), st.AuthRetries)
	assert.Equal(t, uint64(1), st.Refused)
	assert.False(t, errors.Is(err, hook.ErrConnRetired))
}

// TestPubSubSurvivesExpiry: a subscriber keeps receiving across token rotations while a publisher
// sends every 50 ms. Over RESP3 the guard re-authenticates the subscribed connection in place;
// over RESP2 it must reconnect it (go-redis re-subscribes), before the server would. The server is
// entratest's Entra emulator over TLS, which closes a connection when its token expires.
func TestPubSubSurvivesExpiry(t *testing.T) {
	testutil.Slow(t)
	for _, proto := range []int{3, 2} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			r := gatewayRig(t, false, prodLife)
			base := runtime.NumGoroutine()
			p, err := provider.New(r.cred, nil)
			require.NoError(t, err)
			h := hook.New(p, nil)
			sub := NewClient(h, prodRatio(&redis.Options{Addr: r.addr, TLSConfig: r.tls, Protocol: proto}))
			pub := NewClient(h, prodRatio(&redis.Options{Addr: r.addr, TLSConfig: r.tls, Protocol: proto}))
			ctx := context.Background()
			ps := sub.Subscribe(ctx, "news")
			_, err = ps.Receive(ctx) // the subscription's confirmation
			require.NoError(t, err)
			msgs := ps.Channel()

			received := map[int]bool{}
			var rmu sync.Mutex
			done := make(chan struct{})
			go func() {
				defer close(done)
				for m := range msgs {
					n, _ := strconv.Atoi(m.Payload)
					rmu.Lock()
					received[n] = true
					rmu.Unlock()
				}
			}()

			minted, closes := r.minted(), r.closes()
			info, ok := p.Token()
			require.True(t, ok)
			cn := r.canary(t)
			var sent, pubErrs, noReceiver int
			// Publish until the subscriber's first token has expired and two new tokens came:
			// counted, not timed, so that a slow machine only makes the run longer (the cap is for
			// a subscriber that never gets there).
			start := time.Now()
			limit := start.Add(30 * time.Second)
			tick := time.NewTicker(50 * time.Millisecond)
			for !time.Now().After(info.ExpiresOn.Add(500*time.Millisecond)) || r.minted()-minted < 2 {
				require.True(t, time.Now().Before(limit), "within 30 s: the first token's expiry and 2 rotations (%d)", r.minted()-minted)
				<-tick.C
				n, err := pub.Publish(ctx, "news", strconv.Itoa(sent)).Result()
				if err != nil {
					pubErrs++
				} else if n == 0 {
					noReceiver++
				}
				sent++
			}
			tick.Stop()
			dur := time.Since(start).Round(time.Millisecond)
			rotations := r.minted() - minted
			// Let the last messages arrive.
			require.Eventually(t, func() bool {
				rmu.Lock()
				defer rmu.Unlock()
				return received[sent-1]
			}, 5*time.Second, 10*time.Millisecond, "the subscriber still receives after %d rotations", rotations)
			rmu.Lock()
			lost := sent - len(received)
			rmu.Unlock()
			st := h.Stats()
			canaryLate := cn.Wait(t)
			// The gateway counts the canary's close just after closing it: wait for the count.
			require.Eventually(t, func() bool { return r.closes()-closes >= 1 }, 5*time.Second, 5*time.Millisecond)
			closed := r.closes() - closes - 1 // but the canary's
			t.Logf("RESP%d: %d messages published every 50 ms over %s, %d lost (%.2f per rotation, %d rotations; %d published with no subscriber), %d publish errors; pub/sub connections renewed in place %d, moved %d, reconnected %d; %d connections closed by the server at expiry (and the idle canary, %s after its expiry)",
				proto, sent, dur, lost, float64(lost)/float64(max(rotations, 1)), rotations, noReceiver, pubErrs,
				st.PubSubReauths, st.PubSubMoved, st.PubSubClosed, closed, canaryLate.Round(time.Millisecond))

			assert.Zero(t, pubErrs)
			assert.GreaterOrEqual(t, rotations, int64(2))
			// The subscriber is renewed in place (RESP3) or reconnected by the guard before its
			// token expires (RESP2), and the publisher is renewed at each request: the server, which
			// closed the canary, closes none of them.
			assert.Zero(t, closed, "connections the server closed at expiry")
			if proto == 3 {
				assert.Zero(t, lost, "renewed in place: nothing lost")
				assert.Positive(t, st.PubSubReauths)
			} else {
				assert.Positive(t, st.PubSubMoved, "moved to a new connection underneath")
				assert.LessOrEqual(t, float64(lost)/float64(rotations), 2.0, "messages lost per rotation")
			}
			require.NoError(t, ps.Close())
			<-done
			require.NoError(t, sub.Close())
			require.NoError(t, pub.Close())
			require.NoError(t, h.Close())
			require.NoError(t, p.Close())
			testutil.WaitGoroutines(t, base)
		})
	}
}

// TestFailoverAndUniversalClients: the Sentinel and universal constructors authenticate with the
// provider's tokens and carry the hook (a rejected token is recovered from).
func TestFailoverAndUniversalClients(t *testing.T) {
	env := acltest.Start(t, &acltest.Options{Lifetime: time.Hour})
	sentinel := env.StartSentinel(t)
	p := newProvider(t, env)
	ctx := context.Background()
	clients := map[string]redis.UniversalClient{
		"NewFailoverClient":           NewFailoverClient(p, &redis.FailoverOptions{MasterName: "mymaster", SentinelAddrs: []string{sentinel}}),
		"NewFailoverClusterClient":    NewFailoverClusterClient(p, &redis.FailoverOptions{MasterName: "mymaster", SentinelAddrs: []string{sentinel}, RouteRandomly: true}),
		"NewUniversalClient":          NewUniversalClient(p, &redis.UniversalOptions{Addrs: []string{env.Addr()}}),
		"NewUniversalClient/sentinel": NewUniversalClient(p, &redis.UniversalOptions{MasterName: "mymaster", Addrs: []string{sentinel}}),
	}
	for name, c := range clients {
		t.Run(name, func(t *testing.T) {
			defer c.Close()
			key := "n:" + name
			require.NoError(t, c.Set(ctx, key, 0, 0).Err())
			// Revoke the token the client authenticated with and drop its connections: the next
			// command meets WRONGPASS on reconnecting, and the hook recovers.
			_, tok, err := p.CredentialsProviderContext(ctx)
			require.NoError(t, err)
			env.Revoke(tok, true)
			n, err := c.Incr(ctx, key).Result()
			require.NoError(t, err)
			assert.Equal(t, int64(1), n)
		})
	}
	_, ok := NewUniversalClient(p, &redis.UniversalOptions{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}}).(*redis.ClusterClient)
	assert.True(t, ok, "several addresses: a cluster client")
}

// badFirst hands out a token signed by another key first (the server answers "ERR WRONGPASS",
// Azure's form), then the issuer's.
type badFirst struct {
	good, bad *entratest.Issuer
	calls     atomic.Int32
}

func (b *badFirst) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if b.calls.Add(1) == 1 {
		return b.bad.GetToken(ctx, o)
	}
	return b.good.GetToken(ctx, o)
}

// TestAzureWrongPassIsRecovered: Azure answers a stale or foreign token with "ERR WRONGPASS ..."
// (go-redis's IsAuthError does not match it). Through the Entra emulator over TLS, the hook
// recognises it, refreshes, and the command runs once.
func TestAzureWrongPassIsRecovered(t *testing.T) {
	k, err := acltest.Key()
	require.NoError(t, err)
	good, err := entratest.NewIssuer(&entratest.IssuerOptions{Key: k})
	require.NoError(t, err)
	bad, err := entratest.NewIssuer(nil) // its own key: the gateway does not trust it
	require.NoError(t, err)
	ca, err := entratest.NewTestCA()
	require.NoError(t, err)
	srvTLS, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	gw := entratest.StartGateway(t, good, entratest.StartRedis(t, nil).Addr(), &entratest.GatewayOptions{TLS: srvTLS})

	p, err := provider.New(&badFirst{good: good, bad: bad}, nil)
	require.NoError(t, err)
	defer p.Close()
	var events []hook.Event
	h := hook.New(p, &hook.Options{OnEvent: func(e hook.Event) { events = append(events, e) }})
	rdb := NewClient(h, &redis.Options{Addr: gw.Addr(), TLSConfig: ca.ClientTLSConfig()})
	defer rdb.Close()
	n, err := rdb.Incr(context.Background(), "n").Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	assert.Equal(t, uint64(1), h.Stats().AuthRetries)
	require.NotEmpty(t, events)
	assert.Equal(t, hook.EventRetry, events[0].Kind)
	assert.Contains(t, events[0].Err.Error(), "ERR WRONGPASS")
	assert.Equal(t, int64(2), gw.Stats().AuthRefused, "one handshake refused: HELLO AUTH, then go-redis's AUTH fallback")
}

// TestIdleConnectionThroughExpiry: a connection idle in the pool while its token expires would be
// closed by the server, and over TLS go-redis cannot see that before using it. The guard renews
// it in the background with the new token, so the next single command, pipeline or MULTI/EXEC
// goes out on it as usual: no close, no retry, no redial. (Were it not renewed, the guard would
// retire it before sending anything: the hook tests TestGuardRetires*.)
func TestIdleConnectionThroughExpiry(t *testing.T) {
	testutil.Slow(t)
	for name, run := range map[string]func(ctx context.Context, rdb redis.UniversalClient) ([]int64, error){
		"command": func(ctx context.Context, rdb redis.UniversalClient) ([]int64, error) {
			n, err := rdb.Incr(ctx, "n").Result()
			return []int64{n}, err
		},
		"pipeline": func(ctx context.Context, rdb redis.UniversalClient) ([]int64, error) {
			return pipelined(ctx, rdb.Pipeline())
		},
		"MULTI/EXEC": func(ctx context.Context, rdb redis.UniversalClient) ([]int64, error) {
			return pipelined(ctx, rdb.TxPipeline())
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := gatewayRig(t, false, time.Second)
			p, err := provider.New(r.cred, nil)
			require.NoError(t, err)
			defer p.Close()
			h := hook.New(p, nil)
			defer h.Close()
			rdb := r.newClient(h, 1)
			defer rdb.Close()
			ctx := context.Background()
			first, err := run(ctx, rdb) // opens the connection (pipelines have a pool of their own)
			require.NoError(t, err)
			info, ok := p.Token()
			require.True(t, ok)
			for time.Now().Before(info.ExpiresOn.Add(200 * time.Millisecond)) {
				time.Sleep(20 * time.Millisecond) // idle through the first token's expiry
			}

			got, err := run(ctx, rdb)
			require.NoError(t, err)
			assert.Equal(t, int64(2*len(first)), got[len(got)-1], "applied once")
			st := h.Stats()
			t.Logf("idle renewals %d, closes at expiry %d, retired %d, retries %d, dials %d", st.IdleReauths, r.closes(), st.ConnsRetired, st.Retries, st.Dials)
			assert.Positive(t, st.IdleReauths, "renewed while idle")
			assert.Zero(t, r.closes(), "so the server did not close it")
			assert.Zero(t, st.ConnsRetired)
			assert.Zero(t, st.Retries)
			assert.Equal(t, uint64(1), st.Dials, "not redialled")
		})
	}
}

func pipelined(ctx context.Context, pipe redis.Pipeliner) ([]int64, error) {
	cmds := []*redis.IntCmd{pipe.Incr(ctx, "n"), pipe.Incr(ctx, "n"), pipe.Incr(ctx, "n")}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := make([]int64, len(cmds))
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

// TestCredentialsWiring: new connections take CredentialsProviderContext; go-redis's streaming
// re-authentication is set only when the hook's guard, which renews connections, is off.
func TestCredentialsWiring(t *testing.T) {
	p := offlineProvider(t)
	on := NewClient(hook.New(p, nil), &redis.Options{Addr: "127.0.0.1:1"})
	defer on.Close()
	assert.NotNil(t, on.Options().CredentialsProviderContext)
	assert.Nil(t, on.Options().StreamingCredentialsProvider)
	off := NewClient(hook.New(p, &hook.Options{GuardMargin: -1}), &redis.Options{Addr: "127.0.0.1:1"})
	defer off.Close()
	assert.Same(t, p, off.Options().StreamingCredentialsProvider)
}

// fullDuplex reads Options.AutoPipelineOptions.FullDuplex by name (neither exists at the go-redis
// floor): false without them; true and false with them set, in fullduplex_newest_test.go.
func TestFullDuplexOption(t *testing.T) {
	assert.False(t, fullDuplex(&redis.Options{}))
	assert.False(t, fullDuplex(&redis.Options{Addr: "localhost:6379", PoolSize: 3}))
}

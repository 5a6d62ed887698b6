package entraredis

import (
	"context"
	"crypto/tls"
	"maps"
	"net"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/auth"

	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/internal/link"
	"github.com/entraredis/entraredis/provider"
)

// azureSuffixes are the host name suffixes of Azure Cache for Redis and Azure Managed Redis (and
// Enterprise) in the public, US Government, China and sovereign clouds. Azure accepts only TLS
// there. Private Link names (<name>.privatelink.redis.cache.windows.net) end with them too.
var azureSuffixes = []string{
	".redis.cache.windows.net",         // Azure Cache for Redis
	".redis.cache.usgovcloudapi.net",   // ... US Government
	".redis.cache.chinacloudapi.cn",    // ... China (21Vianet)
	".redis.azure.net",                 // Azure Managed Redis
	".redis.usgovcloudapi.net",         // ... US Government
	".redis.chinacloudapi.cn",          // ... China
	".redis.sovcloud-api.fr",           // ... sovereign clouds
	".redis.sovcloud-api.de",           //
	".redis.sovcloud-api.sg",           //
	".redisenterprise.cache.azure.net", // Azure Cache for Redis Enterprise
	".redisenterprise.cache.azure.us",  // ... US Government
}

// IsAzureHost reports whether host (a name, or host:port) is an Azure Cache for Redis or Azure
// Managed Redis endpoint, which the constructors connect to over TLS when no TLSConfig is set.
func IsAzureHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, s := range azureSuffixes {
		if strings.HasSuffix(host, s) && len(host) > len(s) {
			return true
		}
	}
	return false
}

// tlsFor returns the TLS configuration for addrs when all are Azure hosts: TLS 1.2 or later, and
// the server name when they share one (otherwise crypto/tls takes it from each address). Nil
// otherwise: loopback and other hosts are left as configured.
func tlsFor(addrs ...string) *tls.Config {
	if len(addrs) == 0 {
		return nil
	}
	name := ""
	for i, a := range addrs {
		if !IsAzureHost(a) {
			return nil
		}
		h := a
		if hh, _, err := net.SplitHostPort(a); err == nil {
			h = hh
		}
		if i == 0 {
			name = h
		} else if !strings.EqualFold(h, name) {
			name = ""
		}
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name}
}

// A constructor's first argument is the provider, or a hook made from it:
//
//	entraredis.NewClient(p, opt)                                  // the hook with its defaults
//	entraredis.NewClient(hook.New(p, &hook.Options{...}), opt)    // the hook's options, and its Stats
//
// wire turns either into what the constructors install: the provider's credentials and the hook.
// It panics on a nil one, at construction, instead of at the first command.
func wire[P *provider.Provider | *hook.Hook](fn string, p P) wiring {
	switch v := any(p).(type) {
	case *provider.Provider:
		if v == nil {
			panic("entraredis: " + fn + ": the provider is nil: create one with provider.New(cred, nil) or provider.NewDefault(nil, nil)")
		}
		return wiring{h: hook.New(v, nil)}
	case *hook.Hook:
		if v == nil {
			panic("entraredis: " + fn + ": the hook is nil or was not made by hook.New: pass hook.New(p, opts), or the provider itself")
		}
		if cpc, _ := v.Credentials(); cpc == nil {
			panic("entraredis: " + fn + ": the hook is nil or was not made by hook.New: pass hook.New(p, opts), or the provider itself")
		}
		return wiring{h: v}
	}
	panic("entraredis: unreachable: P is *provider.Provider or *hook.Hook")
}

// wiring is the hook to install, with its provider's credentials.
type wiring struct{ h *hook.Hook }

// NewClient returns redis.NewClient(opt) with p's credentials for new connections and the hook
// installed, which renews open connections with each new token and retries what the token's expiry
// made fail (see package hook). p is the provider, for the hook with its default options, or a hook
// made with hook.New(p, opts), to choose its options and read its Stats. An Azure host with no
// TLSConfig gets TLS 1.2+ with its name as ServerName. Everything else in opt (pool, timeouts,
// OnConnect, Dialer) is kept; hooks the caller adds to the client later run inside this one.
//
// When opt.AutoPipelineOptions asks for go-redis's full-duplex autopipeliner (FullDuplex, go-redis
// v9.23+), the client gets no hook, only the guarded dialer: go-redis runs any hook on a goroutine
// of its own per command there (about half the throughput at 64 goroutines), after the command
// was written. The dialer still dials only with a token the cache has not refused, and the guard
// renews connections in place and retires them before expiry; but commands are not sent again
// after an authentication error, and a blocking command (BLPOP 0) is not split before its
// connection's token expires (the server closes the connection then, and go-redis sends it again
// on a new one): run blocking consumers on a client without FullDuplex in its options.
//
// It panics when p or opt is nil, or opt already carries credentials (Username, Password, a
// credentials provider): the panic says what to change.
func NewClient[P *provider.Provider | *hook.Hook](p P, opt *redis.Options) *redis.Client {
	w := wire("NewClient", p)
	if opt == nil {
		panic(nilOptions("NewClient", "&redis.Options{Addr: \"<name>.redis.cache.windows.net:6380\"}"))
	}
	check("NewClient", opt.Username, opt.Password, opt.CredentialsProvider != nil,
		opt.CredentialsProviderContext != nil, opt.StreamingCredentialsProvider != nil)
	return w.newClient(opt)
}

// NewClusterClient returns redis.NewClusterClient(opt) (Azure Managed Redis with the OSS cluster
// policy, a clustered Azure Cache for Redis) with p's credentials and the hook installed on every
// node client (a cluster-level hook never sees a node's connections): through opt.NewClient,
// wrapping the caller's own if set. With FullDuplex in opt.AutoPipelineOptions the node clients
// get only the guarded dialer, as NewClient's client does (go-redis v9.24 runs a cluster's
// full-duplex autopipeliner on them); the same holds for NewFailoverClient and
// NewFailoverClusterClient. p, TLS and panics as in NewClient.
func NewClusterClient[P *provider.Provider | *hook.Hook](p P, opt *redis.ClusterOptions) *redis.ClusterClient {
	w := wire("NewClusterClient", p)
	if opt == nil {
		panic(nilOptions("NewClusterClient", "&redis.ClusterOptions{Addrs: []string{\"<name>.<region>.redis.azure.net:10000\"}}"))
	}
	check("NewClusterClient", opt.Username, opt.Password, opt.CredentialsProvider != nil,
		opt.CredentialsProviderContext != nil, opt.StreamingCredentialsProvider != nil)
	return w.newClusterClient(opt)
}

// NewRing returns redis.NewRing(opt) with p's credentials and the hook on every shard client,
// through opt.NewClient. p, TLS and panics as in NewClient.
func NewRing[P *provider.Provider | *hook.Hook](p P, opt *redis.RingOptions) *redis.Ring {
	w := wire("NewRing", p)
	if opt == nil {
		panic(nilOptions("NewRing", "&redis.RingOptions{Addrs: ...}"))
	}
	check("NewRing", opt.Username, opt.Password, opt.CredentialsProvider != nil,
		opt.CredentialsProviderContext != nil, opt.StreamingCredentialsProvider != nil)
	o := *opt
	w.setCredentials(&o.CredentialsProviderContext, &o.StreamingCredentialsProvider)
	if o.TLSConfig == nil {
		o.TLSConfig = tlsFor(slices.Collect(maps.Values(o.Addrs))...)
	}
	o.NewClient = w.nodeClient(o.NewClient, fullDuplex(&o))
	return redis.NewRing(&o)
}

// NewFailoverClient returns redis.NewFailoverClient(opt), a Sentinel-managed client, with p's
// credentials for the master's connections and the hook installed. The Sentinels themselves keep
// SentinelUsername and SentinelPassword. TLS as in NewClient when every Sentinel address is an
// Azure host; p and panics as in NewClient.
func NewFailoverClient[P *provider.Provider | *hook.Hook](p P, opt *redis.FailoverOptions) *redis.Client {
	return wire("NewFailoverClient", p).newFailoverClient(checkFailover("NewFailoverClient", opt))
}

// NewFailoverClusterClient is NewFailoverClient routing reads to replicas: redis.NewFailoverClusterClient(opt)
// with the hook on every node client (through OnNewNode, as FailoverOptions has no NewClient).
func NewFailoverClusterClient[P *provider.Provider | *hook.Hook](p P, opt *redis.FailoverOptions) *redis.ClusterClient {
	return wire("NewFailoverClusterClient", p).newFailoverClusterClient(checkFailover("NewFailoverClusterClient", opt))
}

// NewUniversalClient chooses the client as redis.NewUniversalClient does (failover with
// MasterName, cluster with several addresses or IsClusterMode, else a single client) and builds it
// as the matching constructor of this package does. p and panics as in NewClient.
func NewUniversalClient[P *provider.Provider | *hook.Hook](p P, opt *redis.UniversalOptions) redis.UniversalClient {
	w := wire("NewUniversalClient", p)
	if opt == nil {
		panic(nilOptions("NewUniversalClient", "&redis.UniversalOptions{Addrs: ...}"))
	}
	check("NewUniversalClient", opt.Username, opt.Password, opt.CredentialsProvider != nil,
		opt.CredentialsProviderContext != nil, opt.StreamingCredentialsProvider != nil)
	switch {
	case opt.MasterName != "" && (opt.RouteByLatency || opt.RouteRandomly || opt.IsClusterMode):
		return w.newFailoverClusterClient(opt.Failover())
	case opt.MasterName != "":
		return w.newFailoverClient(opt.Failover())
	case len(opt.Addrs) > 1 || opt.IsClusterMode:
		return w.newClusterClient(opt.Cluster())
	default:
		return w.newClient(opt.Simple())
	}
}

func nilOptions(fn, example string) string {
	return "entraredis: " + fn + ": the options are nil: pass the cache's address, e.g. " + example
}

// check panics when the options already carry credentials: the Entra ID provider supplies them,
// and go-redis would silently use one or the other.
func check(fn, user, pass string, cp, cpc, scp bool) {
	var what string
	switch {
	case pass != "":
		what = "Password is set, but the Entra ID token is the password: remove it"
	case user != "":
		what = "Username is set, but the username is the token's oid claim: remove it (provider.Options.Username overrides it)"
	case cp:
		what = "CredentialsProvider is set, but the Entra ID provider supplies the credentials: remove it"
	case cpc:
		what = "CredentialsProviderContext is set, but the Entra ID provider supplies the credentials: remove it"
	case scp:
		what = "StreamingCredentialsProvider is set, but the Entra ID provider supplies the credentials: remove it"
	default:
		return
	}
	panic("entraredis: " + fn + ": " + what)
}

func checkFailover(fn string, opt *redis.FailoverOptions) *redis.FailoverOptions {
	if opt == nil {
		panic(nilOptions(fn, "&redis.FailoverOptions{MasterName: ..., SentinelAddrs: ...}"))
	}
	check(fn, opt.Username, opt.Password, opt.CredentialsProvider != nil,
		opt.CredentialsProviderContext != nil, opt.StreamingCredentialsProvider != nil)
	return opt
}

func (w wiring) newClient(opt *redis.Options) *redis.Client {
	o := *opt
	w.setCredentials(&o.CredentialsProviderContext, &o.StreamingCredentialsProvider)
	if o.TLSConfig == nil {
		o.TLSConfig = tlsFor(o.Addr)
	}
	if fullDuplex(&o) {
		// No hook on the client: go-redis (v9.23+) runs a client's process hooks on a goroutine of
		// their own per command on its full-duplex path, which then reaches about 0.6 of its
		// hook-free throughput (BENCHMARKS.md), and after the command was written, so the hook can
		// neither hold it back nor send it again. What the hook does there is carried by the
		// dialer instead: the hook's dial checks (no dial without a token, nor for a refused one)
		// and the guard, which renews the connection in place and retires it before expiry (the
		// engine then sends what the retired connection did not on a new one).
		o.Dialer = w.h.DialHook(w.rawDialer(o.Dialer, o.TLSConfig, o.DialTimeout))
		return redis.NewClient(&o)
	}
	o.Dialer = w.dial(o.Dialer, o.TLSConfig, o.DialTimeout)
	c := redis.NewClient(&o)
	w.install(c)
	return c
}

// fullDuplex reports whether the options make go-redis's autopipeliner full-duplex
// (Options.AutoPipelineOptions.FullDuplex, go-redis v9.23+), read by name once at construction:
// neither field exists in the oldest go-redis the module supports.
func fullDuplex(opt any) bool {
	apo := reflect.ValueOf(opt).Elem().FieldByName("AutoPipelineOptions")
	if !apo.IsValid() || apo.Kind() != reflect.Pointer || apo.IsNil() {
		return false
	}
	f := apo.Elem().FieldByName("FullDuplex")
	return f.IsValid() && f.Kind() == reflect.Bool && f.Bool()
}

// A cluster's full-duplex autopipeliner runs one full-duplex engine per master on its node
// client (go-redis v9.24), and a failover client's is a client's: with FullDuplex in their options,
// their node clients get no hook either, for the reasons in newClient.
func (w wiring) newClusterClient(opt *redis.ClusterOptions) *redis.ClusterClient {
	o := *opt
	w.setCredentials(&o.CredentialsProviderContext, &o.StreamingCredentialsProvider)
	if o.TLSConfig == nil {
		o.TLSConfig = tlsFor(o.Addrs...)
	}
	o.NewClient = w.nodeClient(o.NewClient, fullDuplex(&o))
	return redis.NewClusterClient(&o)
}

func (w wiring) newFailoverClient(opt *redis.FailoverOptions) *redis.Client {
	c := redis.NewFailoverClient(w.failover(opt))
	if !fullDuplex(opt) {
		w.install(c)
	}
	return c
}

func (w wiring) newFailoverClusterClient(opt *redis.FailoverOptions) *redis.ClusterClient {
	c := redis.NewFailoverClusterClient(w.failover(opt))
	if !fullDuplex(opt) {
		c.OnNewNode(w.install)
	}
	return c
}

func (w wiring) failover(opt *redis.FailoverOptions) *redis.FailoverOptions {
	o := *opt
	w.setCredentials(&o.CredentialsProviderContext, &o.StreamingCredentialsProvider)
	if o.TLSConfig == nil {
		o.TLSConfig = tlsFor(o.SentinelAddrs...)
	}
	o.Dialer = w.nodeDial(o.Dialer, o.TLSConfig, o.DialTimeout, fullDuplex(&o))
	return &o
}

// nodeDial is dial, or for a client without the hook (full duplex) the hook's dial checks too.
func (w wiring) nodeDial(d func(context.Context, string, string) (net.Conn, error), tlsConfig *tls.Config, timeout time.Duration, fd bool) func(context.Context, string, string) (net.Conn, error) {
	if fd {
		return w.h.DialHook(w.rawDialer(d, tlsConfig, timeout))
	}
	return w.dial(d, tlsConfig, timeout)
}

// setCredentials: new connections authenticate through CredentialsProviderContext (with the
// caller's context). Open ones are renewed in place by the hook's guard; go-redis's own streaming
// re-authentication is used only when the guard is off, because it takes each connection out of
// use until its background AUTH is done and dials new ones meanwhile: measured with 16 goroutines
// on a pool of 8, 8 to 13 new connections per token rotation, against none with the guard.
func (w wiring) setCredentials(cpc *func(context.Context) (string, string, error), scp *auth.StreamingCredentialsProvider) {
	*cpc, *scp = w.h.Credentials()
}

// dial puts the guard in the dialer: redis.NewClient dials the MinIdleConns prefill before a hook
// can be added, and the hook's DialHook would miss those connections (it leaves the ones the
// dialer guarded alone). The default dialer is go-redis's own, with the options' TLS.
func (w wiring) dial(d func(context.Context, string, string) (net.Conn, error), tlsConfig *tls.Config, timeout time.Duration) func(context.Context, string, string) (net.Conn, error) {
	return w.h.WrapDialer(w.rawDialer(d, tlsConfig, timeout))
}

// rawDialer is d, or go-redis's own dialer with the options' TLS when d is nil.
func (w wiring) rawDialer(d func(context.Context, string, string) (net.Conn, error), tlsConfig *tls.Config, timeout time.Duration) func(context.Context, string, string) (net.Conn, error) {
	if d == nil {
		if timeout == 0 {
			timeout = 5 * time.Second // go-redis's default DialTimeout
		}
		d = redis.NewDialer(&redis.Options{TLSConfig: tlsConfig, DialTimeout: timeout})
	}
	return d
}

// install adds the hook to c, with c's DialTimeout: a command with no deadline waits for a token
// no longer than go-redis would wait for a dial.
func (w wiring) install(c *redis.Client) {
	c.AddHook(link.HookForClient(w.h, c.Options().DialTimeout))
}

// nodeClient wraps a NewClient option so that each node or shard client gets the hook, or with
// fd (full duplex) only the dialer's checks and the guard.
func (w wiring) nodeClient(next func(*redis.Options) *redis.Client, fd bool) func(*redis.Options) *redis.Client {
	if next == nil {
		next = redis.NewClient
	}
	return func(opt *redis.Options) *redis.Client {
		opt.Dialer = w.nodeDial(opt.Dialer, opt.TLSConfig, opt.DialTimeout, fd)
		c := next(opt)
		if !fd {
			w.install(c)
		}
		return c
	}
}

package entraredis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/auth"

	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

var (
	// ErrNilProvider is the cause of the panic of a constructor given a nil provider.
	ErrNilProvider = errors.New("provider is nil: create one with provider.New(cred, nil) or provider.NewDefault(nil, nil)")
	// ErrNilOptions is the cause of the panic of a constructor given nil options.
	ErrNilOptions = errors.New("options are nil: pass the cache's address, e.g. &redis.Options{Addr: \"<name>.redis.cache.windows.net:6380\"}")
	// ErrCredentialsSet is the cause of the panic of a constructor given options that already carry
	// credentials (Username, Password or a credentials provider): the Entra ID provider supplies
	// them, and go-redis would silently use one or the other.
	ErrCredentialsSet = errors.New("credentials are set in the options as well as the Entra ID provider")
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

// Wiring builds go-redis clients that authenticate with a provider's tokens and recover with a
// hook. Use With to choose the hook's options; the package-level constructors use the defaults.
type Wiring struct {
	h *hook.Hook
	p *provider.Provider
}

// With returns a Wiring that installs h (and the credentials of the provider h was made with).
// It panics when h is nil.
func With(h *hook.Hook) *Wiring {
	if h == nil || h.Provider() == nil {
		panic("entraredis: With needs a hook made by hook.New(p, opts)")
	}
	return &Wiring{h: h, p: h.Provider()}
}

func wiring(fn string, p *provider.Provider) *Wiring {
	if p == nil {
		panic(fmt.Errorf("entraredis: %s: %w", fn, ErrNilProvider))
	}
	return With(hook.New(p, nil))
}

// Hook returns the hook the Wiring installs.
func (w *Wiring) Hook() *hook.Hook { return w.h }

// NewClient returns a client of one Redis server (or an Azure Cache for Redis endpoint) that
// authenticates with p's tokens: see Wiring.NewClient.
func NewClient(p *provider.Provider, opt *redis.Options) *redis.Client {
	return wiring("NewClient", p).NewClient(opt)
}

// NewClusterClient returns a Redis Cluster client (Azure Managed Redis with the OSS cluster policy,
// a clustered Azure Cache for Redis) that authenticates with p's tokens: see
// Wiring.NewClusterClient.
func NewClusterClient(p *provider.Provider, opt *redis.ClusterOptions) *redis.ClusterClient {
	return wiring("NewClusterClient", p).NewClusterClient(opt)
}

// NewRing returns a ring of shards that authenticate with p's tokens: see Wiring.NewRing.
func NewRing(p *provider.Provider, opt *redis.RingOptions) *redis.Ring {
	return wiring("NewRing", p).NewRing(opt)
}

// NewFailoverClient returns a Sentinel-managed client whose data connections authenticate with p's
// tokens: see Wiring.NewFailoverClient.
func NewFailoverClient(p *provider.Provider, opt *redis.FailoverOptions) *redis.Client {
	return wiring("NewFailoverClient", p).NewFailoverClient(opt)
}

// NewFailoverClusterClient is NewFailoverClient routing reads to replicas: see
// Wiring.NewFailoverClusterClient.
func NewFailoverClusterClient(p *provider.Provider, opt *redis.FailoverOptions) *redis.ClusterClient {
	return wiring("NewFailoverClusterClient", p).NewFailoverClusterClient(opt)
}

// NewUniversalClient returns the client go-redis's NewUniversalClient would choose, authenticating
// with p's tokens: see Wiring.NewUniversalClient.
func NewUniversalClient(p *provider.Provider, opt *redis.UniversalOptions) redis.UniversalClient {
	return wiring("NewUniversalClient", p).NewUniversalClient(opt)
}

// check panics when the options already carry credentials.
func check(fn, user, pass string, cp, cpc, scp bool) {
	var what string
	switch {
	case pass != "":
		what = "Password is set, but the Entra ID token is the password: remove it"
	case user != "":
		what = "Username is set, but the username is the token's oid claim: remove it (provider.Options.Username overrides it)"
	case cp:
		what = "CredentialsProvider is set: remove it"
	case cpc:
		what = "CredentialsProviderContext is set: remove it"
	case scp:
		what = "StreamingCredentialsProvider is set: remove it"
	default:
		return
	}
	panic(fmt.Errorf("entraredis: %s: %w: %s", fn, ErrCredentialsSet, what))
}

// NewClient returns redis.NewClient(opt) with the provider's credentials for new connections and
// the hook installed, which renews open connections with each new token and retries what the
// token's expiry made fail (see package hook). An Azure host with no TLSConfig gets
// TLS 1.2+ with its name as ServerName. Everything else in opt (pool, timeouts, OnConnect, Dialer)
// is kept; hooks the caller adds to the client later run inside this one. It panics when opt is
// nil or already carries credentials.
func (w *Wiring) NewClient(opt *redis.Options) *redis.Client {
	if opt == nil {
		panic(fmt.Errorf("entraredis: NewClient: %w", ErrNilOptions))
	}
	check("NewClient", opt.Username, opt.Password, opt.CredentialsProvider != nil,
		opt.CredentialsProviderContext != nil, opt.StreamingCredentialsProvider != nil)
	o := *opt
	w.setCredentials(&o.CredentialsProviderContext, &o.StreamingCredentialsProvider)
	if o.TLSConfig == nil {
		o.TLSConfig = tlsFor(o.Addr)
	}
	c := redis.NewClient(&o)
	c.AddHook(w.h)
	return c
}

// setCredentials: new connections authenticate through CredentialsProviderContext (with the
// caller's context). Open ones are renewed in place by the hook's guard; go-redis's own streaming
// re-authentication is used only when the guard is off, because it takes each connection out of
// use until its background AUTH is done and dials new ones meanwhile: measured with 16 goroutines
// on a pool of 8, 8 to 13 new connections per token rotation, against none with the guard.
func (w *Wiring) setCredentials(cpc *func(context.Context) (string, string, error), scp *auth.StreamingCredentialsProvider) {
	*cpc = w.p.CredentialsProviderContext
	if !w.h.Guarded() {
		*scp = w.p
	}
}

// NewClusterClient returns redis.NewClusterClient(opt) with the provider's credentials and the hook
// installed on every node client (a cluster-level hook never sees a node's connections): through
// opt.NewClient, wrapping the caller's own if set. TLS for Azure hosts as in NewClient.
func (w *Wiring) NewClusterClient(opt *redis.ClusterOptions) *redis.ClusterClient {
	if opt == nil {
		panic(fmt.Errorf("entraredis: NewClusterClient: %w", ErrNilOptions))
	}
	check("NewClusterClient", opt.Username, opt.Password, opt.CredentialsProvider != nil,
		opt.CredentialsProviderContext != nil, opt.StreamingCredentialsProvider != nil)
	o := *opt
	w.setCredentials(&o.CredentialsProviderContext, &o.StreamingCredentialsProvider)
	if o.TLSConfig == nil {
		o.TLSConfig = tlsFor(o.Addrs...)
	}
	o.NewClient = w.nodeClient(o.NewClient)
	return redis.NewClusterClient(&o)
}

// nodeClient wraps a NewClient option so that each node or shard client gets the hook.
func (w *Wiring) nodeClient(next func(*redis.Options) *redis.Client) func(*redis.Options) *redis.Client {
	if next == nil {
		next = redis.NewClient
	}
	return func(opt *redis.Options) *redis.Client {
		c := next(opt)
		c.AddHook(w.h)
		return c
	}
}

// NewRing returns redis.NewRing(opt) with the provider's credentials and the hook on every shard
// client, through opt.NewClient. TLS for Azure hosts as in NewClient.
func (w *Wiring) NewRing(opt *redis.RingOptions) *redis.Ring {
	if opt == nil {
		panic(fmt.Errorf("entraredis: NewRing: %w", ErrNilOptions))
	}
	check("NewRing", opt.Username, opt.Password, opt.CredentialsProvider != nil,
		opt.CredentialsProviderContext != nil, opt.StreamingCredentialsProvider != nil)
	o := *opt
	w.setCredentials(&o.CredentialsProviderContext, &o.StreamingCredentialsProvider)
	if o.TLSConfig == nil {
		o.TLSConfig = tlsFor(slices.Collect(maps.Values(o.Addrs))...)
	}
	o.NewClient = w.nodeClient(o.NewClient)
	return redis.NewRing(&o)
}

// NewFailoverClient returns redis.NewFailoverClient(opt) with the provider's credentials for the
// master's connections and the hook installed. The Sentinels themselves keep SentinelUsername and
// SentinelPassword. TLS as in NewClient when every Sentinel address is an Azure host.
func (w *Wiring) NewFailoverClient(opt *redis.FailoverOptions) *redis.Client {
	o := w.failover("NewFailoverClient", opt)
	c := redis.NewFailoverClient(o)
	c.AddHook(w.h)
	return c
}

// NewFailoverClusterClient returns redis.NewFailoverClusterClient(opt) with the provider's
// credentials and the hook on every node client (through OnNewNode, as FailoverOptions has no
// NewClient).
func (w *Wiring) NewFailoverClusterClient(opt *redis.FailoverOptions) *redis.ClusterClient {
	o := w.failover("NewFailoverClusterClient", opt)
	c := redis.NewFailoverClusterClient(o)
	c.OnNewNode(func(node *redis.Client) { node.AddHook(w.h) })
	return c
}

func (w *Wiring) failover(fn string, opt *redis.FailoverOptions) *redis.FailoverOptions {
	if opt == nil {
		panic(fmt.Errorf("entraredis: %s: %w", fn, ErrNilOptions))
	}
	check(fn, opt.Username, opt.Password, opt.CredentialsProvider != nil,
		opt.CredentialsProviderContext != nil, opt.StreamingCredentialsProvider != nil)
	o := *opt
	w.setCredentials(&o.CredentialsProviderContext, &o.StreamingCredentialsProvider)
	if o.TLSConfig == nil {
		o.TLSConfig = tlsFor(o.SentinelAddrs...)
	}
	return &o
}

// NewUniversalClient chooses the client as redis.NewUniversalClient does (failover with
// MasterName, cluster with several addresses or IsClusterMode, else a single client) and builds it
// with the matching Wiring constructor.
func (w *Wiring) NewUniversalClient(opt *redis.UniversalOptions) redis.UniversalClient {
	if opt == nil {
		panic(fmt.Errorf("entraredis: NewUniversalClient: %w", ErrNilOptions))
	}
	check("NewUniversalClient", opt.Username, opt.Password, opt.CredentialsProvider != nil,
		opt.CredentialsProviderContext != nil, opt.StreamingCredentialsProvider != nil)
	switch {
	case opt.MasterName != "" && (opt.RouteByLatency || opt.RouteRandomly || opt.IsClusterMode):
		return w.NewFailoverClusterClient(opt.Failover())
	case opt.MasterName != "":
		return w.NewFailoverClient(opt.Failover())
	case len(opt.Addrs) > 1 || opt.IsClusterMode:
		return w.NewClusterClient(opt.Cluster())
	default:
		return w.NewClient(opt.Simple())
	}
}

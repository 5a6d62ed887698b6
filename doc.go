// Package entraredis connects go-redis (github.com/redis/go-redis/v9) to Azure Cache for Redis and
// Azure Managed Redis with Microsoft Entra ID authentication, in one call:
//
//	cred, err := azidentity.NewDefaultAzureCredential(nil)
//	...
//	p, err := provider.New(cred, nil)
//	...
//	defer p.Close()
//	rdb := entraredis.NewClient(p, &redis.Options{Addr: "mycache.redis.cache.windows.net:6380"})
//	defer rdb.Close()
//
// The client authenticates each new connection with the provider's token (username: the token's
// oid claim) and carries the hook of package hook, in its dialer and its hooks, which:
//
//   - sends a command again when the server rejected its token (NOAUTH, WRONGPASS, Azure's
//     "ERR WRONGPASS ..."), after a forced refresh: the command did not run, so this is safe
//     even for INCR;
//   - sends it again when it could not reach the server (dial or handshake failure), never when
//     it was written and the connection then failed: go-redis's own MaxRetries decides that;
//   - renews every connection with each new token, busy or idle, pooled or sticky, subscribed or
//     blocked in BLPOP (see package hook), and keeps idle ones alive before Azure's idle timeout;
//   - retires what cannot be renewed shortly before Azure would close it, failing its next
//     request before anything is sent.
//
// NewClusterClient, NewRing, NewFailoverClient, NewFailoverClusterClient and NewUniversalClient do
// the same for the other client types, with the hook on every node client, where it runs. For an
// Azure host name and no TLSConfig they turn TLS on (TLS 1.2 or later); loopback and other hosts
// are left as configured.
//
// Every constructor takes, in place of the provider, a hook made from it: that is how to choose
// the hook's options (retries, logging, events) and to read its statistics for metrics:
//
//	h := hook.New(p, &hook.Options{MaxRetries: 2})
//	rdb := entraredis.NewClient(h, &redis.Options{Addr: "mycache.redis.cache.windows.net:6380"})
//	... h.Stats()
//
// NewClientFromEnv builds a client from Service Connector's variables (AZURE_REDIS_HOST and the
// identity's). rueidis and valkey-go users: the nested modules
// github.com/entraredis/entraredis/rueidisentra and .../valkeyentra.
//
// The constructors panic on programming errors that would otherwise surface only at the first
// command: a nil provider, hook or options, or options that carry credentials of their own. The
// panic message starts with "entraredis: " and the constructor's name, and says what to change.
package entraredis

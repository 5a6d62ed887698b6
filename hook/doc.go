// Package hook is a go-redis hook (redis.Hook) that keeps commands working across Microsoft Entra
// ID token expiry on Azure Cache for Redis and Azure Managed Redis.
//
// It does six things:
//
//   - Renew every connection before its token expires. Azure closes a connection when the token it
//     authenticated with expires, unless a newer token was sent with AUTH before. The hook wraps
//     each connection (its DialHook, or WrapDialer in the options' Dialer so that the MinIdleConns
//     prefill is wrapped too) and follows its request and reply streams. A connection in use
//     gets "AUTH user token" ahead of its next request, in the same write, and the reply is
//     removed where go-redis's reader meets it, counted in replies, even when a writer and a
//     reader use the connection at once (go-redis's full-duplex autopipeliner); an idle one
//     (pooled, a sticky rdb.Conn(), a Watch) gets it from the hook's goroutine shortly after the
//     new token arrives, while a request or go-redis's health check that comes meanwhile waits.
//     Nothing is set aside or redialled (go-redis's own streaming re-authentication does both: it
//     is not needed with the hook). Idle connections also get a PING before Azure's 10-minute
//     idle timeout (Options.KeepAlive).
//   - Keep subscribers and blocking commands alive. Pub/sub connections are renewed with an AUTH
//     between their messages (RESP3), or moved to a new connection on the new token and
//     re-subscribed underneath (RESP2, where a subscriber cannot send AUTH); Receive sees neither.
//     A blocking command (BLPOP, XREAD BLOCK...) whose block would outlast the token is sent as
//     shorter blocks, renewed in between: Redis would run an AUTH only after the block. WAIT and
//     WAITAOF, which wait for their own connection's writes, are capped to one such block.
//   - Retire what cannot be renewed. A connection that could not be renewed (its AUTH was
//     refused, or it sits inside MULTI) is retired Options.GuardMargin before its token expires,
//     and any connection still on an expired token is: its next request fails in Write, before a
//     byte leaves, with ErrConnRetired; go-redis drops it and the hook sends the command again on
//     another connection.
//   - Retry after an authentication error. When a command, a pipeline or a MULTI/EXEC fails with
//     NOAUTH or WRONGPASS (also Azure's "ERR WRONGPASS ...", which go-redis does not recognise),
//     the server has rejected it, so it did not run: the hook forces a token refresh (at most one
//     every half second per provider), renews or retires the connections on older tokens and
//     sends it again. The refusal is charged to the token the refused handshake carried, not
//     to a newer one. A token the server never accepted, refused again after that refresh (or
//     when the refresh brings the same token, as azidentity's cache does for up to an hour), is
//     blocked: every command fails at once, with no dial and no refresh, with an error
//     (ErrTokenRefused) that names the identity and the likely fixes. A token the server accepted
//     before (a revocation, a failover refusing for a moment) gets the refresh and one resend
//     every time; blocked only when that resend is refused too. A block is half-open: one AUTH
//     with the same token re-checks it 250 ms after the block, then at doubling intervals (at
//     most 15 s apart, jittered), once per provider whatever the number of hooks and clients;
//     the first acceptance seen anywhere (a re-check, a handshake, the guard's AUTH in place)
//     lets every command through again, so an access policy that becomes effective minutes
//     after the start (Azure takes up to 30) ends the failures without a restart.
//   - Fail fast without a token. While the provider has no valid token (an identity provider
//     outage past expiry, a stuck credential), a command fails before go-redis takes a
//     connection: it waits for the provider's next paced attempt (at most about half a second
//     away) when that is due within its deadline, and fails with that attempt's error, or at
//     once when none is due in time; a context with no deadline waits at most the client's
//     DialTimeout (5 s, go-redis's default, for a hook added
//     by hand; the client's own with entraredis's constructors). go-redis's dial breaker, which
//     after PoolSize failed dials dials only once a second, never trips, so the first command
//     after the identity provider's return succeeds with the first new token. Idle connections
//     on a token that dies with no newer one are closed by the guard just before expiry, so that
//     their next request is sent again on a new connection rather than meet a closed socket.
//   - Retry after a failure to connect: a dial error or a credential failure during the handshake
//     never reached the server, so the command is sent again too, after making sure the
//     reconnection gets a valid token (no dial is made without one). A command that was written
//     and then lost its connection is never sent again by the hook: its fate is unknown, and
//     go-redis's own MaxRetries, as configured, decides.
//
// Install it with entraredis.NewClient and friends, which also set the credentials and put the
// hook where it runs (on every node client of a cluster or ring). By hand, with the guard in the
// dialer (redis.NewClient dials the MinIdleConns prefill before AddHook runs) and TLS for Azure:
//
//	h := hook.New(p, nil)
//	opt.CredentialsProviderContext, opt.StreamingCredentialsProvider = h.Credentials()
//	opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
//	opt.Dialer = h.WrapDialer(redis.NewDialer(&redis.Options{TLSConfig: opt.TLSConfig, DialTimeout: 5 * time.Second}))
//	rdb := redis.NewClient(opt)
//	rdb.AddHook(h)
//
// # The connection guard
//
// Every way into a guarded connection goes through one gate (conn.go): a write side (Write), a
// read side (Read, and go-redis's health-check peek, through SyscallConn or, over TLS, through
// what NetConn returns), and the guard's background work, which takes the connection only when
// nothing is due in either stream and makes go-redis's requests, reads and peeks wait for it.
// Deadlines go-redis sets meanwhile are applied when the guard hands the connection back; the
// guard's own deadline, and a timer that closes the socket, bound its work. The two sides meet
// in a queue of marks counted in replies: an AUTH the guard inserts at a command boundary is
// marked at its reply's position, and the read side removes that reply there, so a reader and a
// writer can use the connection at once. RESP3 pushes answer no command and are not counted.
//
// A connection is in one of five states (drawn at the top of conn.go): managed (both streams
// followed, renewed in place), pubsub (pubsub.go), unmanaged (a stream the guard cannot
// follow: MONITOR, CLIENT REPLY OFF, bytes that are not RESP; nothing is inserted any more, and
// it is retired before its token expires, never guessed at), retired, and closed.
//
// The code is in rooms: hook.go (options, the process hooks and their retry rule), errors.go (the
// one classification of errors), guard.go (tokens, watermarks, timers), conn.go (the connection
// wrapper: the gate and the states, drawn at the top), idle.go (the guard's own requests on idle
// connections, deadlines, the health check's peek), pubsub.go (subscribers), blocking.go
// (blocking commands) and events.go.
package hook

package entratest

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Replies the gateway writes itself: Azure's texts.
const (
	replyOK        = "+OK\r\n"
	replyNoAuth    = "-NOAUTH Authentication required.\r\n"
	replyNoAuthHi  = "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n"
	replyWrongPass = "-ERR WRONGPASS invalid username-password pair\r\n"
	replyAuthArity = "-ERR wrong number of arguments for 'auth' command\r\n"
)

// GatewayOptions configures a Gateway. Nil or zero fields mean defaults.
type GatewayOptions struct {
	// TLS makes the gateway serve TLS with this configuration (TestCA.ServerTLSConfig makes one),
	// like Azure's port 6380. Nil: plain TCP.
	TLS *tls.Config
	// Addr is the address to listen on; default "127.0.0.1:0" (a free port). Loopback only.
	Addr string
	// DialTimeout bounds the connection to the backend made for each client; default 5s.
	DialTimeout time.Duration
	// Logger receives connection and authentication events (never a token); nil: silent.
	Logger *slog.Logger
	// IdleTimeout closes a client connection on which nothing has travelled, in either direction,
	// for this long, as Azure does after 10 minutes; default 10m, negative: never.
	IdleTimeout time.Duration
	// Users are the object IDs that are Redis users on the cache (an access policy assignment
	// each); a valid token of any other oid is answered "WRONGPASS invalid username-password pair
	// or user is disabled.", as Azure answers an identity without an access policy. Nil: every
	// oid is a user. SetUsers changes them on a running gateway.
	Users []string
	// ClockSkew sets the gateway's clock this far ahead of the machine's (negative: behind), for
	// its checks of exp and nbf and its closes at expiry: a cache whose clock disagrees with the
	// identity provider's, or a client machine with a wrong clock.
	ClockSkew time.Duration
}

// GatewayStats counts what a Gateway did.
type GatewayStats struct {
	Connections  int64 // client connections accepted
	Active       int64 // client connections open now
	AuthAccepted int64 // AUTH / HELLO AUTH with a valid token
	AuthRefused  int64 // AUTH / HELLO AUTH answered WRONGPASS
	NoAuth       int64 // commands answered NOAUTH
	ExpiryCloses int64 // connections closed because the token that authenticated them expired
	IdleCloses   int64 // connections closed because nothing travelled on them for IdleTimeout
	BackendDown  int64 // client connections closed because the backend was unreachable or closed
}

// AudienceAppID is the other audience Azure accepts for the same resource: the application ID of
// Azure Cache for Redis, in tokens requested with the scope AudienceAppID + "/.default", which
// Microsoft documents as an alternative to Scope.
const AudienceAppID = "acca5fbb-b7e4-4009-81f1-37e38fd66d78"

// Gateway is a RESP proxy in front of a Redis server (redis-server, miniredis, a cluster node)
// that enforces what Azure Cache for Redis enforces with Microsoft Entra ID:
//
//   - until a successful "AUTH user token" or "HELLO n AUTH user token", commands are answered
//     "NOAUTH Authentication required.";
//   - a token is accepted only if its RS256 signature checks against the issuer's key, it is
//     within its nbf/exp, its aud is https://redis.azure.com or AudienceAppID, and user is its oid
//     claim; otherwise "ERR WRONGPASS invalid username-password pair";
//   - when the token that last authenticated a connection expires, the connection is closed
//     without a reply, unless a valid AUTH ran before. Like Redis, the gateway runs a client's
//     commands in order: an AUTH sent behind a command still in flight (a blocked BLPOP, XREAD
//     BLOCK, WAIT...) takes effect only when that command has returned, so it cannot save a
//     connection blocked through its token's expiry;
//   - a connection on which nothing travelled for IdleTimeout (default 10 minutes, as Azure) is
//     closed without a reply.
//
// Replies keep their order under pipelining: the gateway's own replies travel through the backend
// as PING markers that it swaps back on the way out. Known gaps, none of which go-redis hits: an
// AUTH inside MULTI is queued as a PING, and "CLIENT REPLY OFF" confuses the ordering of the
// gateway's own replies. In RESP2 subscribed mode, AUTH goes to the backend unchanged and fails as
// it does on Redis, so a RESP2 subscriber cannot extend its token.
type Gateway struct {
	key         *rsa.PublicKey
	backend     string
	dialTimeout time.Duration
	idleTimeout time.Duration
	log         *slog.Logger
	ln          net.Listener
	parser      *jwt.Parser
	skew        time.Duration
	users       atomic.Pointer[map[string]bool] // nil: every oid
	revoked     sync.Map                        // [32]byte digests of revoked tokens (Revoke)

	mu     sync.Mutex
	conns  map[*gwConn]struct{}
	closed bool
	wg     sync.WaitGroup
	nextID atomic.Uint64

	connections, active, accepted, refused, noauth, expiries, idles, backendDown atomic.Int64
}

// NewGateway listens on 127.0.0.1 and proxies each client connection to backend (host:port),
// accepting tokens signed by iss.
func NewGateway(iss *Issuer, backend string, opts *GatewayOptions) (*Gateway, error) {
	var o GatewayOptions
	if opts != nil {
		o = *opts
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 10 * time.Minute
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("entratest: gateway listen on %s: %w", o.Addr, err)
	}
	if o.TLS != nil {
		ln = tls.NewListener(ln, o.TLS)
	}
	g := &Gateway{
		key:         iss.PublicKey(),
		backend:     backend,
		dialTimeout: o.DialTimeout,
		idleTimeout: o.IdleTimeout,
		log:         o.Logger,
		ln:          ln,
		conns:       map[*gwConn]struct{}{},
		skew:        o.ClockSkew,
	}
	g.parser = jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithAudience(Audience, AudienceAppID), jwt.WithExpirationRequired(), jwt.WithTimeFunc(g.now))
	if o.Users != nil {
		g.SetUsers(o.Users...)
	}
	g.wg.Add(1)
	go g.acceptLoop()
	return g, nil
}

// StartGateway is NewGateway for a test: it fails tb on error and closes the gateway in
// tb.Cleanup.
func StartGateway(tb testing.TB, iss *Issuer, backend string, opts *GatewayOptions) *Gateway {
	tb.Helper()
	g, err := NewGateway(iss, backend, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = g.Close() })
	return g
}

// Addr returns the address clients connect to, "127.0.0.1:port".
func (g *Gateway) Addr() string { return g.ln.Addr().String() }

// Port returns the port clients connect to.
func (g *Gateway) Port() int { return g.ln.Addr().(*net.TCPAddr).Port }

// Backend returns the address of the server behind the gateway.
func (g *Gateway) Backend() string { return g.backend }

// Stats returns the counters.
func (g *Gateway) Stats() GatewayStats {
	return GatewayStats{
		Connections:  g.connections.Load(),
		Active:       g.active.Load(),
		AuthAccepted: g.accepted.Load(),
		AuthRefused:  g.refused.Load(),
		NoAuth:       g.noauth.Load(),
		ExpiryCloses: g.expiries.Load(),
		IdleCloses:   g.idles.Load(),
		BackendDown:  g.backendDown.Load(),
	}
}

// DropConnections closes every open client connection, like a network failure or a server-side
// maintenance event, and returns how many it closed. The gateway keeps accepting new ones.
func (g *Gateway) DropConnections() int {
	g.mu.Lock()
	conns := make([]*gwConn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	return len(conns)
}

// Close stops accepting, closes every connection and waits for the gateway's goroutines.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	err := g.ln.Close()
	g.DropConnections()
	g.wg.Wait()
	return err
}

func (g *Gateway) logf(level slog.Level, msg string, args ...any) {
	if g.log != nil {
		g.log.Log(context.Background(), level, msg, args...)
	}
}

func (g *Gateway) acceptLoop() {
	defer g.wg.Done()
	for {
		nc, err := g.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failures (EMFILE...) must not end a test's gateway.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c := &gwConn{g: g, id: g.nextID.Add(1), client: nc, closing: make(chan struct{})}
		g.mu.Lock()
		if g.closed {
			g.mu.Unlock()
			_ = nc.Close()
			return
		}
		g.conns[c] = struct{}{}
		g.wg.Add(1)
		g.mu.Unlock()
		g.connections.Add(1)
		g.active.Add(1)
		go c.serve()
	}
}

// checkToken verifies a token for user and returns its expiry, or why it was refused (a reason
// that never contains the token).
func (g *Gateway) checkToken(user, token string) (time.Time, string) {
	claims := jwt.MapClaims{}
	_, err := g.parser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return g.key, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return time.Time{}, "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return time.Time{}, "token not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return time.Time{}, "wrong audience"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return time.Time{}, "bad signature"
	case err != nil:
		return time.Time{}, "invalid token"
	}
	if oid, _ := claims["oid"].(string); oid == "" || oid != user {
		return time.Time{}, "username is not the token's oid"
	}
	if !g.isUser(user) {
		return time.Time{}, reasonNoUser
	}
	if g.isRevoked(token) {
		return time.Time{}, "token revoked"
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return time.Time{}, "invalid token"
	}
	return exp.Time, ""
}

package hook

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/entraredis/entraredis/jwtutil"
)

// ErrConnRetired is the error a guarded connection returns from Write, before sending anything,
// once the token it authenticated with is about to expire and a newer one is available. go-redis
// then drops the connection; the hook sends the command again on another one. It reaches the caller
// only when the context ends first.
var ErrConnRetired = errors.New("entraredis: connection retired before its token expired (nothing was sent on it); send the command again")

// The guard: every connection go-redis dials through the hook is wrapped. The wrapper reads the
// expiry of the token each AUTH or HELLO written on it carries (and keeps it once the reply is not
// an error), so it knows the token the server will close it at, including after go-redis's own
// re-AUTH. A timer per token, at its expiry minus the margin, raises `below` once the provider holds
// a newer token; a connection still on the old token then fails its next request in Write, before
// a byte leaves. Per command that is a few atomic loads: no allocation, no clock read.
type guard struct {
	h *Hook

	below atomic.Int64 // unix ns: connections whose token expires before this are retired
	live  atomic.Int64 // open guarded connections

	mu      sync.Mutex
	closed  bool
	timers  map[int64]*time.Timer // one per token expiry seen on a connection
	pubsubs map[*conn]struct{}

	cmu      sync.Mutex // the last token read, so that a token's claims are parsed once
	lastPass string
	lastExp  int64
	lastLife int64
}

func (g *guard) init(h *Hook) {
	g.h = h
	g.timers = make(map[int64]*time.Timer)
	g.pubsubs = make(map[*conn]struct{})
}

func (g *guard) wrap(nc net.Conn) net.Conn {
	c := &conn{Conn: nc, g: g}
	g.live.Add(1)
	g.h.dials.Add(1)
	// go-redis checks an idle connection's health only through syscall.Conn: keep it where the
	// inner connection has it (plain TCP), and don't pretend to where it does not (TLS).
	if sc, ok := nc.(syscall.Conn); ok {
		return &sysConn{conn: c, sc: sc}
	}
	return c
}

// tokenTimes returns the expiry and lifetime (unix ns, ns) read from a token's claims; exp is -1
// when it is not a JWT with an exp claim, life 0 when it has no iat.
func (g *guard) tokenTimes(pass string) (exp, life int64) {
	g.cmu.Lock()
	defer g.cmu.Unlock()
	if pass == g.lastPass && g.lastPass != "" {
		return g.lastExp, g.lastLife
	}
	exp = -1
	if c, err := jwtutil.ParseClaims(pass); err == nil && !c.ExpiresAt.IsZero() {
		exp = c.ExpiresAt.UnixNano()
		if !c.IssuedAt.IsZero() && c.IssuedAt.Before(c.ExpiresAt) {
			life = c.ExpiresAt.Sub(c.IssuedAt).Nanoseconds()
		}
	}
	g.lastPass, g.lastExp, g.lastLife = pass, exp, life
	return exp, life
}

// margin is how long before a token's expiry its connections are retired: Options.GuardMargin, but
// at most an eighth of the token's life so that short-lived tokens (tests) keep the order refresh,
// re-AUTH, retirement, expiry.
func (g *guard) margin(life int64) time.Duration {
	m := g.h.margin
	if life > 0 {
		m = min(m, time.Duration(life/8))
	}
	return m
}

// track arms the retirement timer of the token expiring at exp, once per token.
func (g *guard) track(exp, life int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.timers[exp] != nil {
		return
	}
	m := g.margin(life)
	g.timers[exp] = time.AfterFunc(time.Until(time.Unix(0, exp).Add(-m)), func() { g.fire(exp, m) })
}

// fire runs at exp-margin: once the provider holds a newer token, connections still on this one are
// retired (or, for pub/sub, re-authenticated in place). Until then it looks again every so often: a
// retired connection would only reconnect with the same old token.
func (g *guard) fire(exp int64, m time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), min(max(m, time.Second), 10*time.Second))
	defer cancel()
	if newExp, user, pass, ok := g.newest(ctx); ok && newExp > exp {
		g.raise(exp + 1)
		g.rotatePubSub(exp+1, user, pass, newExp)
		g.untrack(exp)
		return
	}
	if time.Now().UnixNano() >= exp {
		g.untrack(exp) // too late: the server closes those connections itself
		return
	}
	g.mu.Lock()
	if t := g.timers[exp]; t != nil && !g.closed {
		t.Reset(min(max(m/4, 10*time.Millisecond), time.Second))
	}
	g.mu.Unlock()
}

func (g *guard) untrack(exp int64) {
	g.mu.Lock()
	delete(g.timers, exp)
	g.mu.Unlock()
}

// newest returns the provider's current token and its expiry, without fetching one.
func (g *guard) newest(ctx context.Context) (exp int64, user, pass string, ok bool) {
	info, ok := g.h.src.Token()
	if !ok {
		return 0, "", "", false
	}
	user, pass, err := g.h.src.CredentialsProviderContext(ctx)
	if err != nil {
		return 0, "", "", false
	}
	if exp, _ = g.tokenTimes(pass); exp < 0 {
		exp = info.ExpiresOn.UnixNano()
	}
	return exp, user, pass, true
}

// raise retires every connection whose token expires before t.
func (g *guard) raise(t int64) {
	for {
		cur := g.below.Load()
		if t <= cur || g.below.CompareAndSwap(cur, t) {
			return
		}
	}
}

// retireOlder retires the connections on any token older than the provider's current one: after
// the server rejected a token, those connections are suspect.
func (g *guard) retireOlder(ctx context.Context) {
	if exp, user, pass, ok := g.newest(ctx); ok {
		g.raise(exp)
		g.rotatePubSub(exp, user, pass, exp)
	}
}

// rotatePubSub moves pub/sub connections on tokens expiring before limit to the token (user, pass)
// expiring at newExp. go-redis never re-authenticates them and they never pass the guard's
// Write check (a subscriber only reads). Over RESP3 a subscribed connection accepts AUTH, so the
// guard writes one on it: nothing is lost, and the "OK" reply surfaces as a *redis.Pong that
// ReceiveMessage and Channel skip. Over RESP2 it cannot, so the connection is closed now, while a
// new token is at hand; go-redis reconnects and re-subscribes at once.
func (g *guard) rotatePubSub(limit int64, user, pass string, newExp int64) {
	g.mu.Lock()
	var cs []*conn
	for c := range g.pubsubs {
		if e := c.exp.Load(); e > 0 && e < limit {
			cs = append(cs, c)
		}
	}
	g.mu.Unlock()
	if len(cs) == 0 {
		return
	}
	req := appendAuth(nil, user, pass)
	for _, c := range cs {
		addr := c.remote()
		if c.resp3.Load() {
			if err := c.inject(req, newExp); err == nil {
				g.h.pubsubReauths.Add(1)
				g.h.emit(Event{Kind: EventPubSubReauth, Addr: addr, ExpiresOn: time.Unix(0, newExp)},
					slog.LevelDebug, "entraredis: pub/sub connection re-authenticated in place",
					slog.String("addr", addr), slog.Time("expires_on", time.Unix(0, newExp)))
				continue
			}
		}
		_ = c.Conn.Close() // go-redis sees the error on its next read and reconnects
		g.h.pubsubClosed.Add(1)
		g.h.emit(Event{Kind: EventConnRetired, Addr: addr, ExpiresOn: time.Unix(0, c.exp.Load()), PubSub: true},
			slog.LevelDebug, "entraredis: pub/sub connection closed before its token expired",
			slog.String("addr", addr))
	}
}

func (g *guard) addPubSub(c *conn) {
	g.mu.Lock()
	if !g.closed {
		g.pubsubs[c] = struct{}{}
	}
	g.mu.Unlock()
}

func (g *guard) removePubSub(c *conn) {
	g.mu.Lock()
	delete(g.pubsubs, c)
	g.mu.Unlock()
}

func (g *guard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for exp, t := range g.timers {
		t.Stop()
		delete(g.timers, exp)
	}
	clear(g.pubsubs)
}

// conn is a guarded connection. busy is set by the first Write of a request and cleared by the next
// Read, so only a request's first Write is checked: failing a later one could cut a pipeline whose
// first commands the server already ran.
type conn struct {
	net.Conn
	g *guard

	exp      atomic.Int64 // unix ns: expiry of the token the server last accepted here; 0 unknown
	pending  atomic.Int64 // expiry carried by an AUTH/HELLO whose reply is unread; -1 not a JWT
	pendLife atomic.Int64
	busy     atomic.Bool
	hello    atomic.Bool // the pending request is a HELLO
	resp3    atomic.Bool
	pubsub   atomic.Bool
	retired  atomic.Bool
	closed   atomic.Bool

	wmu sync.Mutex // pub/sub only: serialises go-redis's writes with an injected AUTH
}

func (c *conn) Write(b []byte) (int, error) {
	if !c.busy.Load() {
		if k := sniff(b); k != reqOther {
			c.note(k, b) // AUTH and HELLO always pass: they are what renews a connection
		} else if e := c.exp.Load(); e != 0 && e < c.g.below.Load() && !c.pubsub.Load() {
			return 0, c.retire(e)
		}
		c.busy.Store(true)
	}
	if c.pubsub.Load() {
		return c.lockedWrite(b)
	}
	return c.Conn.Write(b)
}

func (c *conn) lockedWrite(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Conn.Write(b)
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.busy.Load() {
		c.busy.Store(false)
	}
	if n > 0 && c.pending.Load() != 0 {
		c.settle(b[0])
	}
	return n, err
}

// note records what an AUTH, HELLO or SUBSCRIBE request does to the connection.
func (c *conn) note(k reqKind, b []byte) {
	if k == reqSubscribe {
		if c.pubsub.CompareAndSwap(false, true) {
			c.g.addPubSub(c)
		}
		return
	}
	_, pass, ok := authArgs(k, b)
	if !ok {
		return
	}
	exp, life := c.g.tokenTimes(string(pass))
	c.hello.Store(k == reqHello)
	c.pendLife.Store(life)
	c.pending.Store(exp)
}

// settle applies the pending AUTH/HELLO once its reply starts arriving: an error reply leaves the
// connection on its previous token, as the server does.
func (c *conn) settle(first byte) {
	exp := c.pending.Swap(0)
	if exp == 0 || first == '-' {
		return
	}
	if c.hello.Load() {
		c.resp3.Store(first == '%') // HELLO 3 answers with a map
	}
	if exp < 0 {
		c.exp.Store(0) // a token the guard cannot read: leave the connection alone
		return
	}
	c.exp.Store(exp)
	c.g.track(exp, c.pendLife.Load())
}

// inject writes an AUTH on a pub/sub connection between go-redis's own writes.
func (c *conn) inject(req []byte, exp int64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Conn.Write(req)
	_ = c.Conn.SetWriteDeadline(time.Time{}) // go-redis sets its own before each write
	if err != nil {
		return err
	}
	c.exp.Store(exp)
	return nil
}

func (c *conn) retire(exp int64) error {
	if c.retired.CompareAndSwap(false, true) {
		h := c.g.h
		h.retired.Add(1)
		addr := c.remote()
		h.emit(Event{Kind: EventConnRetired, Addr: addr, ExpiresOn: time.Unix(0, exp), Err: ErrConnRetired},
			slog.LevelDebug, "entraredis: connection retired before its token expired",
			slog.String("addr", addr), slog.Time("token_expires_on", time.Unix(0, exp)))
	}
	return ErrConnRetired
}

func (c *conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.g.live.Add(-1)
		if c.pubsub.Load() {
			c.g.removePubSub(c)
		}
	}
	return c.Conn.Close()
}

// NetConn returns the wrapped connection, as crypto/tls.Conn does, so that go-redis can look
// through the wrapper for the socket it peeks at.
func (c *conn) NetConn() net.Conn { return c.Conn }

func (c *conn) remote() string {
	if a := c.Conn.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// sysConn is a guarded connection whose inner connection implements syscall.Conn.
type sysConn struct {
	*conn
	sc syscall.Conn
}

func (s *sysConn) SyscallConn() (syscall.RawConn, error) { return s.sc.SyscallConn() }

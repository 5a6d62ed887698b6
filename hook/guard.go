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

	"github.com/redis/go-redis/v9/auth"

	"github.com/entraredis/entraredis/jwtutil"
)

// ErrConnRetired is the error a guarded connection returns from Write, before sending anything,
// when the token it authenticated with is about to expire (or has) and it cannot be renewed in
// place. go-redis then drops the connection; the hook sends the command again on another one. It
// reaches the caller only when the context ends first.
var ErrConnRetired = errors.New("entraredis: connection retired before its token expired (nothing was sent on it); send the command again")

// errBadReply: the server's answer to an AUTH the guard sent could not be read.
var errBadReply = errors.New("entraredis: unreadable reply to a re-authentication")

// The guard. Every connection go-redis dials through the hook is wrapped. The wrapper reads the
// expiry of the token each AUTH or HELLO written on it carries (and keeps it once the reply is not
// an error), so it knows when the server will close it.
//
// Renewal in place: the guard follows the provider's newest token (a listener, and every
// handshake it sees). When a request starts on a connection whose token is older, the guard
// writes "AUTH user token" just ahead of it, in the same write, and removes the "+OK" from the
// replies before go-redis reads them. Connections are renewed on their next use after each
// refresh, whatever their state in the pool; none is redialled.
//
// Retirement, the fallback: a timer per token, at its expiry minus the margin, raises `below`
// once a newer token exists, and at the expiry raises `dead`. A connection that cannot be
// renewed in place (inside MULTI, or its AUTH was refused) fails its next request when under
// `below`, and any connection under `dead` does (the server has closed it): in Write, before a
// byte leaves. Per command the guard costs a few atomic operations, no allocation, no clock read.
type guard struct {
	h *Hook

	below atomic.Int64 // unix ns: connections on tokens expiring before this are retired unless renewed
	dead  atomic.Int64 // unix ns: connections on tokens expiring before this are retired
	cur   atomic.Pointer[creds]
	live  atomic.Int64 // open guarded connections

	mu       sync.Mutex
	closed   bool
	timers   map[int64]*time.Timer // one per token expiry seen on a connection
	pubsubs  map[*conn]struct{}
	subbed   bool
	unsub    auth.UnsubscribeFunc
	listener *listener
	wg       sync.WaitGroup

	cmu      sync.Mutex // the last token read, so that a token's claims are parsed once
	lastPass string
	lastExp  int64
	lastLife int64
}

// creds is a token ready to be sent: its expiry and the AUTH request carrying it.
type creds struct {
	exp, life int64
	req       []byte
}

func (g *guard) init(h *Hook) {
	g.h = h
	g.timers = make(map[int64]*time.Timer)
	g.pubsubs = make(map[*conn]struct{})
	g.listener = &listener{g: g}
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

// offer makes (user, pass) the token to renew connections with, if it is newer than the current
// one, and then renews the pub/sub connections that can be renewed in place.
func (g *guard) offer(user, pass string) {
	exp, life := g.tokenTimes(pass)
	if exp <= 0 {
		return
	}
	for {
		cur := g.cur.Load()
		if cur != nil && cur.exp >= exp {
			return
		}
		if g.cur.CompareAndSwap(cur, &creds{exp: exp, life: life, req: appendAuth(nil, user, pass)}) {
			break
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed && len(g.pubsubs) > 0 {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.rotatePubSub(exp, true)
		}()
	}
}

// subscribe registers the guard with the provider once, after a first handshake, in the
// background: the token is cached by then, so Subscribe does not fetch (and if it has just
// expired, the next handshake tries again).
func (g *guard) subscribe() {
	g.mu.Lock()
	if g.subbed || g.closed {
		g.mu.Unlock()
		return
	}
	if _, ok := g.h.src.Token(); !ok {
		g.mu.Unlock()
		return
	}
	g.subbed = true
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		c, unsub, err := g.h.src.Subscribe(g.listener)
		if err != nil {
			g.h.logf(slog.LevelWarn, "entraredis: subscribing to the provider failed; connections are renewed from handshakes only", slog.Any("error", err))
			return
		}
		g.mu.Lock()
		closed := g.closed
		g.unsub = unsub
		g.mu.Unlock()
		if closed {
			_ = unsub()
			return
		}
		if c != nil {
			g.offer(c.BasicAuth())
		}
	}()
}

// listener hears of the provider's new tokens.
type listener struct{ g *guard }

func (l *listener) OnNext(c auth.Credentials) { l.g.offer(c.BasicAuth()) }
func (l *listener) OnError(error)             {}

// margin is how long before a token's expiry its connections are retired: Options.GuardMargin, but
// at most an eighth of the token's life so that short-lived tokens (tests) keep the order refresh,
// renewal, retirement, expiry.
func (g *guard) margin(life int64) time.Duration {
	m := g.h.margin
	if life > 0 {
		m = min(m, time.Duration(life/8))
	}
	return m
}

// track arms the timer of the token expiring at exp, once per token.
func (g *guard) track(exp, life int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.timers[exp] != nil {
		return
	}
	m := g.margin(life)
	g.timers[exp] = time.AfterFunc(time.Until(time.Unix(0, exp).Add(-m)), func() { g.fire(exp, m) })
}

// fire runs from exp-margin: once a newer token exists, connections still on this one are retired
// unless renewed in place, and pub/sub ones are renewed or reconnected; until then it looks again
// every so often (a retired connection would only reconnect with the same old token). Just before
// exp, every connection still on it is retired: the server is about to close it.
func (g *guard) fire(exp int64, m time.Duration) {
	now := time.Now().UnixNano()
	// Retire a little before exp even without a newer token: a request written in the token's last
	// moment could meet the server's close, and go-redis would send it again, its fate unknown (an
	// INCR applied twice). The provider has stopped handing out the token a little earlier (1 s or
	// a tenth of its life before exp), so the reconnection fetches a new one or fails cleanly before
	// anything is sent, rather than dialling again on the same token.
	deadAt := exp - int64(min(time.Second, m)/2)
	if now >= deadAt {
		g.raise(&g.dead, exp+1)
		g.raise(&g.below, exp+1)
		g.untrack(exp)
		return
	}
	next := time.Duration(deadAt - now)
	if g.below.Load() <= exp {
		if cur := g.cur.Load(); cur != nil && cur.exp > exp {
			g.raise(&g.below, exp+1)
			g.rotatePubSub(exp+1, false)
		} else {
			next = min(next, max(m/4, 10*time.Millisecond), time.Second)
		}
	}
	g.mu.Lock()
	if t := g.timers[exp]; t != nil && !g.closed {
		t.Reset(next)
	}
	g.mu.Unlock()
}

func (g *guard) untrack(exp int64) {
	g.mu.Lock()
	delete(g.timers, exp)
	g.mu.Unlock()
}

func (g *guard) raise(v *atomic.Int64, t int64) {
	for {
		cur := v.Load()
		if t <= cur || v.CompareAndSwap(cur, t) {
			return
		}
	}
}

// retireOlder, after the server rejected a token, renews or retires the connections on any token
// older than the provider's current one: they are suspect.
func (g *guard) retireOlder(ctx context.Context) {
	if _, ok := g.h.src.Token(); !ok {
		return
	}
	user, pass, err := g.h.src.CredentialsProviderContext(ctx)
	if err != nil {
		return
	}
	g.offer(user, pass)
	if cur := g.cur.Load(); cur != nil {
		g.raise(&g.below, cur.exp)
		g.rotatePubSub(cur.exp, false)
	}
}

// rotatePubSub moves pub/sub connections on tokens expiring before limit to the current token.
// go-redis never re-authenticates them, and they never pass the guard's request check (a
// subscriber only reads). Over RESP3 a subscribed connection accepts AUTH, so the guard writes one
// on it: nothing is lost, and the "OK" reply surfaces as a *redis.Pong that ReceiveMessage and
// Channel skip. Over RESP2 it cannot, so (unless onlyInPlace) the connection is closed while a new
// token is at hand; go-redis reconnects and re-subscribes at once.
func (g *guard) rotatePubSub(limit int64, onlyInPlace bool) {
	cur := g.cur.Load()
	if cur == nil {
		return
	}
	g.mu.Lock()
	var cs []*conn
	for c := range g.pubsubs {
		if e := c.exp.Load(); e > 0 && e < limit && e < cur.exp {
			cs = append(cs, c)
		}
	}
	g.mu.Unlock()
	for _, c := range cs {
		addr := c.remote()
		if c.resp3.Load() {
			if err := c.inject(cur); err == nil {
				g.h.pubsubReauths.Add(1)
				g.h.emit(Event{Kind: EventPubSubReauth, Addr: addr, ExpiresOn: time.Unix(0, cur.exp)},
					slog.LevelDebug, "entraredis: pub/sub connection re-authenticated in place",
					slog.String("addr", addr), slog.Time("expires_on", time.Unix(0, cur.exp)))
				continue
			}
		}
		if onlyInPlace {
			continue
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
	g.closed = true
	for exp, t := range g.timers {
		t.Stop()
		delete(g.timers, exp)
	}
	clear(g.pubsubs)
	g.mu.Unlock()
	g.wg.Wait()
	g.mu.Lock()
	unsub := g.unsub
	g.unsub = nil
	g.mu.Unlock()
	if unsub != nil {
		_ = unsub()
	}
}

// conn is a guarded connection.
//
// go-redis uses a connection from one goroutine at a time, except a pub/sub one, read by one
// goroutine while others write. The fields below the atomics belong to the goroutine using the
// connection; pub/sub connections never set them once subscribed.
type conn struct {
	net.Conn
	g *guard

	exp     atomic.Int64 // unix ns: expiry of the token the server last accepted here; 0 unknown
	busy    atomic.Bool  // a request is being written: set by its first Write, cleared by a Read
	rslow   atomic.Bool  // Read has work: a reply to settle or remove, bytes read ahead
	resp3   atomic.Bool
	pubsub  atomic.Bool
	retired atomic.Bool
	closed  atomic.Bool

	pending   *pendingAuth // an AUTH or HELLO go-redis wrote, whose reply is unread
	inline    *creds       // an AUTH the guard wrote ahead of a request, whose reply is unread
	rbuf      []byte       // bytes read while looking for that reply, not yet delivered
	inTx      bool         // inside MULTI across requests: an AUTH now would be queued
	failedExp int64        // the server refused this token in a guard's AUTH: don't repeat it

	wmu sync.Mutex // pub/sub only: serialises go-redis's writes with an injected AUTH
}

type pendingAuth struct {
	exp, life  int64
	hello      bool
	user, pass string
}

func (c *conn) Write(b []byte) (int, error) {
	if c.pubsub.Load() {
		return c.lockedWrite(b)
	}
	if !c.busy.Load() {
		switch k := sniff(b); k {
		case reqAuth, reqHello, reqSubscribe:
			c.note(k, b) // AUTH and HELLO always pass: they are what renews a connection
		default:
			inTx := c.inTx
			switch k {
			case reqMulti:
				c.inTx = !endsWithExec(b)
			case reqExec:
				c.inTx = false
			}
			if e := c.exp.Load(); e != 0 {
				if e < c.g.dead.Load() {
					return 0, c.retire(e)
				}
				// Inside MULTI an AUTH would be queued, not run: wait for EXEC.
				if cur := c.g.cur.Load(); cur != nil && cur.exp > e && !inTx && cur.exp != c.failedExp {
					return c.writeRenewed(cur, b)
				}
				if e < c.g.below.Load() {
					return 0, c.retire(e)
				}
			}
		}
		c.busy.Store(true)
	}
	return c.Conn.Write(b)
}

// writeRenewed writes an AUTH with cur ahead of the request b, in one write.
func (c *conn) writeRenewed(cur *creds, b []byte) (int, error) {
	c.busy.Store(true)
	buf := make([]byte, 0, len(cur.req)+len(b))
	buf = append(append(buf, cur.req...), b...)
	n, err := c.Conn.Write(buf)
	if n >= len(cur.req) {
		c.inline = cur
		c.rslow.Store(true)
	}
	return max(n-len(cur.req), 0), err
}

func (c *conn) lockedWrite(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Conn.Write(b)
}

func (c *conn) Read(b []byte) (int, error) {
	if c.rslow.Load() {
		return c.slowRead(b)
	}
	n, err := c.Conn.Read(b)
	if c.busy.Load() {
		c.busy.Store(false)
	}
	return n, err
}

func (c *conn) slowRead(b []byte) (int, error) {
	if c.busy.Load() {
		c.busy.Store(false)
	}
	if c.inline != nil {
		if err := c.removeAuthReply(); err != nil {
			c.rslow.Store(false)
			return 0, err
		}
	}
	if len(c.rbuf) > 0 {
		n := copy(b, c.rbuf)
		c.rbuf = c.rbuf[n:]
		if len(c.rbuf) == 0 {
			c.rbuf = nil
			c.rslow.Store(c.pending != nil)
		}
		return n, nil
	}
	n, err := c.Conn.Read(b)
	if n > 0 && c.pending != nil {
		c.settle(b[0])
	}
	if c.pending == nil {
		c.rslow.Store(false)
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
	user, pass, ok := authArgs(k, b)
	if !ok {
		return
	}
	exp, life := c.g.tokenTimes(string(pass))
	c.pending = &pendingAuth{exp: exp, life: life, hello: k == reqHello, user: string(user), pass: string(pass)}
	c.rslow.Store(true)
}

// settle applies the pending AUTH/HELLO once its reply starts arriving: an error reply leaves the
// connection on its previous token, as the server does.
func (c *conn) settle(first byte) {
	p := c.pending
	c.pending = nil
	if first == '-' {
		return
	}
	if p.hello {
		c.resp3.Store(first == '%') // HELLO 3 answers with a map
	}
	if p.exp < 0 {
		c.exp.Store(0) // a token the guard cannot read: leave the connection alone
		return
	}
	c.exp.Store(p.exp)
	c.g.track(p.exp, p.life)
	c.g.offer(p.user, p.pass)
	c.g.subscribe()
}

// removeAuthReply reads until the reply to the guard's AUTH is complete, and cuts it out of the
// stream. RESP3 push messages ahead of it are kept for go-redis.
func (c *conn) removeAuthReply() error {
	for {
		for i := 0; i < len(c.rbuf); {
			l := frameLen(c.rbuf[i:])
			if l == 0 {
				break // incomplete
			}
			if l < 0 {
				return errBadReply
			}
			if c.rbuf[i] == '>' {
				i += l
				continue
			}
			ok := c.rbuf[i] == '+'
			c.rbuf = append(c.rbuf[:i], c.rbuf[i+l:]...)
			c.renewed(ok)
			return nil
		}
		if len(c.rbuf) == cap(c.rbuf) {
			c.rbuf = append(c.rbuf, make([]byte, 512)...)[:len(c.rbuf)]
		}
		n, err := c.Conn.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
		c.rbuf = c.rbuf[:len(c.rbuf)+n]
		if err != nil && n == 0 {
			return err
		}
	}
}

func (c *conn) renewed(ok bool) {
	cur := c.inline
	c.inline = nil
	h := c.g.h
	if ok {
		c.exp.Store(cur.exp)
		c.g.track(cur.exp, cur.life)
		h.reauths.Add(1)
		return
	}
	c.failedExp = cur.exp
	h.reauthFailures.Add(1)
	addr := c.remote()
	h.emit(Event{Kind: EventReauthFailed, Addr: addr, ExpiresOn: time.Unix(0, cur.exp)}, slog.LevelWarn,
		"entraredis: the server refused the new token on an open connection; it stays on its current one",
		slog.String("addr", addr))
}

// inject writes an AUTH on a pub/sub connection between go-redis's own writes.
func (c *conn) inject(cur *creds) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Conn.Write(cur.req)
	_ = c.Conn.SetWriteDeadline(time.Time{}) // go-redis sets its own before each write
	if err != nil {
		return err
	}
	c.exp.Store(cur.exp)
	c.g.track(cur.exp, cur.life)
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
	if _, ok := c.g.h.src.Token(); !ok {
		return errRetiredNoToken{}
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

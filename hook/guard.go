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

	"github.com/entraredis/entraredis/internal/resp"
	"github.com/entraredis/entraredis/jwtutil"
	"github.com/entraredis/entraredis/provider"
)

// The guard watches every connection of a hook (conn.go) and the provider's tokens.
//
// It follows the provider's newest token (a listener, and every handshake it sees). Connections
// are moved to it in place: on their next request (conn.go), and, when idle, by the guard's own
// goroutine shortly after the token arrives, spread with jitter and well before the old token
// expires (Microsoft asks for at least 3 minutes). The same goroutine keeps idle connections alive
// with a PING (Options.KeepAlive), since Azure closes connections idle for 10 minutes.
//
// Retirement, the fallback: a timer per token, at its expiry minus the margin, raises `below`
// once a newer token exists, and just before the expiry raises `dead`. A connection that could not
// be renewed (inside MULTI, or its AUTH was refused) fails its next request when under `below`,
// and any connection under `dead` does (the server is about to close it): in Write, before a
// byte leaves. Per command the guard costs a few atomic operations, no allocation, no clock read.
type guard struct {
	h *Hook

	below atomic.Int64 // unix ns: connections on tokens expiring before this are retired unless renewed
	dead  atomic.Int64 // unix ns: connections on tokens expiring before this are retired
	cur   atomic.Pointer[creds]

	mu         sync.Mutex
	closed     bool
	closedStop bool
	timers     map[int64]*time.Timer // one per token expiry seen on a connection
	conns      map[*conn]struct{}    // open guarded connections
	pubsubs    map[*conn]struct{}    // of which subscribed
	running    bool                  // the background goroutine (run) is running
	// manual: the background work (renewing idle connections, keep-alive) runs only when called
	// (renewIdle, keepAlive), never from the guard's own goroutine. Tests of pure logic on fake
	// connections set it, and drive that work by hand; setManual(false) starts the goroutine.
	manual   bool
	kick     chan struct{} // a newer token: renew idle connections
	stop     chan struct{} // closed by close
	subbed   bool
	unsub    auth.UnsubscribeFunc
	listener *listener
	wg       sync.WaitGroup
	// ctx ends with close: the guard's work in flight on a connection (an idle renewal, a
	// keep-alive, a pub/sub renewal) is cut short then, so that Hook.Close returns at once.
	ctx    context.Context
	cancel context.CancelFunc

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
	g.conns = make(map[*conn]struct{})
	g.pubsubs = make(map[*conn]struct{})
	g.kick = make(chan struct{}, 1)
	g.stop = make(chan struct{})
	g.listener = &listener{g: g}
	g.ctx, g.cancel = context.WithCancel(context.Background())
}

// guarded reports whether nc is already guarded (dialled through a wrapped Dialer and seen
// again by the DialHook).
func guarded(nc net.Conn) bool {
	switch nc.(type) {
	case *conn, *sysConn:
		return true
	}
	return false
}

// wrap guards nc; redial opens a new raw connection to the same server (for a RESP2 subscriber's
// move), nil when there is none.
func (g *guard) wrap(nc net.Conn, redial func(context.Context) (net.Conn, error)) net.Conn {
	c := &conn{Conn: nc, g: g, redial: redial}
	g.h.dials.Add(1)
	g.mu.Lock()
	g.conns[c] = struct{}{}
	if !g.running && !g.closed && !g.manual && g.h.keepAlive > 0 {
		g.start()
	}
	g.mu.Unlock()
	if sc, ok := nc.(syscall.Conn); ok {
		return newSysConn(c, sc)
	}
	return c
}

// setManual switches the guard's own goroutine off (manual) or on.
func (g *guard) setManual(manual bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.manual = manual
	if !manual && !g.running && !g.closed && len(g.conns) > 0 {
		g.start()
		select {
		case g.kick <- struct{}{}:
		default:
		}
	}
}

// forget drops a closed connection; the background goroutine ends with the last one.
func (g *guard) forget(c *conn) {
	g.mu.Lock()
	delete(g.conns, c)
	delete(g.pubsubs, c)
	last := len(g.conns) == 0 && g.running
	g.mu.Unlock()
	if last {
		select {
		case g.kick <- struct{}{}:
		default:
		}
	}
}

// live returns how many guarded connections are open.
func (g *guard) live() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
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
// one; then the pub/sub connections that can be are renewed, and the idle ones soon after.
//
// Newer is issued later (iat), and only between tokens issued in the same second, expiring
// later: the provider's newest token is the one to move to even when an older one outlives it (a
// token the cache refused, from another tenant or for another audience, lasting an hour, followed
// by good ones of 2 s: taken by expiry, every renewal would carry the refused one).
func (g *guard) offer(user, pass string) {
	exp, life := g.tokenTimes(pass)
	if exp <= 0 {
		return
	}
	for {
		cur := g.cur.Load()
		if cur != nil && !newer(exp, life, cur) {
			return
		}
		if g.cur.CompareAndSwap(cur, &creds{exp: exp, life: life, req: resp.AppendRequest(nil, "auth", user, pass)}) {
			break
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	if len(g.pubsubs) > 0 {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.rotatePubSub(exp, true)
		}()
	}
	if len(g.conns) > 0 && !g.manual {
		if !g.running {
			g.start()
		}
		select {
		case g.kick <- struct{}{}:
		default:
		}
	}
}

// newer reports whether a token of expiry exp and lifetime life was issued after cur (a token
// without iat has life 0: issued at 0, older than any with one).
func newer(exp, life int64, cur *creds) bool {
	iat, curIat := exp-life, cur.exp-cur.life
	if life == 0 {
		iat = 0
	}
	if cur.life == 0 {
		curIat = 0
	}
	return iat > curIat || iat == curIat && exp > cur.exp
}

// subscribe registers the guard with the provider once, after a first handshake, in the
// background: the token is cached by then, so Subscribe does not fetch. A failure is tried again
// with the provider's retry pacing until it succeeds or the hook is closed: until then,
// connections are renewed from handshakes only.
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
		for attempt := 0; ; attempt++ {
			c, unsub, err := g.h.src.Subscribe(g.listener)
			if err == nil {
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
				return
			}
			g.h.logf(slog.LevelWarn, "entraredis: subscribing to the provider failed; connections are renewed from handshakes until it succeeds",
				slog.Any("error", err), slog.Int("attempt", attempt+1))
			if errors.Is(err, provider.ErrClosed) {
				return
			}
			// The provider paces its own fetches (between two, it answers with its last error).
			t := time.NewTimer(g.h.backoff.Backoff(attempt + 1))
			select {
			case <-t.C:
			case <-g.stop:
				t.Stop()
				return
			}
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

// renewBy is how long before a token's expiry a connection should have moved off it: 3 minutes on
// real lifetimes (Microsoft's guidance), an eighth of the life for short ones, never less than the
// margin.
func (g *guard) renewBy(life int64) time.Duration {
	lead := 3 * time.Minute
	if life > 0 {
		lead = min(lead, time.Duration(life/8))
	}
	return max(lead, g.margin(life))
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
		g.closeDead(exp) // expire.go
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

func (g *guard) close() {
	g.mu.Lock()
	g.closed = true
	for exp, t := range g.timers {
		t.Stop()
		delete(g.timers, exp)
	}
	clear(g.pubsubs)
	if !g.closedStop {
		g.closedStop = true
		close(g.stop)
	}
	g.mu.Unlock()
	g.cancel()
	select {
	case g.kick <- struct{}{}: // wake run, which sees closed
	default:
	}
	g.wg.Wait()
	g.mu.Lock()
	unsub := g.unsub
	g.unsub = nil
	g.mu.Unlock()
	if unsub != nil {
		_ = unsub()
	}
}

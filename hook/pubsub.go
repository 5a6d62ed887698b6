package hook

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Pub/sub connections. go-redis never re-authenticates them, and they never pass the guard's
// request check (a subscriber only reads). The guard moves them to each new token without
// Receive, ReceiveMessage or Channel noticing:
//
//   - RESP3: a subscribed connection accepts AUTH. The guard writes one between go-redis's own
//     writes (the write side), marked at its reply's position (conn.go: subscription commands are
//     answered by pushes, which are not counted; every other command by one reply), and the read
//     side cuts the reply out. Nothing is lost.
//   - RESP2: a subscribed connection refuses AUTH. The guard opens a new connection underneath,
//     authenticates it with the new token, gives it the client name and library name/version
//     go-redis gave the old one, and subscribes it to everything the old one is subscribed to;
//     then go-redis's writes go to the new one, and the old one gets "PING s1", its
//     unsubscriptions (UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE: Redis 6.0, still Azure Cache for
//     Redis's default, has no RESET) and "PING s2", s1 and s2 random. Reads deliver the old
//     connection's frames up to s1's reply (among them the confirmations of go-redis's own
//     unsubscriptions written before the move), drop what comes between s1 and s2 (the guard's
//     confirmations, and messages the new connection receives too), and from s2 on come from the
//     new connection, starting with what it received meanwhile. No message is lost; a message
//     published while both connections were subscribed, up to s1, arrives twice. One move at a
//     time per connection, until its reads have switched (a token arriving before then leaves
//     the subscriber to the next token or the margin). If the move fails, it is logged and counted, and the old connection is
//     closed before its token expires so that go-redis reconnects (Receive returns that error once).
//
// RESP2 reads of a subscribed connection go through rbuf a whole frame at a time, so that the
// guard's own replies can be cut out at frame boundaries.

// pubsub is what a subscribed connection needs beyond conn.
type pubsub struct {
	c *conn

	rw     sync.Mutex // the connections below, between the two sides and Close/SetDeadline
	w, r   net.Conn   // where go-redis's writes go and its reads come from (RESP2 moves them)
	mv     *move      // RESP2: the move whose reads have not switched yet
	closed bool

	// guardWriting: the guard writes a request of its own on w under its own deadline; go-redis's
	// write deadlines are only recorded meanwhile (conn.wd) and put back after (guardWrite).
	guardWriting bool

	moving atomic.Bool        // a move (until its reads switch) or an AUTH of the guard's is under way: one at a time
	authAt atomic.Int64       // RESP3: unix ns when the guard's AUTH in flight was written; 0 none
	lost   atomic.Bool        // RESP3: the reply count is no longer sure: never renewed in place
	subs   [3]map[string]bool // RESP2: channels, patterns, shard channels subscribed (write side)
}

// startPubSub: the connection is subscribing (write side). From now on its replies are
// messages and the replies to go-redis's PINGs.
func (c *conn) startPubSub() {
	if c.ps.Load() != nil {
		return
	}
	ps := &pubsub{c: c, w: c.Conn, r: c.Conn}
	for i := range ps.subs {
		ps.subs[i] = map[string]bool{}
	}
	c.ps.Store(ps)
	c.state.Store(statePubSub) // the guard hears of it once the request is written (conn.write)
}

// pubsubWrite writes go-redis's request on a subscriber (write side held).
func (c *conn) pubsubWrite(b []byte) (int, error) {
	if c.resp3.Load() {
		c.scanRequest(b)
		c.sentA.Store(c.sent)
	}
	return c.subscriberWrite(b)
}

// subscriberWrite writes b, already followed by the request scanner, on a subscriber.
func (c *conn) subscriberWrite(b []byte) (int, error) {
	ps := c.ps.Load()
	if !c.resp3.Load() {
		ps.follow(b)
	}
	return ps.writer().Write(b)
}

func (ps *pubsub) writer() net.Conn {
	ps.rw.Lock()
	defer ps.rw.Unlock()
	return ps.w
}

func (ps *pubsub) reader() net.Conn {
	ps.rw.Lock()
	defer ps.rw.Unlock()
	return ps.r
}

var (
	errNoRedial       = errors.New("entraredis: no dialer to move a RESP2 subscriber with")
	errNoSubs         = errors.New("entraredis: a RESP2 pub/sub connection subscribed to nothing: nothing to move")
	errLost           = errors.New("entraredis: a RESP3 subscriber's replies can no longer be followed: it is not renewed in place")
	errNotNow         = errors.New("entraredis: the subscriber is no longer one, or is mid-request")
	errAuthUnanswered = errors.New("entraredis: the guard's AUTH on a RESP3 subscriber was not answered in time")
)

// rotatePubSub moves pub/sub connections on tokens expiring before limit to the current token,
// in place over RESP3, to a new connection over RESP2, one move at a time per connection;
// unless onlyInPlace, one that could not be moved is closed while a new token is at hand, so
// that go-redis reconnects and re-subscribes.
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
		ps := c.ps.Load()
		if ps == nil {
			continue
		}
		var err error
		switch {
		case !ps.moving.CompareAndSwap(false, true):
			// Already being moved. Over RESP3 at the margin, an AUTH in flight gets the time a
			// reply takes; one whose reply never comes leaves the connection on its old token: it
			// is closed then rather than left for the server to close at expiry.
			if !onlyInPlace && c.resp3.Load() {
				g.awaitAuth(c, ps, cur)
			}
			continue
		case c.resp3.Load():
			err = c.inject(cur) // moving ends when its reply is read
		default:
			err = c.move(cur)
		}
		if err != nil {
			g.renewFailed(c, err, onlyInPlace)
		}
	}
}

// renewFailed reports a pub/sub connection that could not be moved to the new token, and closes
// it where nothing else will renew it before its token expires.
func (g *guard) renewFailed(c *conn, err error, onlyInPlace bool) {
	addr := c.remote()
	var de *moveDialError
	var we *authWriteError
	switch {
	case errors.As(err, &de):
		g.h.pubsubMoveFailures.Add(1)
		g.h.logf(slog.LevelWarn, "entraredis: a new connection for a pub/sub move could not be dialled",
			slog.String("addr", addr), slog.Any("error", err))
	case errors.As(err, &we):
		g.h.pubsubMoveFailures.Add(1)
		g.h.logf(slog.LevelWarn, "entraredis: the new token's AUTH could not be written on a RESP3 pub/sub connection",
			slog.String("addr", addr), slog.Any("error", err), slog.Bool("half_written", we.half))
	case errors.Is(err, errAuthUnanswered):
		g.h.pubsubMoveFailures.Add(1)
		g.h.logf(slog.LevelWarn, "entraredis: the guard's AUTH on a RESP3 pub/sub connection was not answered in time",
			slog.String("addr", addr))
	}
	// At the margin (not onlyInPlace) a subscriber that could not be renewed now (errNotNow:
	// mid-request) gets no other try before expiry: it is closed too, unless it is no longer one.
	// Half an AUTH on the wire breaks its request stream: closed at once.
	if (onlyInPlace && (we == nil || !we.half)) || c.state.Load() != statePubSub {
		return
	}
	_ = c.Close() // go-redis sees the error on its next read and reconnects
	g.h.pubsubClosed.Add(1)
	g.h.emit(Event{Kind: EventConnRetired, Addr: addr, ExpiresOn: time.Unix(0, c.exp.Load()), PubSub: true, Err: err},
		slog.LevelDebug, "entraredis: pub/sub connection closed before its token expired",
		slog.String("addr", addr), slog.Any("error", err))
}

// awaitAuth, at the margin, gives the guard's AUTH in flight on a RESP3 subscriber the time a
// reply takes (backgroundTimeout from its write), but no later than just before the connection's
// token expires; unanswered then, the subscriber is closed (errAuthUnanswered), a counted safety
// net. It waits in the background: the caller is the token's timer.
func (g *guard) awaitAuth(c *conn, ps *pubsub, cur *creds) {
	g.spawn(func() {
		at := ps.authAt.Load()
		if at == 0 {
			at = time.Now().UnixNano() // being written
		}
		until := at + int64(backgroundTimeout)
		if e := c.exp.Load(); e > 0 {
			until = min(until, e-int64(min(time.Second, g.margin(cur.life))/2))
		}
		if !g.pollUntil(5*time.Millisecond, until, func() bool { return !ps.moving.Load() }) {
			return
		}
		if ps.moving.Load() && c.exp.Load() < cur.exp {
			g.renewFailed(c, errAuthUnanswered, false)
		}
	})
}

func (g *guard) addPubSub(c *conn) {
	g.mu.Lock()
	if !g.closed {
		g.pubsubs[c] = struct{}{}
	}
	g.mu.Unlock()
}

// setDeadlines applies go-redis's deadlines to the connections a subscriber reads from and
// writes to.
func (ps *pubsub) setDeadlines(rd, wd time.Time, r, w bool) error {
	ps.rw.Lock()
	defer ps.rw.Unlock()
	var errs []error
	if r {
		errs = append(errs, ps.r.SetReadDeadline(rd))
		if ps.mv != nil {
			errs = append(errs, ps.mv.nc.SetReadDeadline(rd))
		}
	}
	if w && !ps.guardWriting {
		errs = append(errs, ps.w.SetWriteDeadline(wd))
	}
	return errors.Join(errs...)
}

// close closes every connection of the subscriber. The closes run after the lock: a TLS close
// writes close_notify (up to 5 s on a full socket), and the lock's other holders only set
// deadlines or pick a connection, which closed stops.
func (ps *pubsub) close() error {
	ps.rw.Lock()
	ps.closed = true
	conns := []net.Conn{ps.r}
	if ps.w != ps.r {
		conns = append(conns, ps.w)
	}
	if ps.mv != nil && ps.mv.nc != ps.w && ps.mv.nc != ps.r {
		conns = append(conns, ps.mv.nc)
	}
	ps.rw.Unlock()
	var errs []error
	for i := len(conns) - 1; i >= 0; i-- { // the reader last, as before
		errs = append(errs, conns[i].Close())
	}
	return errors.Join(errs...)
}

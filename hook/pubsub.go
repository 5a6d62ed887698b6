package hook

import (
	"log/slog"
	"sync"
	"time"

	"github.com/entraredis/entraredis/internal/resp"
)

// Pub/sub connections. go-redis never re-authenticates them, and they never pass the guard's
// request check (a subscriber only reads). Over RESP3 a subscribed connection accepts AUTH, so the
// guard writes one between go-redis's own writes and cuts its reply out of what go-redis reads:
// nothing is lost, and Receive never sees it. Over RESP2 it cannot: the connection is closed while
// a new token is at hand, and go-redis reconnects and re-subscribes.

// pubsubState is what a subscribed connection needs beyond conn.
type pubsubState struct {
	wmu  sync.Mutex          // serialises go-redis's writes with the guard's AUTH
	reqs resp.RequestScanner // go-redis's writes since subscribing (under wmu)

	mu    sync.Mutex // between the writers and the reader
	await []*creds   // the non-push replies awaited, in order: nil for go-redis's, the token of a guard's AUTH

	ready int // reader only: bytes at the head of rbuf that are go-redis's
}

// startPubSub: the connection is subscribing. From now on its replies are messages (pushes, over
// RESP3) and the replies to go-redis's PINGs.
func (c *conn) startPubSub() {
	if c.ps != nil {
		return
	}
	c.ps = &pubsubState{}
	c.pending = 0
	c.state.Store(statePubSub)
	c.g.addPubSub(c)
}

func (c *conn) pubsubWrite(b []byte) (int, error) {
	ps := c.ps
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	if c.resp3.Load() {
		_ = ps.reqs.Feed(b, func(name []byte) {
			switch {
			case isSubscription(name):
				// answered with pushes over RESP3
			default:
				ps.mu.Lock()
				ps.await = append(ps.await, nil)
				ps.mu.Unlock()
			}
		})
	}
	return c.Conn.Write(b)
}

// pubsubRead: over RESP3, frames are delivered whole and the reply to each of the guard's AUTHs is
// cut out; over RESP2 the stream passes as it is.
func (c *conn) pubsubRead(b []byte) (int, error) {
	if !c.resp3.Load() {
		return c.Conn.Read(b)
	}
	ps := c.ps
	for ps.ready == 0 {
		l, err := resp.FrameLen(c.rbuf)
		switch {
		case err != nil:
			return 0, errBadReply
		case l == 0:
			if err := c.fill(); err != nil {
				return 0, err
			}
		case resp.TypeOf(c.rbuf[:l]) != '>' && c.ownReply(resp.TypeOf(c.rbuf[:l])):
			c.rbuf = c.rbuf[l:]
		default:
			ps.ready = l
		}
	}
	n := copy(b, c.rbuf[:ps.ready])
	c.rbuf = c.rbuf[n:]
	ps.ready -= n
	return n, nil
}

// fill reads more of the stream into rbuf.
func (c *conn) fill() error {
	if len(c.rbuf) == cap(c.rbuf) {
		nb := make([]byte, len(c.rbuf), max(2*len(c.rbuf), 4096))
		copy(nb, c.rbuf)
		c.rbuf = nb
	}
	n, err := c.Conn.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
	c.rbuf = c.rbuf[:len(c.rbuf)+n]
	if n == 0 && err != nil {
		return err
	}
	return nil
}

// ownReply takes the next awaited reply off the list and reports whether it answers a guard's
// AUTH, after recording the answer.
func (c *conn) ownReply(first byte) bool {
	ps := c.ps
	ps.mu.Lock()
	if len(ps.await) == 0 {
		ps.mu.Unlock()
		return false
	}
	cur := ps.await[0]
	ps.await = ps.await[1:]
	ps.mu.Unlock()
	if cur == nil {
		return false
	}
	h := c.g.h
	if first != '+' {
		c.renewed(false, cur)
		return true
	}
	c.exp.Store(cur.exp)
	c.g.track(cur.exp, cur.life)
	h.pubsubReauths.Add(1)
	addr := c.remote()
	h.emit(Event{Kind: EventPubSubReauth, Addr: addr, ExpiresOn: time.Unix(0, cur.exp)},
		slog.LevelDebug, "entraredis: pub/sub connection re-authenticated in place",
		slog.String("addr", addr), slog.Time("expires_on", time.Unix(0, cur.exp)))
	return true
}

// inject writes an AUTH with cur on a RESP3 pub/sub connection, between go-redis's own writes.
func (c *conn) inject(cur *creds) error {
	ps := c.ps
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	ps.mu.Lock()
	ps.await = append(ps.await, cur)
	ps.mu.Unlock()
	_ = c.Conn.SetWriteDeadline(time.Now().Add(backgroundTimeout))
	_, err := c.Conn.Write(cur.req)
	_ = c.Conn.SetWriteDeadline(unixTime(c.wd.Load()))
	return err
}

// rotatePubSub moves pub/sub connections on tokens expiring before limit to the current token:
// in place over RESP3; over RESP2 (unless onlyInPlace) by closing them while a new token is at
// hand, so that go-redis reconnects and re-subscribes at once.
func (g *guard) rotatePubSub(limit int64, onlyInPlace bool) {
	cur := g.cur.Load()
	if cur == nil {
		return
	}
	g.mu.Lock()
	var cs []*conn
	for c := range g.pubsubs {
		if e := c.exp.Load(); e > 0 && e < limit && e < cur.exp && !c.inFlight(cur) {
			cs = append(cs, c)
		}
	}
	g.mu.Unlock()
	for _, c := range cs {
		if c.resp3.Load() {
			if err := c.inject(cur); err == nil {
				continue
			}
		}
		if onlyInPlace {
			continue
		}
		_ = c.Conn.Close() // go-redis sees the error on its next read and reconnects
		g.h.pubsubClosed.Add(1)
		addr := c.remote()
		g.h.emit(Event{Kind: EventConnRetired, Addr: addr, ExpiresOn: time.Unix(0, c.exp.Load()), PubSub: true},
			slog.LevelDebug, "entraredis: pub/sub connection closed before its token expired",
			slog.String("addr", addr))
	}
}

// inFlight reports whether an AUTH with cur already awaits its reply on c.
func (c *conn) inFlight(cur *creds) bool {
	ps := c.ps
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, a := range ps.await {
		if a == cur {
			return true
		}
	}
	return false
}

func (g *guard) addPubSub(c *conn) {
	g.mu.Lock()
	if !g.closed {
		g.pubsubs[c] = struct{}{}
	}
	g.mu.Unlock()
}

// isSubscription: (P|S)(UN)SUBSCRIBE, answered with pushes over RESP3.
func isSubscription(name []byte) bool {
	switch resp.KindOf(name) {
	case resp.Subscribe, resp.PSubscribe, resp.SSubscribe:
		return true
	}
	for _, s := range [...]string{"unsubscribe", "punsubscribe", "sunsubscribe"} {
		if resp.EqualFold(name, s) {
			return true
		}
	}
	return false
}

package hook

import (
	"context"
	"log/slog"
	"time"
)

// RESP3 subscribers: renewed in place, an AUTH written between go-redis's own writes (see
// pubsub.go).

// pubsubAuthed records the answer to an AUTH the guard wrote on a RESP3 subscriber.
func (c *conn) pubsubAuthed(ok bool, cur *creds) {
	if ps := c.ps.Load(); ps != nil && c.resp3.Load() {
		ps.moving.Store(false) // a RESP2 subscriber's (an AUTH ahead of its SUBSCRIBE) leaves a move alone
	}
	if !ok {
		c.renewed(false, cur)
		return
	}
	c.pubsubRenewed(cur, false)
}

// pubsubRenewed records a pub/sub connection on cur: re-authenticated in place, or moved.
func (c *conn) pubsubRenewed(cur *creds, moved bool) {
	h := c.g.h
	c.exp.Store(cur.exp)
	c.g.track(cur.exp, cur.life)
	h.acceptedInPlace(cur.req) // the server accepted the token (the AUTH, or the new connection's): a block of it ends
	msg := "entraredis: pub/sub connection re-authenticated in place"
	if moved {
		h.pubsubMoved.Add(1)
		msg = "entraredis: RESP2 pub/sub connection moved to a new connection on the new token"
	} else {
		h.pubsubReauths.Add(1)
	}
	addr := c.remote()
	h.emit(Event{Kind: EventPubSubReauth, Addr: addr, ExpiresOn: time.Unix(0, cur.exp)}, slog.LevelDebug, msg,
		slog.String("addr", addr), slog.Time("expires_on", time.Unix(0, cur.exp)))
}

// inject writes an AUTH with cur on a RESP3 subscriber, between go-redis's own writes; the read
// side cuts its reply out at the mark. The write runs under the guard's own deadline: the one
// go-redis set when it last wrote (SUBSCRIBE, maybe hours ago) has long lapsed on a subscriber
// that only reads. A write that fails takes back what it announced (the mark, the count,
// moving), so that a later try, or the margin, finds the subscriber as it was.
func (c *conn) inject(cur *creds) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	ps := c.ps.Load()
	if c.state.Load() != statePubSub || c.reqs.Mid() {
		ps.moving.Store(false)
		return errNotNow
	}
	if ps.lost.Load() {
		ps.moving.Store(false)
		return errLost
	}
	m := mark{at: c.sent, cur: cur}
	c.addMark(m)
	c.sent++
	c.sentA.Store(c.sent)
	ps.authAt.Store(time.Now().UnixNano())
	n, err := ps.guardWrite(cur.req)
	if err == nil {
		return nil
	}
	c.dropMark(m)
	c.sent--
	c.sentA.Store(c.sent)
	ps.authAt.Store(0)
	ps.moving.Store(false)
	return &authWriteError{err: err, half: n > 0}
}

// guardWrite writes b, a request of the guard's, on the connection go-redis's writes go to, under
// the guard's deadline; go-redis's write deadline, recorded meanwhile, is put back after (write
// side held).
func (ps *pubsub) guardWrite(b []byte) (int, error) {
	ps.rw.Lock()
	w := ps.w
	ps.guardWriting = true
	_ = w.SetWriteDeadline(time.Now().Add(backgroundTimeout))
	ps.rw.Unlock()
	abort := context.AfterFunc(ps.c.g.ctx, func() { _ = w.SetWriteDeadline(time.Now()) }) // Hook.Close
	n, err := w.Write(b)
	abort()
	ps.rw.Lock()
	ps.guardWriting = false
	_ = w.SetWriteDeadline(unixTime(ps.c.wd.Load()))
	ps.rw.Unlock()
	return n, err
}

// authWriteError: the guard's AUTH could not be written on a RESP3 subscriber; half, part of it
// reached the server (the subscriber's request stream is then broken: it is closed).
type authWriteError struct {
	err  error
	half bool
}

func (e *authWriteError) Error() string {
	return "entraredis: writing the new token's AUTH on a RESP3 pub/sub connection: " + e.err.Error()
}
func (e *authWriteError) Unwrap() error { return e.err }

package hook

import (
	"log/slog"
	"time"
)

// RESP3 subscribers: renewed in place, an AUTH written between go-redis's own writes (see
// pubsub.go).

// pubsubAuthed records the answer to an AUTH the guard wrote on a RESP3 subscriber.
func (c *conn) pubsubAuthed(ok bool, cur *creds) {
	if ps := c.ps.Load(); ps != nil {
		ps.moving.Store(false)
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
// side cuts its reply out at the mark.
func (c *conn) inject(cur *creds) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	ps := c.ps.Load()
	if c.state.Load() != statePubSub || c.reqs.Mid() {
		ps.moving.Store(false)
		return errNotNow
	}
	c.addMark(mark{at: c.sent, cur: cur})
	c.sent++
	c.sentA.Store(c.sent)
	if _, err := ps.writer().Write(cur.req); err != nil {
		return err // go-redis's reader sees the broken connection
	}
	return nil
}

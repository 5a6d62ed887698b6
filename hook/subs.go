package hook

import (
	"strings"

	"github.com/entraredis/entraredis/internal/resp"
)

// Subscription commands: (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE. Their reply depends on the protocol
// and on what the server makes of them, so the guard does not assume it; it follows what the
// server sends:
//
//   - RESP3: answered by pushes (one per channel, or one when there is none), which answer no
//     command and are not counted; but a refused one (NOPERM from a channel rule, SSUBSCRIBE or
//     SUNSUBSCRIBE unknown to Redis 6, CROSSSLOT, arity) gets one error reply instead, not a
//     push. A subscription mark, at the position of the replies before it, waits for either:
//     its confirmations (pushes of its own name, as many as its channels), or one error reply,
//     handed to go-redis and not counted. UNSUBSCRIBE and PUNSUBSCRIBE are never refused: not
//     marked, not counted.
//   - RESP2, not subscribed: (P)UNSUBSCRIBE gets one reply per channel named (one when none is);
//     SUNSUBSCRIBE the same, or one error from Redis 6, so with several channels the guard cannot
//     tell and stops renewing the connection in place. SUBSCRIBE makes it a subscriber, whose
//     replies the RESP2 reader follows (pubsub.go).
//
// A subscription command the guard cannot read whole (written in pieces, over 32 KiB) leaves it
// unsure of the count: the connection is unmanaged (a subscriber: lost, closed at the margin).

// subscription follows a subscription command written (write side).
func (c *conn) subscription(name, whole []byte) {
	lower := strings.ToLower(string(name))
	n := -1 // channels named; -1 unknown
	if whole != nil {
		if args, _, err := resp.SplitArgs(whole); err == nil {
			n = len(args) - 1
		}
	}
	if !c.resp3.Load() {
		switch {
		case c.state.Load() == statePubSub:
		case n < 0 || (n > 1 && lower == "sunsubscribe"):
			c.unmanaged("unsubscription")
			c.sent++
		default:
			c.sent += uint64(max(n, 1))
		}
		return
	}
	switch {
	case lower == "unsubscribe" || lower == "punsubscribe":
		return
	case n < 0:
		c.unmanaged("subscription in pieces")
		return
	case n == 0 && lower == "sunsubscribe":
		n = 1 // one push at least: popped on the first
	}
	c.addMark(mark{at: c.sent, sub: lower, n: n})
}

// subAnswered acts on the whole frame at the head of what is not ready yet, for the head mark m,
// a subscription's: its confirmation (counted down), another push (go-redis's), or its error
// reply (go-redis's, not counted). Read side.
func (c *conn) subAnswered(m mark, frame []byte) {
	c.ready += len(frame)
	if resp.TypeOf(frame) != '>' {
		c.popMark()
		return
	}
	if !pushNamed(frame, m.sub) {
		return
	}
	c.mk.Lock()
	c.marks[0].n--
	done := c.marks[0].n <= 0
	c.mk.Unlock()
	if done {
		c.popMark()
	}
}

// pushNamed: frame is a push whose first element is name.
func pushNamed(frame []byte, name string) bool {
	// A push is laid out as a request is (">N", then bulk strings): read it as one.
	var b [64]byte
	k := copy(b[:], frame)
	if k == 0 || b[0] != '>' {
		return false
	}
	b[0] = '*'
	return resp.EqualFold(resp.Name(b[:k]), name)
}

// isUnsubscription: (P|S)UNSUBSCRIBE, names resp.KindOf leaves out (11 and 12 bytes).
func isUnsubscription(name []byte) bool {
	switch len(name) {
	case 11:
		return resp.EqualFold(name, "unsubscribe")
	case 12:
		return resp.EqualFold(name, "punsubscribe") || resp.EqualFold(name, "sunsubscribe")
	}
	return false
}

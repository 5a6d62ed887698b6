package hook

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/entraredis/entraredis/internal/resp"
)

// Pub/sub connections. go-redis never re-authenticates them, and they never pass the guard's
// request check (a subscriber only reads). The guard moves them to each new token without
// Receive, ReceiveMessage or Channel noticing:
//
//   - RESP3: a subscribed connection accepts AUTH. The guard writes one between go-redis's own
//     writes and cuts its reply out of what go-redis reads. Nothing is lost.
//   - RESP2: a subscribed connection refuses AUTH. The guard opens a new connection underneath,
//     authenticates it with the new token and subscribes it to everything the old one is
//     subscribed to; then go-redis's writes go to the new one, the old one is unsubscribed from
//     everything (UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE: Redis 6.0, still Azure Cache for
//     Redis's default, has no RESET), and once its last message and confirmation are read, reads
//     come from the new one. No message is lost; one published during that round trip can
//     arrive twice (on both connections). If the move fails, the old connection is closed before
//     its token expires and go-redis reconnects (Receive then returns that error once).
//
// Reads of a subscribed connection go through rbuf a whole frame at a time, so that the guard's
// own replies (AUTH's, the old connection's unsubscriptions) can be cut out at frame boundaries.

// pubsubState is what a subscribed connection needs beyond conn.
type pubsubState struct {
	w, r atomic.Pointer[net.Conn] // where go-redis's writes go and its reads come from

	wmu  sync.Mutex          // serialises go-redis's writes with the guard's
	reqs resp.RequestScanner // go-redis's writes since subscribing (under wmu)
	subs [3]map[string]bool  // RESP2: channels, patterns, shard channels subscribed (under wmu)

	mu     sync.Mutex // between the writers and the reader
	await  []*creds   // RESP3: non-push replies awaited, in order: nil for go-redis's, the token of a guard's AUTH
	moving bool       // RESP2: the old connection is being unsubscribed, reads move after its last confirmation
	unsubs int        // RESP2: the old connection's unsubscribe confirmations still to come
	early  []byte     // RESP2: messages the new connection received before reads moved to it

	ready int // reader only: bytes at the head of rbuf that are go-redis's
}

var (
	subCommands   = [3]string{"subscribe", "psubscribe", "ssubscribe"}
	unsubCommands = [3]string{"unsubscribe", "punsubscribe", "sunsubscribe"}
)

// startPubSub: the connection is subscribing. From now on its replies are messages and the
// replies to go-redis's PINGs.
func (c *conn) startPubSub() {
	if c.ps.Load() != nil {
		return
	}
	ps := &pubsubState{}
	ps.w.Store(&c.Conn)
	ps.r.Store(&c.Conn)
	for i := range ps.subs {
		ps.subs[i] = map[string]bool{}
	}
	c.ps.Store(ps)
	c.pending = 0
	c.state.Store(statePubSub)
	c.g.addPubSub(c)
}

func (c *conn) pubsubWrite(b []byte) (int, error) {
	ps := c.ps.Load()
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	if c.resp3.Load() {
		_ = ps.reqs.Feed(b, func(name []byte) {
			if !isSubscription(name) { // those are answered with pushes over RESP3
				ps.mu.Lock()
				ps.await = append(ps.await, nil)
				ps.mu.Unlock()
			}
		})
	} else {
		ps.follow(b)
	}
	return (*ps.w.Load()).Write(b)
}

// follow records what go-redis subscribes to and unsubscribes from, for a RESP2 move.
func (ps *pubsubState) follow(b []byte) {
	for len(b) > 0 {
		args, n, err := resp.SplitArgs(b)
		if err != nil || n == 0 || len(args) == 0 {
			return
		}
		b = b[n:]
		i := slices.Index(subCommands[:], strings.ToLower(string(args[0])))
		un := i < 0
		if un {
			if i = slices.Index(unsubCommands[:], strings.ToLower(string(args[0]))); i < 0 {
				continue // PING and the like
			}
			if len(args) == 1 {
				clear(ps.subs[i]) // all of them
			}
		}
		for _, a := range args[1:] {
			if un {
				delete(ps.subs[i], string(a))
			} else {
				ps.subs[i][string(a)] = true
			}
		}
	}
}

// pubsubRead delivers whole frames and cuts out the replies to the guard's own requests.
func (c *conn) pubsubRead(b []byte) (int, error) {
	ps := c.ps.Load()
	for ps.ready == 0 {
		l, err := resp.FrameLen(c.rbuf)
		if err != nil {
			return 0, errBadReply
		}
		if l == 0 {
			if err := c.fill(*ps.r.Load()); err != nil {
				return 0, err
			}
			continue
		}
		if c.resp3.Load() {
			if typ := resp.TypeOf(c.rbuf[:l]); typ != '>' && c.ownReply(typ) {
				c.rbuf = c.rbuf[l:]
				continue
			}
		} else if isUnsubscription(c.rbuf[:l]) {
			if early, ours, done := c.moved(); ours {
				c.rbuf = c.rbuf[l:]
				if done {
					c.rbuf = append(early, c.rbuf...)
				}
				continue
			}
		}
		ps.ready = l
	}
	n := copy(b, c.rbuf[:ps.ready])
	c.rbuf = c.rbuf[n:]
	ps.ready -= n
	return n, nil
}

// moved takes one of the old connection's unsubscribe confirmations during a RESP2 move (ours);
// after the last one (done), reads come from the new connection, starting with what it received
// meanwhile (early).
func (c *conn) moved() (early []byte, ours, done bool) {
	ps := c.ps.Load()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if !ps.moving {
		return nil, false, false
	}
	if ps.unsubs--; ps.unsubs > 0 {
		return nil, true, false
	}
	old := *ps.r.Load()
	ps.r.Store(ps.w.Load())
	early, ps.early, ps.moving = ps.early, nil, false
	_ = old.Close()
	return early, true, true
}

// isUnsubscription: a RESP2 (p|s)unsubscribe confirmation, as Redis writes it.
func isUnsubscription(frame []byte) bool {
	for _, p := range []string{"*3\r\n$11\r\nunsubscribe\r\n", "*3\r\n$12\r\npunsubscribe\r\n", "*3\r\n$12\r\nsunsubscribe\r\n"} {
		if bytes.HasPrefix(frame, []byte(p)) {
			return true
		}
	}
	return false
}

// fill reads more of the stream into rbuf.
func (c *conn) fill(from net.Conn) error {
	if len(c.rbuf) == cap(c.rbuf) {
		nb := make([]byte, len(c.rbuf), max(2*len(c.rbuf), 4096))
		copy(nb, c.rbuf)
		c.rbuf = nb
	}
	n, err := from.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
	c.rbuf = c.rbuf[:len(c.rbuf)+n]
	if n == 0 && err != nil {
		return err
	}
	return nil
}

// ownReply takes the next awaited reply off the list and reports whether it answers a guard's
// AUTH, after recording the answer.
func (c *conn) ownReply(first byte) bool {
	ps := c.ps.Load()
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
	if first != '+' {
		c.renewed(false, cur)
		return true
	}
	c.pubsubRenewed(cur, false)
	return true
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

// inject writes an AUTH with cur on a RESP3 pub/sub connection, between go-redis's own writes.
func (c *conn) inject(cur *creds) error {
	ps := c.ps.Load()
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	ps.mu.Lock()
	ps.await = append(ps.await, cur)
	ps.mu.Unlock()
	w := *ps.w.Load()
	_ = w.SetWriteDeadline(time.Now().Add(backgroundTimeout))
	_, err := w.Write(cur.req)
	_ = w.SetWriteDeadline(unixTime(c.wd.Load()))
	return err
}

// move moves a RESP2 subscriber to a new connection on cur (see the top of the file).
func (c *conn) move(cur *creds) error {
	if c.redial == nil {
		return errNoRedial
	}
	ps := c.ps.Load()
	ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
	defer cancel()
	nc, err := c.redial(ctx)
	if err != nil {
		return err
	}
	ps.wmu.Lock() // go-redis subscribes to nothing new meanwhile
	defer ps.wmu.Unlock()
	if len(ps.subs[0])+len(ps.subs[1])+len(ps.subs[2]) == 0 {
		_ = nc.Close()
		return errNoSubs
	}
	req, n := append([]byte(nil), cur.req...), 0
	for i, sc := range subCommands {
		if len(ps.subs[i]) == 0 {
			continue
		}
		args := []string{sc}
		for s := range ps.subs[i] {
			args = append(args, s)
		}
		req, n = resp.AppendRequest(req, args...), n+len(args)-1
	}
	early, err := subscribeNew(nc, req, n)
	if err != nil {
		_ = nc.Close()
		return err
	}
	_ = nc.SetDeadline(time.Time{})
	// Reads move once the old connection has confirmed every unsubscription: one per channel.
	var unsub []byte
	want := 0
	for i, uc := range unsubCommands {
		if len(ps.subs[i]) > 0 {
			unsub, want = resp.AppendRequest(unsub, uc), want+len(ps.subs[i])
		}
	}
	old := *ps.w.Load()
	ps.mu.Lock()
	ps.w.Store(&nc)
	ps.moving, ps.early, ps.unsubs = true, early, want
	ps.mu.Unlock()
	_ = old.SetWriteDeadline(time.Now().Add(backgroundTimeout))
	if _, err := old.Write(unsub); err != nil {
		return err // the old connection is broken: go-redis's reader sees it, and reconnects
	}
	_ = old.SetWriteDeadline(unixTime(c.wd.Load()))
	c.pubsubRenewed(cur, true)
	return nil
}

var (
	errNoRedial = errors.New("entraredis: no dialer to move a RESP2 subscriber with")
	errNoSubs   = errors.New("entraredis: a RESP2 pub/sub connection subscribed to nothing: nothing to move")
)

// subscribeNew writes req (AUTH, then n subscriptions) on nc and reads its replies; messages
// that arrive between the confirmations are returned, to be delivered after the move.
func subscribeNew(nc net.Conn, req []byte, n int) (early []byte, err error) {
	_ = nc.SetDeadline(time.Now().Add(backgroundTimeout))
	if _, err := nc.Write(req); err != nil {
		return nil, err
	}
	var buf []byte
	authed := false
	for n > 0 || !authed {
		l, err := resp.FrameLen(buf)
		if err != nil {
			return nil, err
		}
		if l == 0 {
			chunk := make([]byte, 4096)
			m, err := nc.Read(chunk)
			buf = append(buf, chunk[:m]...)
			if m == 0 && err != nil {
				return nil, err
			}
			continue
		}
		frame := buf[:l]
		buf = buf[l:]
		switch {
		case !authed:
			if frame[0] != '+' {
				return nil, errors.New("entraredis: the new token was refused on a new pub/sub connection")
			}
			authed = true
		case isConfirmation(frame):
			n--
		default:
			early = append(early, frame...)
		}
	}
	return append(early, buf...), nil
}

// isConfirmation: a RESP2 (p|s)subscribe reply, as Redis writes it.
func isConfirmation(frame []byte) bool {
	for _, p := range []string{"*3\r\n$9\r\nsubscribe\r\n", "*3\r\n$10\r\npsubscribe\r\n", "*3\r\n$10\r\nssubscribe\r\n"} {
		if bytes.HasPrefix(frame, []byte(p)) {
			return true
		}
	}
	return false
}

// rotatePubSub moves pub/sub connections on tokens expiring before limit to the current token,
// in place over RESP3, to a new connection over RESP2; unless onlyInPlace, one that could not be
// moved is closed while a new token is at hand, so that go-redis reconnects and re-subscribes.
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
		var err error
		if c.resp3.Load() {
			err = c.inject(cur)
		} else {
			err = c.move(cur)
		}
		if err == nil || onlyInPlace {
			continue
		}
		_ = c.Close() // go-redis sees the error on its next read and reconnects
		g.h.pubsubClosed.Add(1)
		addr := c.remote()
		g.h.emit(Event{Kind: EventConnRetired, Addr: addr, ExpiresOn: time.Unix(0, c.exp.Load()), PubSub: true, Err: err},
			slog.LevelDebug, "entraredis: pub/sub connection closed before its token expired",
			slog.String("addr", addr), slog.Any("error", err))
	}
}

// inFlight reports whether c is already being moved to cur.
func (c *conn) inFlight(cur *creds) bool {
	ps := c.ps.Load()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.moving {
		return true
	}
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

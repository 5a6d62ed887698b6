package hook

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strconv"
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
//     time per connection. If the move fails, it is logged and counted, and the old connection is
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

	moving atomic.Bool        // a move or an AUTH of the guard's is under way: one at a time
	subs   [3]map[string]bool // RESP2: channels, patterns, shard channels subscribed (write side)
}

// move is a RESP2 move in flight, between the write side that starts it and the read side that
// finishes it.
type move struct {
	nc       net.Conn
	early    []byte // what the new connection received before reads switched to it
	s1, s2   []byte // the tails of the sentinel PINGs' replies on the old connection
	draining bool   // s1's reply was read: what comes until s2's is the guard's
}

var (
	subCommands   = [3]string{"subscribe", "psubscribe", "ssubscribe"}
	unsubCommands = [3]string{"unsubscribe", "punsubscribe", "sunsubscribe"}
)

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
		if c.reqs.Feed(b, func(name []byte) { c.command(name, nil) }) != nil {
			c.lostPlace()
		}
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

// follow records what go-redis subscribes to and unsubscribes from, for a RESP2 move.
func (ps *pubsub) follow(b []byte) {
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

// pubsubRead delivers a RESP2 subscriber's frames whole, and cuts out the replies to the
// guard's own requests during a move (read side held).
func (c *conn) pubsubRead(b []byte) (int, error) {
	ps := c.ps.Load()
	for c.ready == 0 {
		l, err := resp.FrameLen(c.rbuf)
		if err != nil {
			return 0, errBadReply
		}
		if l == 0 {
			if err := c.fill(ps.reader()); err != nil {
				return 0, err
			}
			continue
		}
		if ps.sift(c, l) {
			continue
		}
		c.ready = l
	}
	n := copy(b, c.rbuf[:c.ready])
	c.rbuf = c.rbuf[n:]
	c.ready -= n
	return n, nil
}

// sift acts on the frame of length l at the head of rbuf during a move, and reports whether it
// was the guard's (and is gone).
func (ps *pubsub) sift(c *conn, l int) bool {
	ps.rw.Lock()
	mv := ps.mv
	ps.rw.Unlock()
	if mv == nil {
		return false
	}
	frame := c.rbuf[:l]
	switch {
	case !mv.draining && isSentinel(frame, mv.s1):
		mv.draining = true
	case mv.draining && isSentinel(frame, mv.s2):
		ps.rw.Lock()
		old := ps.r
		ps.r, ps.mv = mv.nc, nil
		ps.rw.Unlock()
		_ = old.Close()
		_ = mv.nc.SetReadDeadline(unixTime(c.rd.Load()))
		c.rbuf = append(mv.early, c.rbuf[l:]...) // nothing else comes on the old one
		return true
	case !mv.draining:
		return false
	}
	c.rbuf = c.rbuf[l:]
	return true
}

// isSentinel: the reply to "PING s" in RESP2, subscribed (["pong", s]) or not (s).
func isSentinel(frame, tail []byte) bool {
	return bytes.HasSuffix(frame, tail) && (frame[0] == '$' || bytes.HasPrefix(frame, []byte("*2\r\n$4\r\npong\r\n")))
}

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

// move moves a RESP2 subscriber to a new connection on cur (see the top of the file).
func (c *conn) move(cur *creds) error {
	ps := c.ps.Load()
	if c.redial == nil {
		ps.moving.Store(false)
		return errNoRedial
	}
	ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
	defer cancel()
	nc, err := c.redial(ctx)
	if err != nil {
		ps.moving.Store(false)
		return &moveDialError{err}
	}
	c.wmu.Lock() // go-redis subscribes to nothing new meanwhile
	defer c.wmu.Unlock()
	if c.state.Load() != statePubSub {
		ps.moving.Store(false)
		_ = nc.Close()
		return errNotNow
	}
	if len(ps.subs[0])+len(ps.subs[1])+len(ps.subs[2]) == 0 {
		ps.moving.Store(false)
		_ = nc.Close()
		return errNoSubs
	}
	req := append([]byte(nil), cur.req...)
	req, extra := c.state0.replay(req)
	n := 0
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
	early, err := subscribeNew(nc, req, extra, n)
	if err != nil {
		ps.moving.Store(false)
		_ = nc.Close()
		return err
	}
	_ = nc.SetDeadline(time.Time{})
	_ = nc.SetWriteDeadline(unixTime(c.wd.Load()))
	s1, s2 := sentinel(), sentinel()
	unsub := resp.AppendRequest(nil, "ping", s1)
	for i, uc := range unsubCommands {
		if len(ps.subs[i]) > 0 {
			unsub = resp.AppendRequest(unsub, uc)
		}
	}
	unsub = resp.AppendRequest(unsub, "ping", s2)
	ps.rw.Lock()
	old := ps.w
	ps.w = nc
	ps.mv = &move{nc: nc, early: early, s1: bulkTail(s1), s2: bulkTail(s2)}
	ps.rw.Unlock()
	_ = old.SetWriteDeadline(time.Now().Add(backgroundTimeout))
	if _, err := old.Write(unsub); err != nil {
		return err // the old connection is broken: go-redis's reader sees it, and reconnects
	}
	_ = old.SetWriteDeadline(unixTime(c.wd.Load()))
	c.pubsubRenewed(cur, true)
	ps.moving.Store(false)
	return nil
}

func sentinel() string {
	var b [12]byte
	_, _ = cryptorand.Read(b[:])
	return "entraredis-move-" + hex.EncodeToString(b[:])
}

func bulkTail(s string) []byte { return []byte("$" + strconv.Itoa(len(s)) + "\r\n" + s + "\r\n") }

var (
	errNoRedial       = errors.New("entraredis: no dialer to move a RESP2 subscriber with")
	errNoSubs         = errors.New("entraredis: a RESP2 pub/sub connection subscribed to nothing: nothing to move")
	errNotNow         = errors.New("entraredis: the subscriber is no longer one, or is mid-request")
	errAuthUnanswered = errors.New("entraredis: the guard's AUTH on a RESP3 subscriber was not answered before the margin")
)

// moveDialError: the new connection of a RESP2 move could not be dialled.
type moveDialError struct{ err error }

func (e *moveDialError) Error() string {
	return "entraredis: dialling a new connection for a pub/sub move: " + e.err.Error()
}
func (e *moveDialError) Unwrap() error { return e.err }

// subscribeNew writes req (AUTH, extra replies expected from the client state's replay, then n
// subscriptions) on nc and reads its replies; messages that arrive between the confirmations
// are returned, to be delivered after the move.
func subscribeNew(nc net.Conn, req []byte, extra, n int) (early []byte, err error) {
	_ = nc.SetDeadline(time.Now().Add(backgroundTimeout))
	if _, err := nc.Write(req); err != nil {
		return nil, err
	}
	var buf []byte
	authed := false
	for n > 0 || !authed || extra > 0 {
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
		case extra > 0:
			extra-- // CLIENT SETNAME / SETINFO: an error (an old server) changes nothing else
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
			// Already being moved. Over RESP3 at the margin, an AUTH written earlier whose reply
			// was never matched (its mark never met) leaves the connection on its old token:
			// it is closed below rather than left for the server to close at expiry.
			if onlyInPlace || !c.resp3.Load() {
				continue
			}
			err = errAuthUnanswered
		case c.resp3.Load():
			err = c.inject(cur) // moving ends when its reply is read
		default:
			err = c.move(cur)
		}
		if err == nil {
			continue
		}
		addr := c.remote()
		var de *moveDialError
		if errors.As(err, &de) {
			g.h.pubsubMoveFailures.Add(1)
			g.h.logf(slog.LevelWarn, "entraredis: a new connection for a pub/sub move could not be dialled",
				slog.String("addr", addr), slog.Any("error", err))
		}
		// At the margin (not onlyInPlace) a subscriber that could not be renewed now (errNotNow:
		// mid-request) gets no other try before expiry: it is closed too, unless it is no
		// longer one.
		if onlyInPlace || c.state.Load() != statePubSub {
			continue
		}
		_ = c.Close() // go-redis sees the error on its next read and reconnects
		g.h.pubsubClosed.Add(1)
		g.h.emit(Event{Kind: EventConnRetired, Addr: addr, ExpiresOn: time.Unix(0, c.exp.Load()), PubSub: true, Err: err},
			slog.LevelDebug, "entraredis: pub/sub connection closed before its token expired",
			slog.String("addr", addr), slog.Any("error", err))
	}
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
	if w {
		errs = append(errs, ps.w.SetWriteDeadline(wd))
	}
	return errors.Join(errs...)
}

// close closes every connection of the subscriber.
func (ps *pubsub) close() error {
	ps.rw.Lock()
	defer ps.rw.Unlock()
	ps.closed = true
	var errs []error
	if ps.w != ps.r {
		errs = append(errs, ps.w.Close())
	}
	if ps.mv != nil && ps.mv.nc != ps.w {
		errs = append(errs, ps.mv.nc.Close())
	}
	errs = append(errs, ps.r.Close())
	return errors.Join(errs...)
}

// clientState is what go-redis set on a connection in its handshake, seen written (write side):
// a RESP2 subscriber's new connection gets it too.
type clientState struct {
	name            string
	libName, libVer string
	named, lib, ver bool
}

// client records CLIENT SETNAME and SETINFO; it reports false for CLIENT REPLY OFF or SKIP (the
// replies can no longer be counted) and for a CLIENT request it could not read whole.
func (s *clientState) client(whole []byte) bool {
	if whole == nil {
		return false
	}
	a, _, err := resp.SplitArgs(whole)
	if err != nil || len(a) < 2 {
		return true
	}
	switch {
	case resp.EqualFold(a[1], "reply"):
		return len(a) == 3 && resp.EqualFold(a[2], "on")
	case resp.EqualFold(a[1], "setname") && len(a) == 3:
		s.name, s.named = string(a[2]), true
	case resp.EqualFold(a[1], "setinfo") && len(a) == 4:
		switch {
		case resp.EqualFold(a[2], "lib-name"):
			s.libName, s.lib = string(a[3]), true
		case resp.EqualFold(a[2], "lib-ver"):
			s.libVer, s.ver = string(a[3]), true
		}
	}
	return true
}

// hello records HELLO's SETNAME.
func (s *clientState) hello(whole []byte) {
	a, _, err := resp.SplitArgs(whole)
	if err != nil {
		return
	}
	for i := 1; i+1 < len(a); i++ {
		if resp.EqualFold(a[i], "setname") {
			s.name, s.named = string(a[i+1]), true
		}
	}
}

// replay appends the requests that give a new connection the same state, and how many replies
// they get.
func (s *clientState) replay(req []byte) ([]byte, int) {
	n := 0
	if s.named {
		req, n = resp.AppendRequest(req, "client", "setname", s.name), n+1
	}
	if s.lib {
		req, n = resp.AppendRequest(req, "client", "setinfo", "lib-name", s.libName), n+1
	}
	if s.ver {
		req, n = resp.AppendRequest(req, "client", "setinfo", "lib-ver", s.libVer), n+1
	}
	return req, n
}

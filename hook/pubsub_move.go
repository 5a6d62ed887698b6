package hook

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/entraredis/entraredis/internal/resp"
)

// RESP2 subscribers: moved to a new connection per token (see pubsub.go).

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
		ps.moving.Store(false) // the move is over: the next may start
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

// move moves a RESP2 subscriber to a new connection on cur (see the top of the file).
func (c *conn) move(cur *creds) error {
	ps := c.ps.Load()
	if c.redial == nil {
		ps.moving.Store(false)
		return errNoRedial
	}
	ctx, cancel := context.WithTimeout(c.g.ctx, backgroundTimeout) // Hook.Close cuts it short
	defer cancel()
	nc, err := c.redial(ctx)
	if err != nil {
		ps.moving.Store(false)
		return &moveDialError{err}
	}
	// The new connection subscribes to what go-redis is subscribed to now without holding its
	// writes (a round trip on a new connection can outlast go-redis's WriteTimeout), then catches
	// up, holding them, with what go-redis changed meanwhile.
	c.wmu.Lock()
	if c.state.Load() != statePubSub {
		c.wmu.Unlock()
		ps.moving.Store(false)
		_ = nc.Close()
		return errNotNow
	}
	if len(ps.subs[0])+len(ps.subs[1])+len(ps.subs[2]) == 0 {
		c.wmu.Unlock()
		ps.moving.Store(false)
		_ = nc.Close()
		return errNoSubs
	}
	snap := ps.snapshot()
	c.wmu.Unlock()
	req := append([]byte(nil), cur.req...)
	req, extra := c.state0.replay(req)
	req, n := appendSubs(req, snap, nil)
	abort := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	defer abort()
	early, rest, err := subscribeNew(nc, nil, req, true, extra, n)
	if err != nil {
		ps.moving.Store(false)
		_ = nc.Close()
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.state.Load() != statePubSub {
		ps.moving.Store(false)
		_ = nc.Close()
		return errNotNow
	}
	if diff, n := appendSubs(nil, ps.subs, &snap); n > 0 {
		more, r, err := subscribeNew(nc, rest, diff, false, 0, n)
		if err != nil {
			ps.moving.Store(false)
			_ = nc.Close()
			return err
		}
		early, rest = append(early, more...), r
	}
	early = append(early, rest...)
	abort() // nc is about to be go-redis's: no deadline of the move's reaches it after this
	_ = nc.SetDeadline(time.Time{})
	s1, s2 := sentinel(), sentinel()
	unsub := resp.AppendRequest(nil, "ping", s1)
	for i, uc := range unsubCommands {
		if len(ps.subs[i]) > 0 {
			unsub = resp.AppendRequest(unsub, uc)
		}
	}
	unsub = resp.AppendRequest(unsub, "ping", s2)
	ps.rw.Lock()
	if ps.closed {
		// Closed while the new connection subscribed (an app's shutdown): it goes too.
		ps.rw.Unlock()
		ps.moving.Store(false)
		_ = nc.Close()
		return errNotNow
	}
	old := ps.w
	ps.w = nc
	// go-redis's write deadline, under ps.rw: one it sets meanwhile (before its next write, without
	// the write side) lands on nc either way, not on old with nc left on a lapsed one.
	_ = nc.SetWriteDeadline(unixTime(c.wd.Load()))
	ps.mv = &move{nc: nc, early: early, s1: bulkTail(s1), s2: bulkTail(s2)}
	ps.rw.Unlock()
	_ = old.SetWriteDeadline(time.Now().Add(backgroundTimeout))
	abort = context.AfterFunc(c.g.ctx, func() { _ = old.SetWriteDeadline(time.Now()) })
	_, err = old.Write(unsub)
	abort()
	if err != nil {
		return err // the old connection is broken: go-redis's reader sees it, and reconnects
	}
	_ = old.SetWriteDeadline(unixTime(c.wd.Load()))
	c.pubsubRenewed(cur, true)
	// moving stays set until the reads switch (sift, at s2's reply): a second move started before
	// then would replace ps.mv, and the reader, still on this move's old connection, would hand
	// this move's sentinel replies and confirmations to go-redis.
	return nil
}

func sentinel() string {
	var b [12]byte
	_, _ = cryptorand.Read(b[:])
	return "entraredis-move-" + hex.EncodeToString(b[:])
}

func bulkTail(s string) []byte { return []byte("$" + strconv.Itoa(len(s)) + "\r\n" + s + "\r\n") }

// moveDialError: the new connection of a RESP2 move could not be dialled.
type moveDialError struct{ err error }

func (e *moveDialError) Error() string {
	return "entraredis: dialling a new connection for a pub/sub move: " + e.err.Error()
}
func (e *moveDialError) Unwrap() error { return e.err }

// subscribeNew writes req on nc and reads its answers, after what buf holds: the AUTH's (auth),
// extra replies (the client state's replay), then n subscription commands' (a confirmation, or
// an error for a refused one: go-redis had it on the old connection). Frames between them
// (messages) are returned in early, to be delivered after the move; what was read past the last
// answer in rest.
func subscribeNew(nc net.Conn, buf, req []byte, auth bool, extra, n int) (early, rest []byte, err error) {
	_ = nc.SetDeadline(time.Now().Add(backgroundTimeout))
	if _, err := nc.Write(req); err != nil {
		return nil, nil, err
	}
	for n > 0 || auth || extra > 0 {
		l, err := resp.FrameLen(buf)
		if err != nil {
			return nil, nil, err
		}
		if l == 0 {
			chunk := make([]byte, 4096)
			m, err := nc.Read(chunk)
			buf = append(buf, chunk[:m]...)
			if m == 0 && err != nil {
				return nil, nil, err
			}
			continue
		}
		frame := buf[:l]
		buf = buf[l:]
		switch {
		case auth:
			if frame[0] != '+' {
				return nil, nil, errors.New("entraredis: the new token was refused on a new pub/sub connection")
			}
			auth = false
		case extra > 0:
			extra-- // CLIENT SETNAME / SETINFO: an error (an old server) changes nothing else
		case frame[0] == '-' || isConfirmation(frame):
			n--
		default:
			early = append(early, frame...)
		}
	}
	return early, buf, nil
}

// snapshot copies what go-redis is subscribed to (write side held).
func (ps *pubsub) snapshot() (s [3]map[string]bool) {
	for i := range s {
		s[i] = maps.Clone(ps.subs[i])
	}
	return s
}

// appendSubs appends to req a command per channel of subs (one confirmation or one error each),
// or, with since, per channel subscribed or unsubscribed since then; it returns how many.
func appendSubs(req []byte, subs [3]map[string]bool, since *[3]map[string]bool) ([]byte, int) {
	n := 0
	for i := range subs {
		for ch := range subs[i] {
			if since == nil || !since[i][ch] {
				req, n = resp.AppendRequest(req, subCommands[i], ch), n+1
			}
		}
		if since == nil {
			continue
		}
		for ch := range since[i] {
			if !subs[i][ch] {
				req, n = resp.AppendRequest(req, unsubCommands[i], ch), n+1
			}
		}
	}
	return req, n
}

// isConfirmation: a RESP2 (p|s)(un)subscribe reply, as Redis writes it.
func isConfirmation(frame []byte) bool {
	for _, p := range []string{"*3\r\n$9\r\nsubscribe\r\n", "*3\r\n$10\r\npsubscribe\r\n", "*3\r\n$10\r\nssubscribe\r\n",
		"*3\r\n$11\r\nunsubscribe\r\n", "*3\r\n$12\r\npunsubscribe\r\n", "*3\r\n$12\r\nsunsubscribe\r\n"} {
		if bytes.HasPrefix(frame, []byte(p)) {
			return true
		}
	}
	return false
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

package hook

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/entraredis/entraredis/internal/resp"
)

// conn is a guarded connection: every net.Conn go-redis dials through the hook, or through the
// dialer the root package wraps, is one. It knows which token the server last accepted on it, and
// where it stands in its request/reply stream, so that the guard can renew it in place.
//
// States (go-redis uses a connection from one goroutine at a time; the guard's background work
// takes it only while it is idle):
//
//	          Write (a request starts)              Read ends the last outstanding reply
//	┌──────┐ ─────────────────────────▶ ┌──────┐ ─────────────────────────────────────▶ ┌──────┐
//	│ idle │                            │ busy │                                        │ idle │
//	└──────┘ ◀───────────────┐          └──────┘                                        └──────┘
//	    │ guard: renew idle  │ done
//	    ▼ or keep alive      │          A Write, or go-redis's health check (a peek at the
//	┌────────────┐           │          socket), that arrives meanwhile waits for it: the
//	│ background │ ──────────┘          server's reply is read and removed before either.
//	└────────────┘
//
//	any ── SUBSCRIBE ───────────────────────▶ pubsub     renewed by pubsub.go, never idle
//	any ── MONITOR, a stream it cannot follow ──▶ unmanaged  only retired
//
// At the start of each request (idle -> busy) the connection is retired if its token is about
// to expire and cannot be renewed, or renewed in place: "AUTH user token" goes in the same write,
// ahead of the request, and its reply is removed before go-redis reads. The request and reply
// streams are scanned (headers only: a few ns per command) to know when a connection is idle
// and whether it sits inside MULTI, whatever the write and read boundaries.
type conn struct {
	net.Conn
	g *guard

	state atomic.Int32 // a connState
	exp   atomic.Int64 // unix ns: expiry of the token the server last accepted here; 0 unknown
	resp3 atomic.Bool
	uses  atomic.Uint32 // requests started: the keep-alive tells idle connections by it
	lost  atomic.Bool   // a background operation failed: the connection is unusable
	done  atomic.Bool   // closed
	rd    atomic.Int64  // go-redis's read deadline (unix ns), restored after background work
	wd    atomic.Int64  // go-redis's write deadline
	bg    sync.Mutex    // held by background work; a request or health check waits on it

	// Below: owned by whoever holds the connection (go-redis's goroutine, or background work).
	pending   int                 // replies outstanding
	reqs      resp.RequestScanner // the request stream
	reps      resp.ReplyScanner   // the reply stream, as go-redis reads it
	inTx      bool                // inside MULTI: an AUTH now would be queued, not run
	auth      *pendingAuth        // an AUTH/HELLO go-redis wrote, whose reply is unread
	inline    *creds              // an AUTH the guard wrote ahead of a request, reply unread
	rbuf      []byte              // bytes read while removing that reply, not yet delivered
	slow      bool                // Read has work: auth, inline or rbuf
	readSince bool                // go-redis read since the request started
	failedExp int64               // the server refused this token in a guard's AUTH: not again
	seenUses  uint32              // the keep-alive's last look at uses (guard goroutine only)

	ps     atomic.Pointer[pubsubState]             // set once the connection subscribes
	redial func(context.Context) (net.Conn, error) // a new raw connection to the same server
}

type connState = int32

const (
	stateIdle connState = iota
	stateBusy
	stateBackground
	statePubSub
	stateUnmanaged
)

type pendingAuth struct {
	exp, life  int64
	hello      bool
	user, pass string
}

func (c *conn) Write(b []byte) (int, error) {
	switch c.state.Load() {
	case stateBusy:
		if !c.readSince || c.reqs.Mid() {
			c.scanRequest(b) // the rest of a request (bufio flushes a large one in pieces)
			return c.Conn.Write(b)
		}
		// go-redis read and now writes again, so it has every reply it wanted, whatever the
		// count says (a reply the scanner could not follow): start afresh rather than never be
		// idle, renewed or retired again.
		c.pending, c.reps = 0, resp.ReplyScanner{}
		c.state.Store(stateIdle)
	case statePubSub:
		return c.pubsubWrite(b)
	case stateUnmanaged:
		if e := c.exp.Load(); e != 0 && e < c.g.dead.Load() {
			return 0, c.retire(e)
		}
		return c.Conn.Write(b)
	}
	if !c.begin() {
		return c.Write(b) // it became pub/sub or unmanaged meanwhile
	}
	c.readSince = false
	c.uses.Add(1)
	name, n, _ := resp.RequestLen(b) // the first command, whole (n > 0) or not
	if n == 0 {
		name = resp.Name(b)
	}
	if k := kindOf(name); k == resp.Auth || k == resp.Hello {
		c.note(k, b) // AUTH and HELLO always pass: they are what renews a connection
	} else if cur, err := c.check(); err != nil {
		c.state.Store(stateIdle)
		return 0, err
	} else if cur != nil {
		return c.writeRenewed(cur, b)
	}
	if n > 0 {
		c.command(name)
		c.scanRequest(b[n:])
	} else {
		c.scanRequest(b)
	}
	if c.ps.Load() != nil {
		return c.pubsubWrite(b) // this request subscribed
	}
	return c.Conn.Write(b)
}

// check decides, at the start of a request, whether the connection is renewed in place (cur, a
// newer token), retired (err, before anything is sent), or used as it is (neither).
func (c *conn) check() (cur *creds, err error) {
	e := c.exp.Load()
	switch {
	case c.lost.Load():
		return nil, c.retire(e) // retired before, or broken in the guard's background work
	case e == 0:
		return nil, nil
	case e < c.g.dead.Load():
		return nil, c.retire(e)
	}
	// Inside MULTI an AUTH would be queued, not run: wait for EXEC.
	if cur := c.g.cur.Load(); cur != nil && cur.exp > e && !c.inTx && cur.exp != c.failedExp {
		return cur, nil
	}
	if e < c.g.below.Load() {
		return nil, c.retire(e)
	}
	return nil, nil
}

// begin moves an idle connection to busy, waiting for background work to end; it reports false
// when the connection is in neither state.
func (c *conn) begin() bool {
	for {
		switch c.state.Load() {
		case stateIdle:
			if c.state.CompareAndSwap(stateIdle, stateBusy) {
				return true
			}
		case stateBackground:
			c.bg.Lock()
			c.bg.Unlock() //nolint:staticcheck // waiting for the background work to end
		case stateBusy:
			return true
		default:
			return false
		}
	}
}

// scanRequest counts the commands of a request as they are written, and follows MULTI. Whole
// commands are read at once; the scanner takes what a write leaves unfinished.
func (c *conn) scanRequest(b []byte) {
	for !c.reqs.Mid() && len(b) > 0 {
		name, n, err := resp.RequestLen(b)
		if err != nil || n == 0 {
			break
		}
		c.command(name)
		b = b[n:]
	}
	if len(b) > 0 && c.reqs.Feed(b, func(name []byte) { c.command(name) }) != nil {
		c.unmanaged("request")
	}
}

func (c *conn) command(name []byte) {
	c.pending++
	switch kindOf(name) {
	case resp.Multi:
		c.inTx = true
	case resp.Exec, resp.Discard, resp.Reset:
		c.inTx = false
	case resp.Subscribe, resp.PSubscribe, resp.SSubscribe:
		c.startPubSub()
	case resp.Monitor:
		c.unmanaged("MONITOR")
	}
}

// unmanaged: the connection's stream can no longer be followed; it is only retired from now on.
func (c *conn) unmanaged(why string) {
	c.state.Store(stateUnmanaged)
	c.g.h.logf(slog.LevelDebug, "entraredis: a connection is no longer renewed in place, only retired before its token expires",
		slog.String("addr", c.remote()), slog.String("why", why))
}

// kindOf is resp.KindOf without the comparisons for most commands (GET, SET...): the names it
// knows are 4 to 11 bytes long.
func kindOf(name []byte) resp.Kind {
	if len(name) < 4 || len(name) > 11 {
		return resp.Other
	}
	return resp.KindOf(name)
}

// writeRenewed writes an AUTH with cur ahead of the request b, in one write.
func (c *conn) writeRenewed(cur *creds, b []byte) (int, error) {
	buf := make([]byte, 0, len(cur.req)+len(b))
	buf = append(append(buf, cur.req...), b...)
	c.scanRequest(b)
	n, err := c.Conn.Write(buf)
	if n >= len(cur.req) {
		c.inline = cur
		c.slow = true
	}
	return max(n-len(cur.req), 0), err
}

func (c *conn) Read(b []byte) (int, error) {
	c.readSince = true
	if c.slow {
		return c.slowRead(b)
	}
	if c.state.Load() == statePubSub {
		return c.pubsubRead(b)
	}
	n, err := c.Conn.Read(b)
	c.scanReplies(b[:n])
	return n, err
}

// scanReplies counts the replies go-redis reads; when none is outstanding the connection is idle.
// Whole frames are measured at once; the scanner takes what a read leaves unfinished.
func (c *conn) scanReplies(p []byte) {
	if len(p) == 0 || c.state.Load() != stateBusy {
		return
	}
	n := 0
	for !c.reps.Mid() && len(p) > 0 {
		l, err := resp.FrameLen(p)
		if err != nil || l == 0 {
			break
		}
		if typ := p[0]; typ != '>' && (typ != '|' || resp.TypeOf(p[:l]) != '>') {
			n++
		}
		p = p[l:]
	}
	if len(p) > 0 {
		r, _, err := c.reps.Feed(p)
		if err != nil {
			c.unmanaged("reply")
			return
		}
		n += r
	}
	if c.pending -= n; c.pending <= 0 && !c.reps.Mid() && !c.reqs.Mid() {
		c.pending = 0
		c.state.CompareAndSwap(stateBusy, stateIdle)
	}
}

func (c *conn) slowRead(b []byte) (int, error) {
	if c.inline != nil {
		if err := c.removeAuthReply(); err != nil {
			c.slow = false
			return 0, err
		}
	}
	if len(c.rbuf) > 0 {
		n := copy(b, c.rbuf)
		c.rbuf = c.rbuf[n:]
		if len(c.rbuf) == 0 {
			c.rbuf = nil
			c.slow = c.auth != nil
		}
		if c.auth != nil {
			c.settle(b[0])
		}
		c.scanReplies(b[:n])
		return n, nil
	}
	n, err := c.Conn.Read(b)
	if n > 0 && c.auth != nil {
		c.settle(b[0])
	}
	c.slow = c.auth != nil
	c.scanReplies(b[:n])
	return n, err
}

// note records the token of an AUTH or HELLO request, applied once its reply arrives.
func (c *conn) note(k resp.Kind, b []byte) {
	user, pass, ok := resp.AuthArgs(b)
	if !ok {
		return
	}
	exp, life := c.g.tokenTimes(string(pass))
	c.auth = &pendingAuth{exp: exp, life: life, hello: k == resp.Hello, user: string(user), pass: string(pass)}
	c.slow = true
}

// settle applies the pending AUTH/HELLO once its reply starts arriving: an error reply leaves the
// connection on its previous token, as the server does.
func (c *conn) settle(first byte) {
	p := c.auth
	c.auth = nil
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
	first, err := c.takeReply()
	if err != nil {
		return err
	}
	c.renewed(first == '+', c.inline)
	c.inline = nil
	return nil
}

// takeReply reads until one reply (not a push) is complete in rbuf, removes it and returns its
// first byte. Pushes ahead of it stay in rbuf for go-redis.
func (c *conn) takeReply() (byte, error) {
	for {
		for i := 0; i < len(c.rbuf); {
			l, err := resp.FrameLen(c.rbuf[i:])
			if err != nil {
				return 0, errBadReply
			}
			if l == 0 {
				break // incomplete
			}
			typ := resp.TypeOf(c.rbuf[i : i+l]) // an attribute belongs to the reply after it
			if typ == '>' {
				i += l
				continue
			}
			c.rbuf = append(c.rbuf[:i], c.rbuf[i+l:]...)
			return typ, nil
		}
		if len(c.rbuf) == cap(c.rbuf) {
			c.rbuf = append(c.rbuf, make([]byte, 512)...)[:len(c.rbuf)]
		}
		n, err := c.Conn.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
		c.rbuf = c.rbuf[:len(c.rbuf)+n]
		if err != nil && n == 0 {
			return 0, err
		}
	}
}

// renewed records the server's answer to an AUTH the guard sent with cur.
func (c *conn) renewed(ok bool, cur *creds) {
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

// retire fails a request before anything is sent: go-redis drops the connection, and the hook
// sends the request again on another one.
func (c *conn) retire(exp int64) error {
	if c.lost.CompareAndSwap(false, true) {
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
	if c.done.CompareAndSwap(false, true) {
		c.g.forget(c)
	}
	if ps := c.ps.Load(); ps != nil {
		_ = (*ps.w.Load()).Close() // the new connection of a RESP2 move
		return (*ps.r.Load()).Close()
	}
	return c.Conn.Close()
}

// NetConn returns the wrapped connection, as crypto/tls.Conn does.
func (c *conn) NetConn() net.Conn { return c.Conn }

func (c *conn) remote() string {
	if a := c.Conn.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

package hook

import (
	"bytes"
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
// where its request and reply streams stand, so that the guard can renew it in place.
//
// The gate. Everything that reaches the socket goes through one of three ways in, and they
// exclude each other where they must:
//
//	write side  Write                        go-redis's writer
//	read side   Read; the health check's     go-redis's reader (the same goroutine as the writer,
//	            peek (SyscallConn, and       or another one: the full-duplex autopipeliner)
//	            NetConn's view over TLS)
//	background  the guard's own request      only when nothing is due in either stream; holds
//	            (AUTH on an idle             the read side (rmu) and bgmu, and announces itself
//	            connection, keep-alive PING) in bg: requests, reads and peeks wait for it
//
// Each side publishes its count once per call (sentA: replies the commands written will get;
// gotA: replies read; a RESP3 push answers no command and is not counted). The writer publishes
// before it sends and then looks at bg; background work sets bg before it compares the counts;
// so one of them always sees the other (see write). A reader expecting a reply (sentA > got)
// cannot meet background work, and takes no lock; a reader with nothing due (reading ahead) and
// a peek take rmu.
//
// The writer and the reader meet only in a queue of marks, positions in the reply stream. To
// renew a connection in use, the writer puts "AUTH user token" ahead of a request, at a command
// boundary, marked at its reply's position; the reader cuts that reply out where it meets the
// mark. go-redis's own AUTH and HELLO are marked the same way, to learn from their replies the
// token the server accepted.
//
// A deadline go-redis sets while background work holds the connection is recorded and applied
// when the guard hands the connection back; the guard's own deadline, and a timer that closes
// the socket, bound that work whatever go-redis does meanwhile. Close takes no lock: it must end
// a Read blocked on the socket.
//
// The states say where the streams stand (the field state), drawn as go-redis's
// internal/pool/conn_state.go draws its own:
//
//	                SUBSCRIBE written            (RESP2: moved to a new connection per token;
//	    ┌───────────────────────────────────▶ pubsub   RESP3: an AUTH between go-redis's writes)
//	    │
//	managed ── MONITOR, CLIENT REPLY OFF, ──────▶ unmanaged ── its token about to expire ──┐
//	    │      a stream it cannot follow                                                  ▼
//	    └── token about to expire and not renewable; background request failed ──▶ retired
//	any ── Close ──▶ closed
//
// managed: both streams followed; renewed in place (an AUTH ahead of a request, or by background
// work when idle), retired before expiry when it cannot be. pubsub: a subscriber (pubsub.go),
// never failed by the guard's Write. unmanaged: a stream the guard cannot follow (an unknown
// number of replies, bytes that are not RESP): nothing is inserted any more, and it is retired
// before its token expires, never guessed at. retired: every request fails before anything is
// sent (ErrConnRetired), and go-redis drops the connection. closed: Close was called.
//
// Within managed, the writer also knows whether a request is half written (nothing may be
// inserted) and whether it is inside MULTI (an AUTH would be queued, not run); the reader whether
// a reply is half read, and whether marks or held bytes send it the slow way (markedRead). Per
// command the guard costs two atomic stores and a few loads, no lock, no allocation, no clock
// read.
type conn struct {
	net.Conn
	g *guard

	wmu  sync.Mutex // a subscriber's write side (pubsub.go)
	rmu  sync.Mutex // the read side, when it may meet background work
	bgmu sync.Mutex // held by background work: a request arriving meanwhile waits on it

	state atomic.Uint32 // a connState
	exp   atomic.Int64  // unix ns: expiry of the token the server last accepted here; 0 unknown
	resp3 atomic.Bool
	bg    atomic.Bool // background work holds the connection: requests and deadlines wait
	// Published by each side once per call, for background work to tell an idle connection.
	sentA, gotA atomic.Uint64
	midReq      atomic.Bool  // a request is half written
	inTx        atomic.Bool  // inside MULTI: an AUTH now would be queued, not run
	rd          atomic.Int64 // go-redis's read deadline (unix ns), applied after background work
	wd          atomic.Int64 // go-redis's write deadline
	// failedExp is the expiry of a token the server refused in a guard's AUTH here: not sent
	// again. Written by the read side (where the refusal is read), read by the write side.
	failedExp atomic.Int64

	// The writer's (a subscriber's under wmu).
	reqs    resp.RequestScanner // the request stream
	sent    uint64              // replies the commands written so far will get (pushes apart)
	authing int64               // expiry of the token of the last AUTH the guard wrote here (reply maybe unread)
	state0  clientState         // what go-redis set on the connection, for a RESP2 subscriber's move

	// The reader's (under rmu, or alone: see Read).
	reps     resp.ReplyScanner // the reply stream
	got      uint64            // replies read so far (pushes apart)
	rbuf     []byte            // bytes read from the socket, not yet delivered
	ready    int               // at the head of rbuf, bytes go-redis may read
	rerr     error             // an error that came with bytes held in rbuf: returned after them
	seenSent uint64            // sentA at the keep-alive's last look (under rmu)

	// Between the sides (under mk; nmarks mirrors len(marks) for the read side's fast path).
	mk     sync.Mutex
	marks  []mark
	nmarks atomic.Int32

	ps     atomic.Pointer[pubsub]                  // set once the connection subscribes
	redial func(context.Context) (net.Conn, error) // a new raw connection to the same server
}

var okReply = []byte("+OK\r\n")

type connState = uint32

const (
	stateManaged connState = iota
	statePubSub
	stateUnmanaged
	stateRetired
	stateClosed
)

// A mark is a reply the read side must act on: the reply at position at (replies counted from
// 0 on the connection, pushes apart).
type mark struct {
	at   uint64
	cur  *creds       // the guard's AUTH with this token: its reply is removed
	auth *pendingAuth // go-redis's AUTH or HELLO: its reply is delivered, and tells the outcome
}

type pendingAuth struct {
	exp, life  int64
	hello      bool
	user, pass string
}

func (c *conn) Write(b []byte) (int, error) {
	switch c.state.Load() {
	case stateManaged:
	case statePubSub:
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return c.pubsubWrite(b)
	case stateUnmanaged:
		if e := c.exp.Load(); e != 0 && e < c.g.dead.Load() && !c.reqs.Mid() {
			return 0, c.retire(e)
		}
		c.waitBackground()
		return c.Conn.Write(b)
	case stateClosed:
		return 0, net.ErrClosed
	default:
		return 0, c.retire(c.exp.Load())
	}
	if c.reqs.Mid() {
		c.scanRequest(b) // the rest of a request (bufio flushes a large one in pieces)
		return c.write(b)
	}
	name, n, _ := resp.RequestLen(b) // the first command, whole (n > 0) or not
	if n == 0 {
		name = resp.Name(b)
	}
	if k := kindOf(name); k != resp.Auth && k != resp.Hello { // AUTH and HELLO always pass: they renew
		if cur, err := c.check(); err != nil {
			return 0, err
		} else if cur != nil {
			return c.writeRenewed(cur, b)
		}
	}
	if n > 0 {
		c.command(name, b[:n]) // parsed once
		c.scanRequest(b[n:])
	} else {
		c.scanRequest(b)
	}
	return c.write(b)
}

// write publishes what was counted, waits for background work, and sends b (write side).
//
// The gate between go-redis's writer and reader and the guard's background work: the writer
// publishes its count of replies due (sentA) before sending, then looks for background work;
// background work announces itself (bg) before comparing that count with the replies read
// (gotA). Both sides of each pair write before they read (sequentially consistent atomics), so
// either the background work sees the request and gives up, or the request sees the background
// work and waits for it. A reader expecting a reply (sentA > got) cannot meet background work
// either, which starts only when nothing is due, so it takes no lock.
func (c *conn) write(b []byte) (int, error) {
	if c.sent != c.sentA.Load() {
		c.sentA.Store(c.sent)
	}
	if mid := c.reqs.Mid(); mid != c.midReq.Load() {
		c.midReq.Store(mid)
	}
	c.waitBackground()
	if c.state.Load() == statePubSub {
		// This request subscribed: the guard's pub/sub work starts once it is written.
		c.wmu.Lock()
		n, err := c.subscriberWrite(b)
		c.wmu.Unlock()
		c.g.addPubSub(c)
		return n, err
	}
	return c.Conn.Write(b)
}

// waitBackground waits for background work holding the connection to end.
func (c *conn) waitBackground() {
	for c.bg.Load() {
		c.bgmu.Lock()
		c.bgmu.Unlock() //nolint:staticcheck // waiting for the background work to end
	}
}

// check decides, at the start of a request, whether the connection is renewed in place (cur, a
// newer token), retired (err, before anything is sent), or used as it is (neither).
func (c *conn) check() (cur *creds, err error) {
	e := c.exp.Load()
	switch {
	case e == 0:
		return nil, nil
	case e < c.g.dead.Load():
		return nil, c.retire(e)
	}
	// An AUTH written and not answered yet runs before anything written after it (unless it was
	// answered with a refusal).
	if c.authing != c.failedExp.Load() {
		e = max(e, c.authing)
	}
	// Inside MULTI an AUTH would be queued, not run: wait for EXEC.
	if cur := c.g.cur.Load(); cur != nil && cur.exp > e && !c.inTx.Load() && cur.exp != c.failedExp.Load() {
		return cur, nil
	}
	if e < c.g.below.Load() {
		return nil, c.retire(e)
	}
	return nil, nil
}

// scanRequest follows the commands of a request as they are written. Whole commands are read at
// once; the scanner takes what a write leaves unfinished.
func (c *conn) scanRequest(b []byte) {
	for !c.reqs.Mid() && len(b) > 0 {
		name, n, err := resp.RequestLen(b)
		if err != nil || n == 0 {
			break
		}
		c.command(name, b[:n])
		b = b[n:]
	}
	if len(b) > 0 && c.reqs.Feed(b, func(name []byte) { c.command(name, nil) }) != nil {
		c.unmanaged("request")
	}
}

// command follows one command written; whole is the request when it was written at once (nil
// when the scanner pieced it together).
func (c *conn) command(name, whole []byte) {
	k := kindOf(name)
	if c.state.Load() == statePubSub {
		if !c.resp3.Load() || isSubscription(name) {
			return // RESP2: not counted (pubsub.go); RESP3: answered by pushes
		}
		c.sent++
		return
	}
	switch k {
	case resp.Auth, resp.Hello:
		if whole == nil {
			c.unmanaged("AUTH in pieces") // its token unknown: the connection's is no longer known
			return
		}
		c.note(k, whole)
	case resp.Multi:
		c.inTx.Store(true)
	case resp.Exec, resp.Discard, resp.Reset:
		if c.inTx.Load() {
			c.inTx.Store(false)
		}
	case resp.Subscribe, resp.PSubscribe, resp.SSubscribe:
		c.startPubSub()
		return // answered by a confirmation per channel: the subscriber's reader follows them
	case resp.Monitor:
		c.unmanaged("MONITOR")
	case resp.Client:
		if !c.state0.client(whole) {
			c.unmanaged("CLIENT REPLY")
		}
	}
	c.sent++
}

// unmanaged: the connection's streams can no longer be followed; it is only retired from now on.
func (c *conn) unmanaged(why string) {
	if c.state.CompareAndSwap(stateManaged, stateUnmanaged) {
		c.g.h.logf(slog.LevelDebug, "entraredis: a connection is no longer renewed in place, only retired before its token expires",
			slog.String("addr", c.remote()), slog.String("why", why))
	}
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
	c.addMark(mark{at: c.sent, cur: cur})
	c.sent++
	c.authing = cur.exp
	buf := make([]byte, 0, len(cur.req)+len(b))
	buf = append(append(buf, cur.req...), b...)
	c.scanRequest(b)
	n, err := c.write(buf)
	if n < len(cur.req) && err != nil {
		c.state.CompareAndSwap(stateManaged, stateRetired) // the server may have half an AUTH
	}
	return max(n-len(cur.req), 0), err
}

func (c *conn) addMark(m mark) {
	c.mk.Lock()
	c.marks = append(c.marks, m)
	c.nmarks.Store(int32(len(c.marks)))
	c.mk.Unlock()
}

// headMark returns the first mark, if any.
func (c *conn) headMark() (mark, bool) {
	c.mk.Lock()
	defer c.mk.Unlock()
	if len(c.marks) == 0 {
		return mark{}, false
	}
	return c.marks[0], true
}

func (c *conn) popMark() {
	c.mk.Lock()
	c.marks = c.marks[1:]
	if len(c.marks) == 0 {
		c.marks = nil
	}
	c.nmarks.Store(int32(len(c.marks)))
	c.mk.Unlock()
}

func (c *conn) Read(b []byte) (int, error) {
	// A reply is due and no background work holds the connection: none can start before this
	// call publishes its count (see write). Loaded in this order.
	if c.sentA.Load() > c.got && !c.bg.Load() && c.state.Load() == stateManaged {
		n, err := c.read(b)
		c.gotA.Store(c.got)
		return n, err
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.state.Load() == statePubSub && !c.resp3.Load() {
		return c.pubsubRead(b)
	}
	n, err := c.read(b)
	if c.got != c.gotA.Load() {
		c.gotA.Store(c.got)
	}
	return n, err
}

func (c *conn) read(b []byte) (int, error) {
	if len(c.rbuf) > 0 || c.nmarks.Load() > 0 || c.rerr != nil {
		return c.markedRead(b)
	}
	return c.fastRead(b)
}

// fastRead reads straight into b and counts the replies.
func (c *conn) fastRead(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n == 0 {
		return n, err
	}
	// Checked after the read: a mark is made before the request whose reply it marks is sent, so
	// bytes read now can hold a marked reply only if the mark is visible now.
	if c.nmarks.Load() > 0 {
		c.rbuf = append(c.rbuf, b[:n]...)
		c.rerr = err
		return c.markedRead(b)
	}
	c.countReplies(b[:n])
	return n, err
}

// countReplies counts the replies in bytes go-redis reads. Whole frames are measured at once;
// the scanner takes what a read leaves unfinished.
func (c *conn) countReplies(p []byte) {
	for !c.reps.Mid() && len(p) > 0 {
		l, err := resp.FrameLen(p)
		if err != nil || l == 0 {
			break
		}
		if typ := p[0]; typ != '>' && (typ != '|' || resp.TypeOf(p[:l]) != '>') {
			c.got++
		}
		p = p[l:]
	}
	if len(p) > 0 {
		r, _, err := c.reps.Feed(p)
		if err != nil {
			c.lostPlace()
			return
		}
		c.got += uint64(r)
	}
}

// lostPlace: the reply stream is not RESP as the guard reads it; a mark can no longer be placed,
// so the connection is retired rather than guessed at.
func (c *conn) lostPlace() {
	c.unmanaged("reply")
	c.state.CompareAndSwap(stateUnmanaged, stateRetired)
}

// markedRead is the read side's slow path: the stream goes through rbuf, where marked replies
// are acted on (and the guard's own cut out) before go-redis gets the bytes around them.
func (c *conn) markedRead(b []byte) (int, error) {
	for {
		if c.ready > 0 {
			n := copy(b, c.rbuf[:c.ready])
			c.rbuf = c.rbuf[n:]
			c.ready -= n
			if len(c.rbuf) == 0 {
				c.rbuf = c.rbuf[:0:0]
			}
			return n, nil
		}
		if err := c.sift(); err != nil {
			return 0, err
		}
		if c.ready > 0 {
			continue
		}
		if err := c.rerr; err != nil {
			c.rerr = nil
			return 0, err
		}
		if len(c.rbuf) == 0 && c.nmarks.Load() == 0 {
			return c.fastRead(b) // nothing held back any more
		}
		if err := c.fill(c.Conn); err != nil {
			return 0, err
		}
	}
}

// sift walks rbuf past what is ready: frames up to the next marked reply become ready; a marked
// reply is acted on once whole (the guard's own removed).
func (c *conn) sift() error {
	for c.ready < len(c.rbuf) {
		p := c.rbuf[c.ready:]
		if !c.reps.Mid() {
			if m, ok := c.headMark(); ok && m.at == c.got {
				l, err := resp.FrameLen(p)
				if err != nil {
					c.lostPlace()
					return errBadReply
				}
				if l == 0 {
					return nil // the marked reply is not whole yet
				}
				typ := resp.TypeOf(p[:l])
				if typ == '>' {
					c.ready += l // a push ahead of it: go-redis's
					continue
				}
				if m.cur != nil && typ == '+' && c.state.Load() == statePubSub && !bytes.Equal(p[:l], okReply) {
					// A subscriber's go-redis gets no "+OK" but the guard's AUTH: a '+' that is not
					// one (a PING's reply) at the mark means the count ran ahead (a subscription
					// refused with an error reply, not the pushes counted as none). Resync on it.
					c.ready += l
					continue
				}
				c.popMark()
				c.got++
				if m.auth != nil {
					c.settle(m.auth, typ)
					c.ready += l
					continue
				}
				if typ != '+' && typ != '-' {
					// Not what AUTH answers: the count is off (a reply the guard could not
					// foresee). Better an error go-redis drops the connection for than a shifted
					// reply handed to the wrong command.
					c.lostPlace()
					return errBadReply
				}
				c.rbuf = append(c.rbuf[:c.ready], c.rbuf[c.ready+l:]...)
				if c.state.Load() == statePubSub {
					c.pubsubAuthed(typ == '+', m.cur)
				} else {
					c.renewed(typ == '+', m.cur)
				}
				continue
			}
		}
		used, done, push, err := c.reps.Next(p)
		if err != nil {
			c.lostPlace()
			return errBadReply
		}
		c.ready += used
		if done && !push {
			c.got++
		}
	}
	return nil
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

// note marks the reply of go-redis's AUTH or HELLO: the token it carries is the connection's
// once the server accepts it.
func (c *conn) note(k resp.Kind, whole []byte) {
	if k == resp.Hello {
		c.state0.hello(whole)
	}
	user, pass, ok := resp.AuthArgs(whole)
	if !ok {
		if k == resp.Hello {
			c.addMark(mark{at: c.sent, auth: &pendingAuth{exp: -2, hello: true}}) // the protocol only
		}
		return
	}
	exp, life := c.g.tokenTimes(string(pass))
	c.addMark(mark{at: c.sent, auth: &pendingAuth{exp: exp, life: life, hello: k == resp.Hello, user: string(user), pass: string(pass)}})
}

// settle applies go-redis's AUTH/HELLO once its reply is read: an error reply leaves the
// connection on its previous token, as the server does.
func (c *conn) settle(p *pendingAuth, typ byte) {
	if typ == '-' {
		return
	}
	if p.hello {
		c.resp3.Store(typ == '%') // HELLO 3 answers with a map
	}
	switch {
	case p.exp == -2: // HELLO without AUTH
		return
	case p.exp < 0:
		c.exp.Store(0) // a token the guard cannot read: leave the connection alone
		return
	}
	c.exp.Store(p.exp)
	c.g.track(p.exp, p.life)
	c.g.offer(p.user, p.pass)
	c.g.subscribe()
}

// takeReply reads until one reply (not a push) is complete in rbuf, removes it and returns its
// type. Pushes ahead of it stay in rbuf for go-redis. Both sides are held.
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
		if err := c.fill(c.Conn); err != nil {
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
		h.acceptedInPlace(cur.req) // the server accepts the token: a block of it ends (blocked.go)
		return
	}
	c.failedExp.Store(cur.exp)
	h.reauthFailures.Add(1)
	addr := c.remote()
	h.emit(Event{Kind: EventReauthFailed, Addr: addr, ExpiresOn: time.Unix(0, cur.exp)}, slog.LevelWarn,
		"entraredis: the server refused the new token on an open connection; it stays on its current one",
		slog.String("addr", addr))
}

// retire fails a request before anything is sent: go-redis drops the connection, and the hook
// sends the request again on another one.
func (c *conn) retire(exp int64) error {
	if c.state.CompareAndSwap(stateManaged, stateRetired) || c.state.CompareAndSwap(stateUnmanaged, stateRetired) {
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

// Close takes no lock: it must end a Read or Write blocked on the socket. Background work that
// holds the connection fails on the closed socket and gives it back.
func (c *conn) Close() error {
	if c.state.Swap(stateClosed) != stateClosed {
		c.g.forget(c)
	}
	if ps := c.ps.Load(); ps != nil {
		return ps.close()
	}
	return c.Conn.Close()
}

func (c *conn) remote() string {
	if a := c.Conn.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

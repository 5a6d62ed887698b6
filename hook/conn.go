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
// work when idle), retired before expiry when it cannot be (at a request with no reply due). pubsub: a subscriber (pubsub.go),
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
	// bgDone is closed when the background work that set bg ends (stored before bg, under bgmu):
	// what a request or a read waits on, until go-redis's deadline.
	bgDone atomic.Pointer[chan struct{}]
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
	reqs       resp.RequestScanner // the request stream
	reqsBroken bool                // the scanner failed: where a request ends is unknown
	sent       uint64              // replies the commands written so far will get (pushes apart)
	authing    int64               // expiry of the token of the last AUTH the guard wrote here (reply maybe unread)
	state0     clientState         // what go-redis set on the connection, for a RESP2 subscriber's move

	// The reader's (under rmu, or alone: see Read); and reps, at the end.
	got      uint64 // replies read so far (pushes apart)
	rbuf     []byte // bytes read from the socket, not yet delivered
	ready    int    // at the head of rbuf, bytes go-redis may read
	rerr     error  // an error that came with bytes held in rbuf: returned after them
	seenSent uint64 // sentA at the keep-alive's last look (under rmu)

	// Between the sides (under mk; nmarks mirrors len(marks) for the read side's fast path).
	mk     sync.Mutex
	marks  []mark
	nmarks atomic.Int32

	ps     atomic.Pointer[pubsub]                  // set once the connection subscribes
	redial func(context.Context) (net.Conn, error) // a new raw connection to the same server

	// The reader's: the reply stream. Last, as its stack of levels is 2 KiB: the fields each
	// command reads stay within a few cache lines.
	reps resp.ReplyScanner
}

type connState = uint32

const (
	stateManaged connState = iota
	statePubSub
	stateUnmanaged
	stateRetired
	stateClosed
)

// Write's common case, go-redis's pool path, is one whole command that is none of those the guard
// acts on, on a connection on the newest token with no background work: it is decided here in
// one pass, as writeRequest would decide it.
func (c *conn) Write(b []byte) (int, error) {
	if c.state.Load() != stateManaged || c.reqs.Mid() {
		return c.writeRequest(b)
	}
	name, n, _ := resp.RequestLen(b)
	// Every name KindOf knows is 4 to 11 bytes long, and one of 11 may be an unsubscription.
	if n != len(b) || n == 0 || len(name) >= 4 && (len(name) >= 11 || resp.KindOf(name) != resp.Other) {
		return c.writeRequest(b)
	}
	if e := c.exp.Load(); e != 0 { // check's common case
		if cur := c.g.cur.Load(); cur != nil && cur.exp > e || e < c.g.dead.Load() || e < c.g.below.Load() {
			return c.writeRequest(b)
		}
	}
	// command, for a command of no kind on a managed connection: only this writer could have made
	// it a subscriber since the state was loaded above.
	c.sent++
	// write, with the scanner between requests.
	c.sentA.Store(c.sent) // then bg: the gate (see write)
	if c.midReq.Load() {
		c.midReq.Store(false)
	}
	if c.bg.Load() || c.state.Load() != stateManaged {
		return c.send(b)
	}
	return c.Conn.Write(b)
}

// writeRequest is Write in general: requests in pieces, pipelines, the commands the guard acts
// on, a connection to renew or retire, one that is not managed.
func (c *conn) writeRequest(b []byte) (int, error) {
	if s := c.state.Load(); s != stateManaged {
		return c.writeAside(s, b)
	}
	if c.reqs.Mid() {
		c.scanRequest(b) // the rest of a request (bufio flushes a large one in pieces)
		return c.write(b)
	}
	name, n, _ := resp.RequestLen(b) // the first command, whole (n > 0) or not
	if n == 0 {
		name = resp.Name(b)
	}
	k := kindOf(name)
	if k != resp.Auth && k != resp.Hello { // AUTH and HELLO always pass: they renew
		if cur, err := c.check(); err != nil {
			return 0, err
		} else if cur != nil {
			return c.writeRenewed(cur, b)
		}
	}
	if n > 0 {
		c.command(name, k, b[:n]) // parsed once
		if n < len(b) {
			c.scanRequest(b[n:])
		}
	} else {
		c.scanRequest(b)
	}
	return c.write(b)
}

// writeAside is Write on a connection in state s, not managed (no state leads back there): a
// subscriber's, one the guard cannot follow, retired or closed.
func (c *conn) writeAside(s connState, b []byte) (int, error) {
	switch s {
	case statePubSub:
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return c.pubsubWrite(b)
	case stateUnmanaged:
		// Retired at its token's end between two requests; the scanner still follows them (a
		// connection made unmanaged mid-request would otherwise never be between two).
		if e := c.exp.Load(); e != 0 && e < c.g.dead.Load() && (c.reqsBroken || !c.reqs.Mid()) {
			return 0, c.retire(e)
		}
		if !c.reqsBroken && c.reqs.Feed(b, ignoreName) != nil {
			c.reqsBroken = true
		}
		if err := c.awaitWrite(); err != nil {
			return 0, err
		}
		return c.Conn.Write(b)
	case stateClosed:
		return 0, net.ErrClosed
	default:
		return 0, c.retire(c.exp.Load())
	}
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
	return c.send(b)
}

// send waits for background work holding the connection, then sends b as the state it left
// says (write side, after write's publication).
func (c *conn) send(b []byte) (int, error) {
	if err := c.awaitWrite(); err != nil {
		return 0, err
	}
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

// awaitWrite waits for background work holding the connection to end, until go-redis's write
// deadline. A request that waited finds the connection as the work left it: retired (maybe
// closed), the request fails before anything is sent, and the hook sends it on another one.
func (c *conn) awaitWrite() error {
	if c.bg.Load() {
		if err := c.waitBackground(c.wd.Load(), "write"); err != nil {
			return err
		}
	}
	// Also without a wait: the work may have retired the connection and ended between the state
	// check at the request's start and the load of bg above.
	if c.state.Load() == stateRetired {
		return c.retire(c.exp.Load())
	}
	return nil
}

func ignoreName([]byte) {}

// check decides, at the start of a request, whether the connection is renewed in place (cur, a
// newer token), retired (err, before anything is sent), or used as it is (neither).
func (c *conn) check() (cur *creds, err error) {
	e := c.exp.Load()
	if e == 0 {
		return nil, nil
	}
	// The common case: on the newest token, above both lines. Nothing below can then renew (that
	// needs a newer token) or retire (that needs e, or the AUTH in flight, under a line).
	if cur := c.g.cur.Load(); (cur == nil || cur.exp <= e) && e >= c.g.dead.Load() && e >= c.g.below.Load() {
		return nil, nil
	}
	return c.checkSlow(e)
}

// checkSlow is check past its common case.
//
// A connection is retired only at a request with no reply due. With one due, this write
// continues what is in flight: the rest of a pipeline larger than go-redis's write buffer (failed
// here, the whole pipeline would look unsent while its first part ran), or the full-duplex
// writer ahead of its reader. It is renewed in place if it can be, else sent as it is.
func (c *conn) checkSlow(e int64) (cur *creds, err error) {
	due := c.sent != c.gotA.Load()
	if e < c.g.dead.Load() && !due {
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
	if e < c.g.below.Load() && !due {
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
		c.command(name, kindOf(name), b[:n])
		b = b[n:]
	}
	if len(b) > 0 && c.reqs.Feed(b, func(name []byte) { c.command(name, kindOf(name), nil) }) != nil {
		c.reqsBroken = true
		c.unmanaged("request")
	}
}

// command follows one command written, of kind k; whole is the request when it was written at
// once (nil when the scanner pieced it together).
func (c *conn) command(name []byte, k resp.Kind, whole []byte) {
	if c.state.Load() == statePubSub {
		switch {
		case !c.resp3.Load():
			return // RESP2: not counted (pubsub.go)
		case k == resp.Subscribe || k == resp.PSubscribe || k == resp.SSubscribe || isUnsubscription(name):
			c.subscription(name, whole) // subs.go
			return
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
		if c.resp3.Load() {
			c.subscription(name, whole)
		}
		return // answered by a confirmation per channel: the subscriber's reader follows them
	case resp.Monitor:
		c.unmanaged("MONITOR")
	case resp.Client:
		if !c.state0.client(whole) {
			c.unmanaged("CLIENT REPLY")
		}
	case resp.Other:
		if len(name) >= 11 && isUnsubscription(name) {
			c.subscription(name, whole)
			return
		}
	}
	c.sent++
}

// unmanaged: the connection's streams can no longer be followed; it is only retired from now on.
// A subscriber is lost instead: never renewed in place again, closed at the margin (pubsub.go).
func (c *conn) unmanaged(why string) {
	if c.state.CompareAndSwap(stateManaged, stateUnmanaged) {
		c.g.h.logf(slog.LevelDebug, "entraredis: a connection is no longer renewed in place, only retired before its token expires",
			slog.String("addr", c.remote()), slog.String("why", why))
		return
	}
	if ps := c.ps.Load(); ps != nil && c.state.Load() == statePubSub && !ps.lost.Swap(true) {
		c.g.h.logf(slog.LevelDebug, "entraredis: a pub/sub connection is no longer renewed in place, only closed before its token expires",
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

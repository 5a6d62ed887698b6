package hook

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/entraredis/entraredis/internal/resp"
)

// Idle connections. The guard's goroutine (run) moves idle connections to each new token shortly
// after it arrives, and keeps them alive with a PING (Options.KeepAlive). It takes a connection
// only while it is idle (conn.go's states): it writes its request, reads the one reply, and gives
// the connection back; a request or a health check of go-redis's that comes meanwhile waits.

// start runs the background goroutine; g.mu is held.
func (g *guard) start() {
	g.running = true
	g.wg.Add(1)
	go g.run()
}

// run renews idle connections after each new token and keeps idle connections alive, until no
// guarded connection is left open (it starts again with the next one) or the hook is closed.
func (g *guard) run() {
	defer g.wg.Done()
	renew := time.NewTimer(time.Hour)
	renew.Stop()
	defer renew.Stop()
	var keepAlive <-chan time.Time
	if ka := g.h.keepAlive; ka > 0 {
		t := time.NewTicker(ka / 2)
		defer t.Stop()
		keepAlive = t.C
	}
	idle := time.NewTicker(time.Second) // to notice that no connection is left
	defer idle.Stop()
	for {
		select {
		case <-g.kick:
			renew.Reset(g.renewDelay())
		case <-renew.C:
			if g.renewIdle() {
				renew.Reset(g.renewDelay())
			}
		case <-keepAlive:
			g.keepAlive()
		case <-idle.C:
		}
		g.mu.Lock()
		if g.closed || len(g.conns) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
	}
}

// renewDelay spreads the idle renewals after a new token: connections in use renew themselves on
// their next request first. Up to 30 s on real lifetimes, a fiftieth of the life for short ones.
func (g *guard) renewDelay() time.Duration {
	d := 30 * time.Second
	if cur := g.cur.Load(); cur != nil && cur.life > 0 {
		d = min(d, time.Duration(cur.life/50))
	}
	return time.Duration(rand.Int64N(int64(d)+1)) + time.Millisecond
}

// renewIdle sends the current token to every idle connection on an older one and reports whether
// some connection still needs it (it was in use: it renews on its next request, or on the next pass).
func (g *guard) renewIdle() (again bool) {
	cur := g.cur.Load()
	if cur == nil {
		return false
	}
	for _, c := range g.snapshot() {
		if g.ctx.Err() != nil {
			return false // closed
		}
		if e := c.exp.Load(); e == 0 || e >= cur.exp {
			continue
		}
		ran, held := c.background(cur.req, func() bool { return c.failedExp.Load() != cur.exp && !c.inTx.Load() }, func(first byte) {
			c.renewed(first == '+', cur)
			if first == '+' {
				g.h.idleReauths.Add(1)
			}
		})
		if !ran && !held && c.state.Load() == stateManaged {
			again = true
		}
	}
	return again
}

// keepAlive PINGs the connections that started no request since its last look.
func (g *guard) keepAlive() {
	for _, c := range g.snapshot() {
		if g.ctx.Err() != nil {
			return // closed
		}
		// Not inside MULTI: the PING would be queued, and EXEC would answer it to the caller.
		idle := func() bool {
			if s := c.sentA.Load(); s != c.seenSent {
				c.seenSent = s
				return false
			}
			return !c.inTx.Load()
		}
		if ran, _ := c.background(pingReq, idle, nil); ran {
			g.h.keepAlives.Add(1)
		}
	}
}

var pingReq = resp.AppendRequest(nil, "ping")

// snapshot returns the open connections that are neither pub/sub nor unmanaged.
func (g *guard) snapshot() []*conn {
	g.mu.Lock()
	defer g.mu.Unlock()
	cs := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		if c.state.Load() == stateManaged {
			cs = append(cs, c)
		}
	}
	return cs
}

// background runs one request of the guard's own (an AUTH with a newer token, or a PING) on an
// idle connection: both sides free, nothing outstanding, and cond (nil: always) true once they
// are held. then (nil: nothing) gets the type of the reply while the connection is still held.
// ran reports that the request ran; held, that the connection was idle but cond said no. A
// request, a read, or a health check arriving meanwhile waits; pushes read ahead of the reply are
// kept for go-redis. A connection that fails here is retired and closed: its next request fails
// before anything is sent, and the hook sends it again on another connection.
func (c *conn) background(req []byte, cond func() bool, then func(first byte)) (ran, held bool) {
	return c.hold(cond, func() bool {
		// The socket's deadline bounds the work; go-redis may clear it meanwhile (its health check
		// does), so a timer closes the socket should the work outlast it anyway.
		stop := time.AfterFunc(backgroundTimeout+time.Second, func() { _ = c.Conn.Close() })
		defer stop.Stop()
		_ = c.Conn.SetDeadline(time.Now().Add(backgroundTimeout))
		// Hook.Close ends the work at once (after the guard's own deadline is set, so that it wins).
		defer context.AfterFunc(c.g.ctx, func() { _ = c.Conn.SetDeadline(time.Now()) })()
		_, err := c.Conn.Write(req)
		var first byte
		if err == nil {
			first, err = c.takeReply()
		}
		if err != nil {
			if c.state.CompareAndSwap(stateManaged, stateRetired) {
				c.g.h.retired.Add(1) // lost in background work: counted with the retired ones
			}
			_ = c.Conn.Close() // a health check (plain TCP) now finds it closed; over TLS, the next Write
			c.g.h.logf(slog.LevelDebug, "entraredis: an idle connection failed the guard's background request; it is dropped",
				slog.String("addr", c.remote()), slog.Any("error", err))
			return false
		}
		if then != nil {
			then(first)
		}
		return true
	})
}

// hold runs work while the guard holds an idle connection (both sides free, nothing outstanding,
// cond true); ran is what work reports, held that the connection was idle but cond said no.
func (c *conn) hold(cond func() bool, work func() bool) (ran, held bool) {
	if !c.rmu.TryLock() {
		return false, false // a reader waits on the socket (full duplex), or a peek
	}
	defer c.rmu.Unlock()
	c.bgmu.Lock()
	defer c.bgmu.Unlock()
	done := make(chan struct{})
	c.bgDone.Store(&done)
	c.bg.Store(true) // before looking at the counts: see conn.write
	defer c.handBack()
	if c.state.Load() != stateManaged || !c.idle() {
		return false, false
	}
	if cond != nil && !cond() {
		return false, true
	}
	return work(), false
}

// idle: nothing due in either stream (read side and bg held).
func (c *conn) idle() bool {
	return c.sentA.Load() == c.gotA.Load() && !c.midReq.Load() && !c.reps.Mid() && len(c.rbuf) == 0 && c.rerr == nil && c.nmarks.Load() == 0
}

// backgroundTimeout bounds the guard's own work on a connection (a variable for tests).
var backgroundTimeout = 5 * time.Second

// handBack ends background work: go-redis's deadlines, recorded meanwhile, go back on the socket.
func (c *conn) handBack() {
	c.bg.Store(false)
	defer close(*c.bgDone.Load())
	for {
		rd, wd := c.rd.Load(), c.wd.Load()
		_ = c.Conn.SetReadDeadline(unixTime(rd))
		_ = c.Conn.SetWriteDeadline(unixTime(wd))
		if c.rd.Load() == rd && c.wd.Load() == wd {
			return // else go-redis set one meanwhile, and may have been overwritten
		}
	}
}

// waitBackground waits for the background work holding the connection to end, or until deadline
// (unix ns, go-redis's for the call; 0 none), when it fails as the socket would have: the
// command's context and timeouts bound the wait, not the guard's work.
func (c *conn) waitBackground(deadline int64, op string) error {
	for c.bg.Load() {
		p := c.bgDone.Load()
		if p == nil {
			continue // stored before bg: not seen yet
		}
		if deadline == 0 {
			<-*p
			continue
		}
		d := time.Until(time.Unix(0, deadline))
		if d <= 0 {
			return &net.OpError{Op: op, Net: "tcp", Addr: c.Conn.RemoteAddr(), Err: os.ErrDeadlineExceeded}
		}
		t := time.NewTimer(d)
		select {
		case <-*p:
			t.Stop()
		case <-t.C:
			return &net.OpError{Op: op, Net: "tcp", Addr: c.Conn.RemoteAddr(), Err: os.ErrDeadlineExceeded}
		}
	}
	return nil
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// The deadlines go-redis sets are recorded; while background work holds the connection they wait
// for it to end (handBack). A subscriber's go to the connections it reads from and writes to. On a
// retired connection (maybe closed by the guard) they are only recorded: go-redis sets them
// before its next request, which must reach Write to fail there, retired and safe to send again,
// rather than fail here with "use of closed network connection", its fate unknown to the hook.

func (c *conn) SetDeadline(t time.Time) error {
	c.rd.Store(unixNano(t))
	c.wd.Store(unixNano(t))
	if c.state.Load() == stateRetired {
		return nil
	}
	if ps := c.ps.Load(); ps != nil {
		return ps.setDeadlines(t, t, true, true)
	}
	if c.bg.Load() {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.rd.Store(unixNano(t))
	if c.state.Load() == stateRetired {
		return nil
	}
	if ps := c.ps.Load(); ps != nil {
		return ps.setDeadlines(t, time.Time{}, true, false)
	}
	if c.bg.Load() {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.wd.Store(unixNano(t))
	if c.state.Load() == stateRetired {
		return nil
	}
	if ps := c.ps.Load(); ps != nil {
		return ps.setDeadlines(time.Time{}, t, false, true)
	}
	if c.bg.Load() {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// sysConn is a guarded connection whose inner connection implements syscall.Conn: go-redis checks
// an idle connection's health only through it (plain TCP), and must not where the inner one does
// not (TLS).
type sysConn struct {
	*conn
	raw *rawConn // made once: go-redis asks for it on every Get from the pool
	err error
}

func newSysConn(c *conn, sc syscall.Conn) *sysConn {
	rc, err := sc.SyscallConn()
	return &sysConn{conn: c, raw: &rawConn{RawConn: rc, c: c}, err: err}
}

// SyscallConn gives go-redis's health check a raw connection whose Read takes the read side:
// the peek must never find the reply to the guard's own AUTH or PING.
func (s *sysConn) SyscallConn() (syscall.RawConn, error) {
	if s.err != nil {
		return nil, s.err
	}
	return s.raw, nil
}

type rawConn struct {
	syscall.RawConn
	c *conn
}

func (r *rawConn) Read(f func(fd uintptr) bool) error {
	r.c.rmu.Lock()
	defer r.c.rmu.Unlock()
	return r.RawConn.Read(f)
}

// NetConn is what go-redis unwraps to peek at the socket under TLS (its push and cache
// probes): a view of the guarded connection whose raw socket, where one is underneath, is
// reached through the read side. Reads and writes through it are the guarded connection's.
func (c *conn) NetConn() net.Conn {
	for inner, i := net.Conn(c.Conn), 0; inner != nil && i < 8; i++ {
		if sc, ok := inner.(syscall.Conn); ok {
			return &sysView{view: view{c}, sc: newSysConn(c, sc)}
		}
		u, ok := inner.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		inner = u.NetConn()
	}
	return view{c}
}

// view is a guarded connection without NetConn, so that go-redis's unwrapping ends there.
type view struct{ c *conn }

func (v view) Read(b []byte) (int, error)         { return v.c.Read(b) }
func (v view) Write(b []byte) (int, error)        { return v.c.Write(b) }
func (v view) Close() error                       { return v.c.Close() }
func (v view) LocalAddr() net.Addr                { return v.c.LocalAddr() }
func (v view) RemoteAddr() net.Addr               { return v.c.RemoteAddr() }
func (v view) SetDeadline(t time.Time) error      { return v.c.SetDeadline(t) }
func (v view) SetReadDeadline(t time.Time) error  { return v.c.SetReadDeadline(t) }
func (v view) SetWriteDeadline(t time.Time) error { return v.c.SetWriteDeadline(t) }

// sysView is a view with the gated raw socket underneath.
type sysView struct {
	view
	sc *sysConn
}

func (v *sysView) SyscallConn() (syscall.RawConn, error) { return v.sc.SyscallConn() }

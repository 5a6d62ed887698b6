package hook

import (
	"errors"
	"log/slog"
	"math/rand/v2"
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
// some connection still needs it (it was busy: it renews on its next request, or on the next pass).
func (g *guard) renewIdle() (again bool) {
	cur := g.cur.Load()
	if cur == nil {
		return false
	}
	for _, c := range g.snapshot() {
		if e := c.exp.Load(); e == 0 || e >= cur.exp || c.lost.Load() {
			continue
		}
		switch first, ok := c.backgroundIf(cur.req, func() bool { return c.failedExp != cur.exp && !c.inTx }); {
		case ok:
			c.renewed(first == '+', cur)
			if first == '+' {
				g.h.idleReauths.Add(1)
			}
		case c.state.Load() == stateBusy:
			again = true
		}
	}
	return again
}

// keepAlive PINGs the connections that started no request since its last look.
func (g *guard) keepAlive() {
	for _, c := range g.snapshot() {
		u := c.uses.Load()
		if u != c.seenUses {
			c.seenUses = u
			continue
		}
		// Not inside MULTI: the PING would be queued, and EXEC would answer it to the caller.
		if _, ok := c.backgroundIf(pingReq, func() bool { return !c.inTx }); ok {
			g.h.keepAlives.Add(1)
		}
	}
}

var pingReq = resp.AppendRequest(nil, "ping")

// snapshot returns the open connections that are not pub/sub.
func (g *guard) snapshot() []*conn {
	g.mu.Lock()
	defer g.mu.Unlock()
	cs := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		if c.state.Load() != statePubSub {
			cs = append(cs, c)
		}
	}
	return cs
}

// backgroundIf runs one request of the guard's own (an AUTH with a newer token, or a PING) on an
// idle connection, if cond (nil: always) holds once the connection is held, and returns the first
// byte of its reply; ok is false when it did not run. A request or health check arriving
// meanwhile waits; pushes read ahead of the reply are kept for go-redis. A connection that fails
// here is marked lost: its next request fails before anything is sent, and the hook sends it
// again on another connection.
func (c *conn) backgroundIf(req []byte, cond func() bool) (first byte, ok bool) {
	c.bg.Lock()
	defer c.bg.Unlock()
	if !c.state.CompareAndSwap(stateIdle, stateBackground) {
		return 0, false
	}
	defer c.state.Store(stateIdle)
	if c.slow || c.lost.Load() || (cond != nil && !cond()) {
		return 0, false
	}
	_ = c.Conn.SetDeadline(time.Now().Add(backgroundTimeout))
	defer c.restoreDeadlines()
	_, err := c.Conn.Write(req)
	if err == nil {
		first, err = c.takeReply()
	}
	if err != nil {
		c.lost.Store(true)
		_ = c.Conn.Close() // a health check (plain TCP) now finds it closed; over TLS, the next Write
		c.g.h.logf(slog.LevelDebug, "entraredis: an idle connection failed the guard's background request; it is dropped",
			slog.String("addr", c.remote()), slog.Any("error", err))
		return 0, false
	}
	c.slow = len(c.rbuf) > 0
	return first, true
}

// backgroundTimeout bounds the guard's own request on an idle connection.
const backgroundTimeout = 5 * time.Second

func (c *conn) restoreDeadlines() {
	_ = c.Conn.SetReadDeadline(unixTime(c.rd.Load()))
	_ = c.Conn.SetWriteDeadline(unixTime(c.wd.Load()))
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

// The deadlines go-redis sets are remembered, so that background work can put them back. On a
// lost connection (closed by the guard) they are only remembered: go-redis sets them before its
// next request, which must reach Write to fail there, retired, rather than fail here with "use of
// closed network connection", its fate unknown to the hook.

func (c *conn) SetDeadline(t time.Time) error {
	c.rd.Store(unixNano(t))
	c.wd.Store(unixNano(t))
	if c.lost.Load() {
		return nil
	}
	if ps := c.ps.Load(); ps != nil {
		return errors.Join((*ps.r.Load()).SetDeadline(t), (*ps.w.Load()).SetDeadline(t))
	}
	return c.Conn.SetDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.rd.Store(unixNano(t))
	if c.lost.Load() {
		return nil
	}
	if ps := c.ps.Load(); ps != nil {
		return (*ps.r.Load()).SetReadDeadline(t)
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.wd.Store(unixNano(t))
	if c.lost.Load() {
		return nil
	}
	if ps := c.ps.Load(); ps != nil {
		return (*ps.w.Load()).SetWriteDeadline(t)
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

// SyscallConn gives go-redis's health check a raw connection whose Read waits for background
// work: the peek must never find the reply to the guard's own AUTH or PING.
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
	r.c.bg.Lock()
	defer r.c.bg.Unlock()
	return r.RawConn.Read(f)
}

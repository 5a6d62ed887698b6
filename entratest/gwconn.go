package entratest

import (
	"bufio"
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// One client connection of a Gateway and the backend connection behind it: the rules of
// Azure's Entra authentication applied command by command, in order.

// marker is a gateway reply waiting for its PING to come back from the backend. An AUTH runs
// when its marker comes back (authExp set): only then has every command before it returned.
type marker struct {
	name    []byte
	reply   []byte // nil: nothing to send (HELLO's own reply comes from the backend)
	authExp time.Time
}

// gwConn is one client connection and its backend connection. The client goroutine reads
// commands and writes to the backend; the backend goroutine copies replies to the client, swapping
// markers for the gateway's replies.
type gwConn struct {
	g       *Gateway
	id      uint64
	client  net.Conn
	backend net.Conn

	wmu sync.Mutex // guards cw
	cw  *bufio.Writer

	mu        sync.Mutex
	authed    bool
	forwarded bool // something went to the backend: the gateway's replies must queue behind it
	inMulti   bool
	resp3     bool
	subRESP2  bool // in RESP2 subscribed mode: only (un)subscribe, PING, QUIT, RESET are allowed
	expires   time.Time
	timer     *time.Timer
	markers   []marker
	seq       uint64
	lastSeen  atomic.Int64 // unix ns of the last bytes in either direction
	idleTimer *time.Timer

	closeOnce sync.Once
	closing   chan struct{} // closed by close
}

func (c *gwConn) serve() {
	g := c.g
	defer func() {
		c.close()
		c.mu.Lock()
		if c.timer != nil {
			c.timer.Stop()
		}
		if c.idleTimer != nil {
			c.idleTimer.Stop()
		}
		c.mu.Unlock()
		g.mu.Lock()
		delete(g.conns, c)
		g.mu.Unlock()
		g.active.Add(-1)
		g.wg.Done()
	}()
	c.cw = bufio.NewWriterSize(c.client, 32<<10)
	d := net.Dialer{Timeout: g.dialTimeout}
	b, err := d.Dial("tcp", g.backend)
	if err != nil {
		g.backendDown.Add(1)
		g.logf(slog.LevelWarn, "entratest gateway: backend unreachable, closing client connection", "conn", c.id, "backend", g.backend, "err", err)
		return
	}
	c.mu.Lock()
	c.backend = b
	c.mu.Unlock()
	// A close that raced the dial (DropConnections, Close) must still reach the backend connection.
	select {
	case <-c.closing:
		_ = b.Close()
		return
	default:
	}
	if g.idleTimeout > 0 {
		c.seen()
		c.mu.Lock()
		c.idleTimer = time.AfterFunc(g.idleTimeout, c.onIdle)
		c.mu.Unlock()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.backendLoop()
	}()
	c.clientLoop()
	c.close()
	<-done
}

// close closes both sides once; it reports whether this call did it.
func (c *gwConn) close() bool {
	did := false
	c.closeOnce.Do(func() {
		did = true
		c.mu.Lock()
		close(c.closing)
		b := c.backend
		c.mu.Unlock()
		_ = c.client.Close()
		if b != nil {
			_ = b.Close()
		}
	})
	return did
}

// writeClient writes b to the client now.
func (c *gwConn) writeClient(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.cw.Write(b); err != nil {
		return err
	}
	return c.cw.Flush()
}

func (c *gwConn) clientLoop() {
	br := bufio.NewReaderSize(c.client, 32<<10)
	bw := bufio.NewWriterSize(c.backend, 32<<10)
	for {
		cmd, err := readCommand(br)
		c.seen()
		if err != nil {
			if errors.Is(err, errProtocol) {
				_ = c.writeClient([]byte("-ERR Protocol error: " + sanitize(err.Error()) + "\r\n"))
			}
			return
		}
		out, direct, quit := c.handle(cmd)
		if direct != nil {
			if err := c.writeClient(direct); err != nil {
				return
			}
		}
		if quit {
			return
		}
		if out != nil {
			if _, err := bw.Write(out); err != nil {
				return
			}
		}
		// Batch a pipeline's commands into few writes, but never hold one back.
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				c.g.backendDown.Add(1)
				return
			}
		}
	}
}

// sanitize keeps an error text on one line.
func sanitize(s string) string {
	return string(bytes.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, []byte(s)))
}

// handle decides what one command does: bytes for the backend (out), bytes for the client now
// (direct), or the end of the connection (quit).
func (c *gwConn) handle(cmd *command) (out, direct []byte, quit bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch cmd.name() {
	case "AUTH":
		if c.subRESP2 {
			// Redis refuses AUTH in RESP2 subscribed mode; let the backend say so.
			return c.forward(cmd.raw)
		}
		var user, token []byte
		switch len(cmd.args) {
		case 2:
			user, token = []byte("default"), cmd.args[1]
		case 3:
			user, token = cmd.args[1], cmd.args[2]
		default:
			return c.reply([]byte(replyAuthArity))
		}
		exp, refusal := c.verify(string(user), string(token))
		if refusal != nil {
			return c.reply(refusal)
		}
		return c.authReply([]byte(replyOK), exp)
	case "HELLO":
		return c.hello(cmd)
	case "QUIT":
		if !c.authed {
			return nil, []byte(replyOK), true
		}
	}
	if !c.authed {
		c.g.noauth.Add(1)
		return c.reply([]byte(replyNoAuth))
	}
	switch cmd.name() {
	case "MULTI":
		c.inMulti = true
	case "EXEC", "DISCARD":
		c.inMulti = false
	case "RESET":
		c.inMulti, c.resp3, c.subRESP2 = false, false, false
	case "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE":
		if !c.resp3 {
			c.subRESP2 = true
		}
	}
	return c.forward(cmd.raw)
}

// hello handles HELLO [protover [AUTH user pass] [SETNAME name]].
func (c *gwConn) hello(cmd *command) (out, direct []byte, quit bool) {
	var user, token, name []byte
	hasAuth, hasName := false, false
	args := cmd.args[1:]
	var proto []byte
	if len(args) > 0 {
		proto, args = args[0], args[1:]
	}
	for len(args) > 0 {
		switch opt := string(bytes.ToUpper(args[0])); {
		case opt == "AUTH" && len(args) >= 3:
			user, token, args, hasAuth = args[1], args[2], args[3:], true
		case opt == "SETNAME" && len(args) >= 2:
			name, args, hasName = args[1], args[2:], true
		default:
			if c.authed {
				return c.forward(cmd.raw) // the backend words the syntax error
			}
			return c.reply([]byte("-ERR Syntax error in HELLO option '" + sanitize(string(args[0])) + "'\r\n"))
		}
	}
	if !hasAuth {
		if !c.authed {
			c.g.noauth.Add(1)
			return c.reply([]byte(replyNoAuthHi))
		}
		c.noteProto(proto)
		return c.forward(cmd.raw)
	}
	exp, refusal := c.verify(string(user), string(token))
	if refusal != nil {
		return c.reply(refusal)
	}
	// The backend has no password: forward HELLO without AUTH so it still switches protocol.
	fwd := [][]byte{[]byte("HELLO"), proto}
	if hasName {
		fwd = append(fwd, []byte("SETNAME"), name)
	}
	c.noteProto(proto)
	hello := encodeCommand(fwd...)
	if !c.forwarded || c.inMulti {
		c.apply(exp)
		return c.forward(hello)
	}
	// Behind commands in flight: the AUTH part runs when a silent marker after HELLO returns.
	marker, _, _ := c.authReply(nil, exp)
	return append(hello, marker...), nil, false
}

func (c *gwConn) noteProto(proto []byte) {
	switch string(proto) {
	case "2":
		c.resp3 = false
	case "3":
		c.resp3 = true
	}
}

// forward sends b to the backend. c.mu is held.
func (c *gwConn) forward(b []byte) (out, direct []byte, quit bool) {
	c.forwarded = true
	return b, nil, false
}

// reply answers the client in order. c.mu is held. Before anything went to the backend, the reply
// can go straight out; after, it travels as a PING marker so that it follows the backend's earlier
// replies.
func (c *gwConn) reply(b []byte) (out, direct []byte, quit bool) {
	return c.authReply(b, time.Time{})
}

// authReply is reply for an accepted AUTH: its token becomes the connection's when the AUTH runs,
// that is now if nothing is in flight, or when its marker returns. Inside MULTI it applies at once
// (a known gap: Redis would run it at EXEC). c.mu is held.
func (c *gwConn) authReply(b []byte, exp time.Time) (out, direct []byte, quit bool) {
	if !c.forwarded {
		if !exp.IsZero() {
			c.apply(exp)
		}
		return nil, b, false
	}
	c.seq++
	name := []byte("entratest-gateway-" + strconv.FormatUint(c.id, 10) + "-" + strconv.FormatUint(c.seq, 10))
	if c.inMulti {
		// Inside MULTI the PING is queued (the client sees QUEUED), so no marker comes back alone.
		if !exp.IsZero() {
			c.apply(exp)
		}
	} else {
		c.markers = append(c.markers, marker{name: name, reply: b, authExp: exp})
	}
	return encodeCommand([]byte("PING"), name), nil, false
}

// verify checks a token for user and counts the outcome: its expiry, or the reply refusing it.
// c.mu is held.
func (c *gwConn) verify(user, token string) (time.Time, []byte) {
	g := c.g
	exp, why := g.checkToken(user, token)
	if why != "" {
		g.refused.Add(1)
		g.logf(slog.LevelInfo, "entratest gateway: AUTH refused", "conn", c.id, "reason", why)
		if why == reasonNoUser {
			return time.Time{}, []byte(replyNoUser)
		}
		return time.Time{}, []byte(replyWrongPass)
	}
	g.accepted.Add(1)
	return exp, nil
}

// apply makes a verified token's expiry the connection's: the AUTH has run. c.mu is held.
func (c *gwConn) apply(exp time.Time) {
	g := c.g
	c.authed = true
	c.expires = exp
	d := g.until(exp)
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.onExpiry)
	} else {
		c.timer.Reset(d)
	}
	g.logf(slog.LevelDebug, "entratest gateway: AUTH accepted", "conn", c.id, "expires", exp)
}

func (c *gwConn) seen() { c.lastSeen.Store(time.Now().UnixNano()) }

// onIdle closes the connection when nothing travelled on it for IdleTimeout, as Azure does.
func (c *gwConn) onIdle() {
	idle := time.Since(time.Unix(0, c.lastSeen.Load()))
	if rem := c.g.idleTimeout - idle; rem > 0 {
		c.mu.Lock()
		c.idleTimer.Reset(rem)
		c.mu.Unlock()
		return
	}
	if c.close() {
		c.g.idles.Add(1)
		c.g.logf(slog.LevelInfo, "entratest gateway: idle connection closed", "conn", c.id, "idle", idle)
	}
}

// onExpiry closes the connection when its token has expired, as Azure does: no reply, just the
// end of the connection.
func (c *gwConn) onExpiry() {
	c.mu.Lock()
	if rem := c.g.until(c.expires); rem > 0 {
		c.timer.Reset(rem) // a newer AUTH raced this timer
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	if c.close() {
		c.g.expiries.Add(1)
		c.g.logf(slog.LevelInfo, "entratest gateway: token expired, connection closed", "conn", c.id)
	}
}

func (c *gwConn) backendLoop() {
	br := bufio.NewReaderSize(c.backend, 32<<10)
	for {
		rp, err := readReply(br)
		if err != nil {
			if c.close() {
				c.g.backendDown.Add(1)
				c.g.logf(slog.LevelInfo, "entratest gateway: backend closed the connection", "conn", c.id, "err", err)
			}
			return
		}
		c.seen()
		out := rp.raw
		c.mu.Lock()
		if len(c.markers) > 0 && isMarker(rp, c.markers[0].name) {
			m := c.markers[0]
			out = m.reply
			c.markers = c.markers[1:]
			if !m.authExp.IsZero() {
				c.apply(m.authExp)
			}
		}
		if c.subRESP2 && rp.kind == '*' && len(rp.elems) == 3 && isUnsubscribe(rp.elems[0]) && string(rp.elems[2]) == "0" {
			c.subRESP2 = false
		}
		c.mu.Unlock()
		c.wmu.Lock()
		_, err = c.cw.Write(out)
		if err == nil && br.Buffered() == 0 {
			err = c.cw.Flush()
		}
		c.wmu.Unlock()
		if err != nil {
			c.close()
			return
		}
	}
}

// isMarker reports whether a reply is the answer to PING name: a bulk string, or ["pong", name]
// in subscribed mode.
func isMarker(rp *reply, name []byte) bool {
	switch rp.kind {
	case '$':
		return bytes.Equal(rp.str, name)
	case '*', '>':
		return len(rp.elems) == 2 && bytes.EqualFold(rp.elems[0], []byte("pong")) && bytes.Equal(rp.elems[1], name)
	}
	return false
}

func isUnsubscribe(kind []byte) bool {
	switch string(bytes.ToLower(kind)) {
	case "unsubscribe", "punsubscribe", "sunsubscribe":
		return true
	}
	return false
}

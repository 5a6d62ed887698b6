package hook

import (
	"bytes"
	"log/slog"
	"net"
	"time"

	"github.com/entraredis/entraredis/internal/resp"
)

// The marks and the read side's slow path. The writer puts a mark at the position of a reply the
// read side must act on (the guard's own AUTH: cut out; go-redis's AUTH or HELLO: delivered, and
// the token it carried recorded once accepted); the reader counts replies and meets the marks.

var okReply = []byte("+OK\r\n")

// A mark is a reply the read side must act on: the reply at position at (replies counted from
// 0 on the connection, pushes apart).
type mark struct {
	at   uint64
	sub  string       // a subscription command's name (subs.go): its pushes or its error reply
	n    int          // of sub: confirmations still due
	cur  *creds       // the guard's AUTH with this token: its reply is removed
	auth *pendingAuth // go-redis's AUTH or HELLO: its reply is delivered, and tells the outcome
}

type pendingAuth struct {
	exp, life  int64
	hello      bool
	user, pass string
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

// dropMark takes back m, the last mark added, whose request could not be written (write side).
func (c *conn) dropMark(m mark) {
	c.mk.Lock()
	for i := len(c.marks) - 1; i >= 0; i-- {
		if c.marks[i] == m {
			c.marks = append(c.marks[:i], c.marks[i+1:]...)
			break
		}
	}
	if len(c.marks) == 0 {
		c.marks = nil
	}
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
				if m.sub != "" {
					c.subAnswered(m, p[:l])
					continue
				}
				typ := resp.TypeOf(p[:l])
				if typ == '>' {
					c.ready += l // a push ahead of it: go-redis's
					continue
				}
				c.popMark()
				c.got++
				if m.auth != nil {
					c.settle(m.auth, typ)
					c.ready += l
					continue
				}
				if typ != '-' && !bytes.Equal(p[:l], okReply) {
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

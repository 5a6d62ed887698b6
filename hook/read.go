package hook

import "github.com/entraredis/entraredis/internal/resp"

// The read side's common path: a reply due, no mark, nothing held back. It counts the replies
// go-redis reads and publishes the count; the marks and everything held back go the slow way
// (marks.go).

func (c *conn) Read(b []byte) (int, error) {
	// A reply is due and no background work holds the connection: none can start before this
	// call publishes its count (see write). Loaded in this order.
	got := c.got
	if c.sentA.Load() <= got || c.bg.Load() || c.state.Load() != stateManaged {
		return c.readAhead(b)
	}
	var n int
	var err error
	if len(c.rbuf) > 0 || c.nmarks.Load() > 0 || c.rerr != nil {
		n, err = c.markedRead(b)
	} else if n, err = c.Conn.Read(b); n > 0 {
		// fastRead, inline for replies read whole with no mark in sight (see there)
		if c.nmarks.Load() > 0 || c.reps.Mid() {
			n, err = c.readSome(b, n, err)
		} else if resp.One(b[:n]) {
			c.got++
		} else if r, l := resp.Replies(b[:n]); l == n {
			c.got += uint64(r)
		} else {
			c.got += uint64(r)
			c.feedReplies(b[l:n])
		}
	}
	if c.got != got { // a part of a reply publishes nothing new
		c.gotA.Store(c.got)
	}
	return n, err
}

// readAhead is Read with no reply due (go-redis's reader waiting for the next one: pushes, or the
// full-duplex reader ahead of its writer), while background work holds the connection, or on a
// connection that is not managed: under the read side's lock.
func (c *conn) readAhead(b []byte) (int, error) {
	if c.bg.Load() {
		if err := c.waitBackground(c.rd.Load(), "read"); err != nil {
			return 0, err
		}
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.state.Load() == statePubSub && !c.resp3.Load() && c.nmarks.Load() == 0 && !c.reps.Mid() {
		return c.pubsubRead(b)
	} // else a RESP2 subscriber whose SUBSCRIBE followed an AUTH of the guard's: counted until it is cut
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

// fastRead reads straight into b and counts the replies (Read has its common case inline).
func (c *conn) fastRead(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n == 0 {
		return n, err
	}
	return c.readSome(b, n, err)
}

// readSome takes the n bytes (and err) a read of the socket put in b.
func (c *conn) readSome(b []byte, n int, err error) (int, error) {
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
	if !c.reps.Mid() {
		r, n := resp.Replies(p)
		c.got += uint64(r)
		p = p[n:]
	}
	c.feedReplies(p)
}

// feedReplies gives the reply scanner the bytes whole frames leave (read side).
func (c *conn) feedReplies(p []byte) {
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

package resp

import "bytes"

// The scanners follow a stream fed in pieces of any size. They keep only what a header line needs
// (its type byte and a few bytes of its length) and a stack of open aggregates, and skip payloads
// by count, so a Feed costs O(headers), whatever the payloads weigh. They reach the same verdict
// as FrameLen and SplitArgs on the whole stream, at the same byte.

// A header collects one line across Feeds.
type header struct {
	on   bool // inside a line: its type byte was seen
	cr   bool // the last byte seen was '\r'
	bad  bool // a '\r' or '\n' where it may not be
	long bool // the content did not fit in buf
	junk bool // the content past buf holds something other than digits
	typ  byte
	n    uint8
	buf  [24]byte // the start of the content (after the type byte), for lengths
}

// feed consumes b up to the '\n' that ends the line, and reports whether it came.
func (h *header) feed(b []byte) (used int, done bool) {
	nl := bytes.IndexByte(b, '\n')
	seg := b
	if nl >= 0 {
		seg = b[:nl]
	}
	if len(seg) > 0 {
		if h.cr { // a '\r' followed by something other than '\n'
			h.bad = true
		}
		if i := bytes.IndexByte(seg, '\r'); i >= 0 && i < len(seg)-1 {
			h.bad = true
		}
		h.cr = seg[len(seg)-1] == '\r'
		content := seg
		if !h.on {
			h.on, h.typ, content = true, seg[0], seg[1:]
		}
		if !simple(h.typ) { // only lengths need the content
			k := copy(h.buf[h.n:], content)
			h.n += uint8(k)
			if rest := content[k:]; len(rest) > 0 {
				h.long = true
				for _, c := range rest {
					if (c < '0' || c > '9') && c != '\r' {
						h.junk = true
					}
				}
			}
		}
	}
	if nl < 0 {
		return len(b), false
	}
	if !h.cr {
		h.bad = true
	}
	return nl + 1, true
}

// take ends the line: its type byte, its content (valid until the next line), and ErrMalformed
// if the line is not well formed as FrameLen's line sees it.
func (h *header) take() (typ byte, content []byte, err error) {
	typ = h.typ
	switch {
	case h.bad:
		err = ErrMalformed
	case h.long:
		// A content too long for buf stands for itself in what parseLen will make of it: digits
		// without a leading zero are a number too large, anything else is malformed.
		content = longJunk
		if !h.junk && h.buf[0] >= '1' && h.buf[0] <= '9' && digits(h.buf[1:]) {
			content = longNumber
		}
	case h.n > 0:
		content = h.buf[:h.n-1] // without the '\r'
	}
	*h = header{buf: h.buf}
	return typ, content, err
}

var (
	longNumber = []byte("999999999999999999999999")
	longJunk   = []byte("x")
)

func digits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func simple(typ byte) bool {
	switch typ {
	case '+', '-', ':', ',', '#', '(', '_':
		return true
	}
	return false
}

// The scanners' states besides reading a header line.
const (
	inLine  uint8 = iota // a header line, or between values
	inBody               // skipping a bulk string's bytes
	inTrail              // the "\r\n" after them
)

// body skips payloads and checks the "\r\n" after them.
type body struct {
	state uint8
	skip  int  // bytes of the payload left
	trail byte // bytes of the "\r\n" seen
	bad   bool // the trail is not "\r\n"
}

// start begins skipping a payload of n bytes.
func (p *body) start(n int) {
	p.state, p.skip = inBody, n
	if n == 0 {
		p.state = inTrail
	}
}

// feed consumes b within the payload and its trail; done reports the trail complete, err whether
// it was "\r\n".
func (p *body) feed(b []byte) (used int, done bool, err error) {
	if p.state == inBody {
		used = min(p.skip, len(b))
		if p.skip -= used; p.skip == 0 {
			p.state = inTrail
		}
		b = b[used:]
	}
	for ; len(b) > 0 && p.state == inTrail; b = b[1:] {
		used++
		if b[0] != "\r\n"[p.trail] {
			p.bad = true
		}
		if p.trail++; p.trail == 2 {
			if p.bad {
				err = ErrMalformed
			}
			*p = body{}
			return used, true, err
		}
	}
	return used, false, nil
}

// level is an open aggregate.
type level struct {
	left int32 // values left in it; -1: streamed, until "."
	typ  byte
	odd  bool // streamed map: a key was read, its value is due
	top  bool // at the top of the frame: a top-level value, or the value of an attribute there
}

// ReplyScanner follows a stream of replies, fed in pieces of any size. Its zero value is ready.
type ReplyScanner struct {
	h      header
	p      body
	chunks bool // inside a streamed string: lines are chunk headers
	push   bool // the current frame is a push ('>'), not a reply
	sp     int  // open aggregates
	stack  [MaxDepth + 1]level
	err    error
}

// Feed consumes the next bytes of the stream and returns how many frames they complete: replies,
// and RESP3 push messages ('>', which answer no request) apart. An attribute is part of the reply
// that follows it. After an error the scanner refuses everything: the stream has lost its place.
func (s *ReplyScanner) Feed(b []byte) (replies, pushes int, err error) {
	if s.err != nil {
		return 0, 0, s.err
	}
	for len(b) > 0 {
		var used int
		var done bool
		if s.p.state != inLine {
			used, done, err = s.p.feed(b)
			if done && err == nil && !s.chunks {
				done = s.end()
			} else {
				done = false
			}
		} else if used, done = s.h.feed(b); done {
			done, err = s.line()
		}
		b = b[used:]
		if err != nil {
			s.err = err
			return replies, pushes, err
		}
		if done {
			if s.push {
				pushes++
			} else {
				replies++
			}
			s.push = false
		}
	}
	return replies, pushes, nil
}

// Next is Feed stopping at the end of the first frame the bytes complete: it returns how many
// bytes it consumed, and whether they complete a frame (done) and that frame is a push.
func (s *ReplyScanner) Next(b []byte) (used int, done, push bool, err error) {
	if s.err != nil {
		return 0, false, false, s.err
	}
	for len(b) > 0 {
		var n int
		if s.p.state != inLine {
			n, done, err = s.p.feed(b)
			if done && err == nil && !s.chunks {
				done = s.end()
			} else {
				done = false
			}
		} else if n, done = s.h.feed(b); done {
			done, err = s.line()
		}
		b, used = b[n:], used+n
		if err != nil {
			s.err = err
			return used, false, false, err
		}
		if done {
			push, s.push = s.push, false
			return used, true, push, nil
		}
	}
	return used, false, false, nil
}

// Mid reports whether the scanner is inside a frame: the bytes fed so far end within one.
func (s *ReplyScanner) Mid() bool {
	return s.h.on || s.p.state != inLine || s.chunks || s.sp > 0
}

// line acts on a complete header line; done reports a top-level frame complete.
func (s *ReplyScanner) line() (done bool, err error) {
	typ, content, err := s.h.take()
	if err != nil {
		return false, err
	}
	if s.chunks {
		if typ != ';' {
			return false, ErrMalformed
		}
		n, _, err := parseLen(content, MaxBulk, false, false)
		if err != nil {
			return false, err
		}
		if n == 0 {
			s.chunks = false
			return s.end(), nil
		}
		s.p.start(n)
		return false, nil
	}
	var up *level
	if s.sp > 0 {
		up = &s.stack[s.sp-1]
	}
	if typ == '.' && up != nil && up.left < 0 && !up.odd {
		if len(content) > 0 {
			return false, ErrMalformed
		}
		s.sp--
		return s.end(), nil
	}
	if s.sp > MaxDepth {
		return false, ErrTooLarge
	}
	top := up == nil || up.typ == '|' && up.top && up.left == 1
	if top {
		s.push = typ == '>'
	}
	switch typ {
	case '+', '-', ':', ',', '#', '(', '_':
		return s.end(), nil
	case '$', '!', '=':
		n, streamed, err := parseLen(content, MaxBulk, typ == '$', typ == '$')
		switch {
		case err != nil:
			return false, err
		case streamed:
			s.chunks = true
		case n < 0:
			return s.end(), nil
		default:
			s.p.start(n)
		}
		return false, nil
	case '*', '~', '%', '>', '|':
		n, streamed, err := parseLen(content, MaxAggregate, typ == '*', typ == '*' || typ == '~' || typ == '%')
		switch {
		case err != nil:
			return false, err
		case streamed:
			n = -1
		case typ == '%':
			n *= 2
		case typ == '|':
			n = 2*n + 1
		}
		if n == 0 || n < 0 && !streamed {
			return s.end(), nil
		}
		s.stack[s.sp] = level{left: int32(n), typ: typ, top: top}
		s.sp++
		return false, nil
	}
	return false, ErrMalformed
}

// end records a complete value and closes the aggregates it completes; it reports whether the
// top-level frame is complete.
func (s *ReplyScanner) end() bool {
	for s.sp > 0 {
		l := &s.stack[s.sp-1]
		if l.left < 0 {
			l.odd = l.typ == '%' && !l.odd
			return false
		}
		if l.left--; l.left > 0 {
			return false
		}
		s.sp--
	}
	return true
}

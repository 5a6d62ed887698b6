package resp

// RequestScanner follows a stream of requests (arrays of bulk strings), fed in pieces of any
// size, and names each command as soon as its name is read. Its zero value is ready.
type RequestScanner struct {
	h     header
	p     body
	left  int  // arguments left in the current request; 0: between requests
	first bool // the payload being skipped is the command name
	nlen  int
	name  [32]byte
	err   error
}

// Feed consumes the next bytes of the stream and calls visit with the name of every command
// whose name they complete. name is valid only during the call, and holds at most 32 bytes: a
// longer name is cut. After an error the scanner refuses everything.
func (s *RequestScanner) Feed(b []byte, visit func(name []byte)) error {
	if s.err != nil {
		return s.err
	}
	for len(b) > 0 {
		var err error
		if s.p.state != inLine {
			if s.first && s.p.state == inBody {
				k := min(s.p.skip, len(b))
				s.nlen += copy(s.name[min(s.nlen, len(s.name)):], b[:k])
			}
			var used int
			var done bool
			used, done, err = s.p.feed(b)
			b = b[used:]
			if done && err == nil {
				if s.first {
					s.first = false
					visit(s.name[:min(s.nlen, len(s.name))])
				}
				s.left--
			}
		} else if nl := lineEnd(b, s.h.on); nl > 0 {
			// A whole line at the start of b, read where it lies: the common case, in which
			// the header's copy of it was most of the cost of a large request's writes.
			err = s.lineOf(b[0], b[1:nl-1])
			b = b[nl+1:]
		} else if used, done := s.h.feed(b); done {
			b = b[used:]
			err = s.line()
		} else {
			b = b[used:]
		}
		if err != nil {
			s.err = err
			return err
		}
	}
	return nil
}

// Mid reports whether the bytes fed so far end within a request.
func (s *RequestScanner) Mid() bool {
	return s.h.on || s.p.state != inLine || s.left > 0
}

func (s *RequestScanner) line() error {
	typ, content, err := s.h.take()
	if err != nil {
		return err
	}
	return s.lineOf(typ, content)
}

// lineEnd returns the index of the '\n' that ends a whole, well-formed line at the start of b
// whose content fits the header's buffer (as header would read it: one '\r', right before the
// '\n'), or 0 for any other (a line begun in an earlier write when on, in pieces, long, or
// malformed: the header's way).
func lineEnd(b []byte, on bool) int {
	if on || len(b) < 3 || b[0] == '\r' || b[0] == '\n' {
		return 0
	}
	for i := 1; i < len(b) && i <= len(header{}.buf); i++ {
		switch b[i] {
		case '\r':
			if i+1 < len(b) && b[i+1] == '\n' {
				return i + 1
			}
			return 0
		case '\n':
			return 0
		}
	}
	return 0
}

// lineOf takes a request's line: an array's length (a command starts) or a bulk string's.
func (s *RequestScanner) lineOf(typ byte, content []byte) error {
	if s.left == 0 {
		if typ != '*' {
			return ErrMalformed
		}
		n, _, err := parseLen(content, MaxArgs, true, false)
		if err != nil {
			return err
		}
		s.left, s.first, s.nlen = max(n, 0), n > 0, 0
		return nil
	}
	if typ != '$' {
		return ErrMalformed
	}
	n, _, err := parseLen(content, MaxBulk, false, false)
	if err != nil {
		return err
	}
	s.p.start(n)
	return nil
}

// Package resp is the one RESP codec entraredis needs: it encodes requests, finds where a reply
// ends (RESP2 and RESP3, with push, attribute and streamed types), splits a request into its
// arguments, names a request's command (RequestLen, Name, KindOf), and follows a connection's byte
// streams in both directions, however the reads and writes cut them.
//
// It is a framer, not a decoder: it says where values begin and end and never builds them, so its
// hot paths (FrameLen, RequestLen, Name, the scanners) do not allocate. Lines end with "\r\n" and
// nothing else: a bare '\r' or '\n' in a header line is malformed, as is a bulk string not
// followed by "\r\n". Lengths are "0", a number without leading zeros, or "-1" (null) where RESP
// allows one ('$' and '*'). The content of simple lines ('+', '-', ':', ',', '#', '(', '_') is not
// checked.
//
// Errors are reported when the line (or the bulk string's trailing "\r\n") that breaks a rule is
// complete, never earlier, so every reader in this package agrees on every prefix of a stream:
// 0 or "incomplete" first, then the frame, or the error.
package resp

import (
	"bytes"
	"encoding/binary"
	"errors"
)

// Limits past which a stream is refused with ErrTooLarge rather than buffered.
const (
	MaxBulk      = 512 << 20 // bytes in one bulk string or streamed chunk: Redis's proto-max-bulk-len default
	MaxAggregate = 1 << 28   // elements of one aggregate reply (pairs, for maps and attributes)
	MaxArgs      = 1 << 20   // arguments of one request
	MaxDepth     = 128       // nesting of aggregates; an attribute counts as one level
)

var (
	// ErrMalformed is a stream that is not RESP: the peer is not a Redis server, or the reader
	// lost its place. Close the connection.
	ErrMalformed = errors.New("resp: malformed stream: the peer does not speak RESP or the stream lost its place; close the connection")
	// ErrTooLarge is a length or nesting over the limits above. Close the connection.
	ErrTooLarge = errors.New("resp: length or nesting over the codec's limits; close the connection")
)

// errIncomplete is internal: b ends before the value does.
var errIncomplete = errors.New("resp: incomplete")

// FrameLen returns the length of the one complete reply at the start of b, 0 when b holds only a
// part of it, or an error (ErrMalformed, ErrTooLarge) when it can't be a reply. An attribute ('|')
// belongs to the value that follows it: both make one frame.
func FrameLen(b []byte) (int, error) {
	if n := frameLen(b); n > 0 {
		return n, nil
	}
	return frameLenSlow(b)
}

// frameLenSlow is FrameLen by the general parser.
func frameLenSlow(b []byte) (int, error) {
	n, err := value(b, 0, 0)
	if err == errIncomplete {
		return 0, nil
	}
	return n, err
}

// One reports whether b is exactly "+OK" or a null bulk string (GET of a missing key), the
// commonest 5-byte replies: Replies(b) is then 1, len(b). Small enough to be inlined, for a
// reader that gets one reply per read. b was just filled by a copy (crypto/tls's, or a fake's),
// which moves 5 bytes as [0:4] and [1:5]: a word read across both would wait for the two stores
// to reach the cache, so b is read as b[0] and b[1:5].
func One(b []byte) bool {
	if len(b) != 5 {
		return false
	}
	v := binary.LittleEndian.Uint32(b[1:])
	return b[0] == '$' && v == nullBulk || b[0] == '+' && v == okLine
}

// Replies measures the whole frames at the start of b at once, as FrameLen does one by one: how
// many of them are replies (a push, '>', answers no request) and the bytes they take. It stops
// at the first frame b holds only a part of, or that is not RESP (FrameLen tells which): a
// scanner takes the stream from there.
func Replies(b []byte) (replies, n int) {
	for n < len(b) {
		p := b[n:]
		var l int
		// The commonest replies inline, read so as not to straddle a copy's stores (see One): a short
		// bulk string, a null.
		if len(p) >= 6 && p[0] == '$' && p[2] == '\r' && p[3] == '\n' && p[1]-'0' <= 9 && endsLine(p, 4+int(p[1]-'0')) {
			l = 6 + int(p[1]-'0')
		} else if len(p) >= 5 && p[0] == '$' && binary.LittleEndian.Uint32(p[1:]) == nullBulk {
			l = 5 // null: GET of a missing key
		} else {
			l = frameLen(p) // no push among the frames it measures
		}
		if l == 0 {
			var err error
			if l, err = frameLenSlow(p); l == 0 || err != nil {
				break
			}
			if typ := p[0]; typ == '>' || typ == '|' && TypeOf(p[:l]) == '>' {
				n += l
				continue
			}
		}
		replies++
		n += l
	}
	return replies, n
}

// "$-1\r" and "+OK\r" read as little-endian uint32s.
const (
	nullBulk = '-' | '1'<<8 | '\r'<<16 | '\n'<<24 // "$-1\r\n" after its '$'
	okLine   = 'O' | 'K'<<8 | '\r'<<16 | '\n'<<24 // "+OK\r\n" after its '+'
)

// frameLen is FrameLen's one pass over the commonest replies, a whole bulk string (or null) or
// simple line ('+', '-', ':'); 0 for anything else, which value then decides: what frameLen
// measures, value measures alike (FuzzFrameLenFast, FuzzFrameLen). It is the guard's per-reply cost.
func frameLen(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	switch b[0] {
	case '$':
		if len(b) >= 5 && b[1] == '-' {
			if b[2] == '1' && b[3] == '\r' && b[4] == '\n' {
				return 5 // null: GET of a missing key
			}
			return 0
		}
		l, j, ok := digit(b, 0, '$')
		if !ok {
			l, j, ok = length(b, 0, '$', MaxBulk)
		}
		if ok && endsLine(b, j+l) {
			return j + l + 2
		}
	case '+', '-', ':':
		for j := 1; j < len(b); j++ {
			switch b[j] {
			case '\r':
				if j+1 < len(b) && b[j+1] == '\n' {
					return j + 2
				}
				return 0
			case '\n':
				return 0
			}
		}
	}
	return 0
}

// TypeOf returns the type byte of a complete frame's value, skipping the attributes ahead of it:
// '+', '-', '>' (a push)... 0 when frame is not a complete frame.
func TypeOf(frame []byte) byte {
	typ, _ := Payload(frame)
	return typ
}

// Payload returns the type and the content of a complete frame (attributes skipped): a simple
// line's text, or a bulk string's bytes; nil for aggregates. A null ("$-1", "*-1", "_") has type
// '_'. typ is 0 when frame is not a complete frame.
func Payload(frame []byte) (typ byte, p []byte) {
	i := 0
	for {
		cr, next, err := line(frame, i)
		if err != nil {
			return 0, nil
		}
		typ, s := frame[i], frame[i+1:cr]
		switch typ {
		case '+', '-', ':', ',', '#', '(':
			return typ, s
		case '_':
			return typ, nil
		case '$', '!', '=':
			n, streamed, err := parseLen(s, MaxBulk, typ == '$', typ == '$')
			switch {
			case err != nil:
				return 0, nil
			case streamed:
				return typ, nil // its chunks are not contiguous
			case n < 0:
				return '_', nil
			case next+n+2 > len(frame):
				return 0, nil
			}
			return typ, frame[next : next+n : next+n]
		case '|':
			n, _, err := parseLen(s, MaxAggregate, false, false)
			if err != nil {
				return 0, nil
			}
			for range 2 * n {
				if next, err = value(frame, next, 1); err != nil {
					return 0, nil
				}
			}
			i = next // the value the attribute belongs to
		case '*':
			if bytes.Equal(s, []byte("-1")) {
				return '_', nil
			}
			return typ, nil
		default:
			return typ, nil
		}
	}
}

// value parses the value at b[i] and returns the index after it; depth is its nesting level.
func value(b []byte, i, depth int) (int, error) {
	cr, next, err := line(b, i)
	if err != nil {
		return 0, err
	}
	if depth > MaxDepth {
		return 0, ErrTooLarge
	}
	typ, s := b[i], b[i+1:cr]
	switch typ {
	case '+', '-', ':', ',', '#', '(', '_':
		return next, nil
	case '$', '!', '=':
		n, streamed, err := parseLen(s, MaxBulk, typ == '$', typ == '$')
		switch {
		case err != nil:
			return 0, err
		case streamed:
			return chunks(b, next)
		case n < 0:
			return next, nil
		}
		return blob(b, next, n)
	case '*', '~', '%', '>', '|':
		n, streamed, err := parseLen(s, MaxAggregate, typ == '*', typ == '*' || typ == '~' || typ == '%')
		if err != nil {
			return 0, err
		}
		if streamed {
			return streamedAggregate(b, next, depth, typ == '%')
		}
		switch typ {
		case '%':
			n *= 2
		case '|':
			n = 2*n + 1 // the attribute's pairs, then the value it belongs to
		}
		for ; n > 0; n-- {
			if next, err = value(b, next, depth+1); err != nil {
				return 0, err
			}
		}
		return next, nil
	}
	return 0, ErrMalformed
}

// streamedAggregate parses the elements of "*?", "~?" or "%?" at b[i] up to the end marker ".".
func streamedAggregate(b []byte, i, depth int, pairs bool) (int, error) {
	for odd := false; ; odd = pairs && !odd {
		if i >= len(b) {
			return 0, errIncomplete
		}
		if b[i] == '.' && !odd {
			cr, next, err := line(b, i)
			if err != nil {
				return 0, err
			}
			if cr != i+1 {
				return 0, ErrMalformed
			}
			return next, nil
		}
		var err error
		if i, err = value(b, i, depth+1); err != nil {
			return 0, err
		}
	}
}

// chunks parses the chunks of a streamed string (";<n>\r\n<n bytes>\r\n"... ";0\r\n") at b[i].
func chunks(b []byte, i int) (int, error) {
	for {
		cr, next, err := line(b, i)
		if err != nil {
			return 0, err
		}
		if b[i] != ';' {
			return 0, ErrMalformed
		}
		n, _, err := parseLen(b[i+1:cr], MaxBulk, false, false)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return next, nil
		}
		if i, err = blob(b, next, n); err != nil {
			return 0, err
		}
	}
}

// blob checks the n bytes and "\r\n" at b[i] and returns the index after them.
func blob(b []byte, i, n int) (int, error) {
	if len(b)-i < n+2 {
		return 0, errIncomplete
	}
	if b[i+n] != '\r' || b[i+n+1] != '\n' {
		return 0, ErrMalformed
	}
	return i + n + 2, nil
}

// line finds the line at b[i] (type byte included): the index of its '\r' and the index after its
// '\n'. A '\r' or '\n' anywhere else in the line, or no type byte, makes it malformed.
func line(b []byte, i int) (cr, next int, err error) {
	// A loop, not bytes.IndexByte: lines are a few bytes long, and this is the hot path.
	bad := false
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '\n':
			if bad || j <= i+1 || b[j-1] != '\r' {
				return 0, 0, ErrMalformed
			}
			return j - 1, j + 1, nil
		case '\r':
			if j == i || (j+1 < len(b) && b[j+1] != '\n') {
				bad = true // reported once the line is whole, as the other readers do
			}
		}
	}
	return 0, 0, errIncomplete
}

// parseLen reads a length: "0" or digits without a leading zero, at most limit; "-1" when null
// is allowed (it returns -1); "?" when stream is allowed (streamed is true).
func parseLen(s []byte, limit int, null, stream bool) (n int, streamed bool, err error) {
	switch {
	case len(s) == 1 && s[0] == '?' && stream:
		return 0, true, nil
	case len(s) == 2 && s[0] == '-' && s[1] == '1' && null:
		return -1, false, nil
	case len(s) == 1 && s[0] == '0':
		return 0, false, nil
	case len(s) == 0 || s[0] < '1' || s[0] > '9':
		return 0, false, ErrMalformed
	}
	over := false
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false, ErrMalformed
		}
		if !over {
			if n = n*10 + int(c-'0'); n > limit {
				over = true
			}
		}
	}
	if over {
		return 0, false, ErrTooLarge
	}
	return n, false, nil
}

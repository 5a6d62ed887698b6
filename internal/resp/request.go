package resp

import (
	"encoding/binary"
	"strconv"
)

// AppendRequest appends args as a request (an array of bulk strings, as go-redis writes one).
func AppendRequest(dst []byte, args ...string) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(len(args)), 10)
	dst = append(dst, '\r', '\n')
	for _, a := range args {
		dst = append(dst, '$')
		dst = strconv.AppendInt(dst, int64(len(a)), 10)
		dst = append(dst, '\r', '\n')
		dst = append(dst, a...)
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// SplitArgs splits the request at the start of b into its arguments (views into b) and returns
// the bytes it takes; n is 0 when b holds only a part of it. An empty request ("*0", "*-1", which
// Redis ignores) has no arguments and n > 0.
func SplitArgs(b []byte) (args [][]byte, n int, err error) {
	n, err = request(b, func(i int, arg []byte) {
		if args == nil {
			args = make([][]byte, 0, 4)
		}
		args = append(args, arg)
	})
	if n == 0 || err != nil {
		return nil, n, err
	}
	return args, n, nil
}

// RequestLen returns the length of the whole request at the start of b and its command name (a
// view into b, nil for an empty request); n is 0 when b holds only a part of it. It is SplitArgs
// without the argument list: no allocation, for the hot path that counts a connection's commands.
//
// The common request (a whole array of one or more bulk strings, every length within the limits)
// is measured here in one pass, inline: it is the guard's per-command cost. Anything else (a part
// of a request, an empty one, a malformed one) is left to the general parser, which accepts alike
// what this pass accepts (FuzzRequestLen).
func RequestLen(b []byte) (name []byte, n int, err error) {
	var i, left int
	named := false
	if len(b) >= 8 {
		// The commonest start, "*<d>\r\n$<d>\r\n" (under ten arguments, a short name), in one load.
		v := binary.LittleEndian.Uint64(b)
		count, l := int(byte(v>>8)-'0'), int(byte(v>>40)-'0')
		if v&startMask == startBits && uint(count-1) < 9 && l <= 9 {
			e := 8 + l
			if len(b)-e < 2 || binary.LittleEndian.Uint16(b[e:]) != crlf {
				return requestLenSlow(b)
			}
			name, i, left, named = b[8:e:e], e+2, count-1, true
		}
	}
	if !named {
		count, j, ok := digit(b, 0, '*')
		if !ok {
			count, j, ok = length(b, 0, '*', MaxArgs)
		}
		if !ok || count == 0 {
			return requestLenSlow(b)
		}
		i, left = j, count
	}
	for ; left > 0; left-- {
		if len(b)-i < 4 {
			return requestLenSlow(b)
		}
		// digit, by hand: the loop keeps its variables in registers.
		v := binary.LittleEndian.Uint32(b[i:])
		l, j := int(byte(v>>8)-'0'), i+4
		if v>>16 != crlf || byte(v) != '$' || l > 9 {
			var ok bool
			if l, j, ok = length(b, i, '$', MaxBulk); !ok {
				return requestLenSlow(b)
			}
		}
		e := j + l
		if len(b)-e < 2 || binary.LittleEndian.Uint16(b[e:]) != crlf {
			return requestLenSlow(b)
		}
		if !named {
			name, named = b[j:e:e], true
		}
		i = e + 2
	}
	return name, i, nil
}

// requestLenSlow is RequestLen by the general parser.
func requestLenSlow(b []byte) (name []byte, n int, err error) {
	n, err = request(b, func(i int, arg []byte) {
		if i == 0 {
			name = arg
		}
	})
	if n == 0 || err != nil {
		return nil, n, err
	}
	return name, n, nil
}

// length reads the line "<typ><length>\r\n" at b[i] in one pass: a length of digits without a
// leading zero (or "0"), at most limit; next is the index after the line. ok is false for
// anything else (a null, a part of the line, a malformed or too large one).
func length(b []byte, i int, typ byte, limit int) (n, next int, ok bool) {
	if i >= len(b) || b[i] != typ {
		return 0, 0, false
	}
	j := i + 1
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		if n = n*10 + int(b[j]-'0'); n > limit {
			return 0, 0, false
		}
	}
	if d := j - i - 1; d == 0 || (d > 1 && b[i+1] == '0') || j+1 >= len(b) || b[j] != '\r' || b[j+1] != '\n' {
		return 0, 0, false
	}
	return n, j + 2, true
}

// digit is length for the commonest line, a one-digit length (every limit is above 9), small
// enough to be inlined: the line is one 4-byte load.
func digit(b []byte, i int, typ byte) (n, next int, ok bool) {
	if i < 0 || len(b)-i < 4 {
		return 0, 0, false
	}
	v := binary.LittleEndian.Uint32(b[i:])
	if d := byte(v>>8) - '0'; v>>16 == crlf && byte(v) == typ && d <= 9 {
		return int(d), i + 4, true
	}
	return 0, 0, false
}

// The start "*<d>\r\n$<d>\r\n" read as a little-endian uint64, its digits masked out.
const (
	startMask = 0xffff00ff_ffff00ff
	startBits = '\n'<<56 | '\r'<<48 | '$'<<32 | '\n'<<24 | '\r'<<16 | '*'
)

// crlf is "\r\n" read as a little-endian uint16.
const crlf = '\r' | '\n'<<8

// endsLine reports whether "\r\n" is at b[i] (i >= 0).
func endsLine(b []byte, i int) bool {
	return len(b)-i >= 2 && binary.LittleEndian.Uint16(b[i:]) == crlf
}

// request walks the request at the start of b, calling arg for each argument once the request is
// known to be whole up to it.
func request(b []byte, arg func(i int, a []byte)) (n int, err error) {
	cr, next, err := line(b, 0)
	if err == nil && b[0] != '*' {
		err = ErrMalformed
	}
	if err != nil {
		return 0, incomplete(err)
	}
	count, _, err := parseLen(b[1:cr], MaxArgs, true, false)
	if err != nil || count <= 0 {
		return next, err
	}
	for a := range count {
		i := next
		if cr, next, err = line(b, i); err == nil && b[i] != '$' {
			err = ErrMalformed
		}
		if err != nil {
			return 0, incomplete(err)
		}
		l, _, err := parseLen(b[i+1:cr], MaxBulk, false, false)
		if err != nil {
			return 0, err
		}
		start := next
		if next, err = blob(b, next, l); err != nil {
			return 0, incomplete(err)
		}
		arg(a, b[start:start+l:start+l])
	}
	return next, nil
}

// incomplete turns errIncomplete into "no error yet".
func incomplete(err error) error {
	if err == errIncomplete {
		return nil
	}
	return err
}

// Name returns the command name (the first argument) of the request at the start of b, or nil
// when b does not hold it whole. It does not allocate.
func Name(b []byte) []byte {
	cr, next, err := line(b, 0)
	if err != nil || b[0] != '*' {
		return nil
	}
	if count, _, err := parseLen(b[1:cr], MaxArgs, false, false); err != nil || count == 0 {
		return nil
	}
	i := next
	if cr, next, err = line(b, i); err != nil || b[i] != '$' {
		return nil
	}
	l, _, err := parseLen(b[i+1:cr], MaxBulk, false, false)
	if err != nil || len(b)-next < l {
		return nil
	}
	return b[next : next+l : next+l]
}

// Kind is a command the library treats specially.
type Kind uint8

// The commands the library recognises; everything else is Other.
const (
	Other      Kind = iota
	Auth            // AUTH [username] password
	Hello           // HELLO [protover [AUTH username password] [SETNAME name]]
	Multi           // MULTI: later commands are queued until EXEC or DISCARD
	Exec            // EXEC
	Discard         // DISCARD
	Reset           // RESET: ends a MULTI, a subscription and MONITOR too
	Subscribe       // SUBSCRIBE: the connection becomes a pub/sub one
	PSubscribe      // PSUBSCRIBE
	SSubscribe      // SSUBSCRIBE
	Monitor         // MONITOR: the connection streams every command from then on
	Client          // CLIENT: SETNAME and SETINFO are state a new connection needs; REPLY stops replies
)

// KindOf returns the Kind of a command name, in any letter case.
func KindOf(name []byte) Kind {
	var k Kind
	switch len(name) {
	case 4:
		k = pick(name, Auth, "auth", Exec, "exec")
	case 5:
		k = pick(name, Hello, "hello", Multi, "multi")
		if k == Other {
			k = pick(name, Reset, "reset", Other, "")
		}
	case 6:
		k = pick(name, Client, "client", Other, "")
	case 7:
		k = pick(name, Discard, "discard", Monitor, "monitor")
	case 9:
		k = pick(name, Subscribe, "subscribe", Other, "")
	case 10:
		k = pick(name, PSubscribe, "psubscribe", SSubscribe, "ssubscribe")
	}
	return k
}

func pick(name []byte, k1 Kind, s1 string, k2 Kind, s2 string) Kind {
	switch {
	case EqualFold(name, s1):
		return k1
	case EqualFold(name, s2):
		return k2
	}
	return Other
}

// EqualFold reports whether b equals lower, a lower-case ASCII string, in any letter case.
func EqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// AuthArgs returns the username (nil when absent) and password of an AUTH request, or of a HELLO
// request with AUTH, at the start of b; ok is false for any other request, or one not whole.
func AuthArgs(b []byte) (user, pass []byte, ok bool) {
	a, _, err := SplitArgs(b)
	if err != nil || len(a) == 0 {
		return nil, nil, false
	}
	switch KindOf(a[0]) {
	case Auth:
		switch len(a) {
		case 2:
			return nil, a[1], true
		case 3:
			return a[1], a[2], true
		}
	case Hello:
		for i := 2; i+2 < len(a); i++ {
			if EqualFold(a[i], "auth") {
				return a[i+1], a[i+2], true
			}
		}
	}
	return nil, nil, false
}

package hook

// A tiny reader of the requests go-redis writes (RESP arrays of bulk strings), just enough to see
// which command starts a request and, for AUTH and HELLO, which token it carries. It never
// allocates on the common path: sniff only looks at the command name.

type reqKind uint8

const (
	reqOther reqKind = iota
	reqAuth
	reqHello
	reqSubscribe // SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE: the connection becomes a pub/sub one
	reqMulti     // MULTI: later requests may be queued, not run
	reqExec      // EXEC, DISCARD, RESET: the end of a MULTI
)

// sniff returns the kind of the command at the start of b, which holds the start of a request.
func sniff(b []byte) reqKind {
	if len(b) < 8 || b[0] != '*' {
		return reqOther
	}
	i := 1
	for i < len(b) && b[i] != '\r' {
		i++
	}
	i += 2
	if i >= len(b) || b[i] != '$' {
		return reqOther
	}
	i++
	l := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		l = l*10 + int(b[i]-'0')
		if l > 16 {
			return reqOther
		}
	}
	i += 2
	if i+l > len(b) {
		return reqOther
	}
	name := b[i : i+l]
	switch l {
	case 4:
		if foldEq(name, "auth") {
			return reqAuth
		}
		if foldEq(name, "exec") {
			return reqExec
		}
	case 5:
		if foldEq(name, "hello") {
			return reqHello
		}
		if foldEq(name, "multi") {
			return reqMulti
		}
		if foldEq(name, "reset") {
			return reqExec
		}
	case 7:
		if foldEq(name, "discard") {
			return reqExec
		}
	case 9:
		if foldEq(name, "subscribe") {
			return reqSubscribe
		}
	case 10:
		if foldEq(name, "psubscribe") || foldEq(name, "ssubscribe") {
			return reqSubscribe
		}
	}
	return reqOther
}

// endsWithExec reports whether a request ends with EXEC (a whole MULTI ... EXEC in one write, as
// go-redis sends a transaction).
func endsWithExec(b []byte) bool {
	const exec = "*1\r\n$4\r\nexec\r\n"
	return len(b) >= len(exec) && foldEq(b[len(b)-len(exec):], exec)
}

// frameLen returns the length of the complete RESP2/RESP3 reply at the start of b, 0 when b holds
// only part of it, -1 when it is malformed.
func frameLen(b []byte) int {
	n, _ := frameAt(b, 0, 0)
	return n
}

func frameAt(b []byte, i, depth int) (int, bool) {
	if depth > 64 {
		return -1, false
	}
	if i >= len(b) {
		return 0, false
	}
	line := i + 1
	for line+1 < len(b) && !(b[line] == '\r' && b[line+1] == '\n') {
		line++
	}
	if line+1 >= len(b) {
		return 0, false // no line end yet
	}
	end := line + 2
	num := func() (int, bool) {
		s := b[i+1 : line]
		neg := len(s) > 0 && s[0] == '-'
		if neg {
			s = s[1:]
		}
		if len(s) == 0 || len(s) > 9 {
			return 0, false
		}
		n := 0
		for _, ch := range s {
			if ch < '0' || ch > '9' {
				return 0, false
			}
			n = n*10 + int(ch-'0')
		}
		if neg {
			n = -n
		}
		return n, true
	}
	switch b[i] {
	case '+', '-', ':', ',', '#', '(', '_':
		return end - i, true
	case '$', '!', '=':
		n, ok := num()
		if !ok {
			return -1, false
		}
		if n < 0 {
			return end - i, true
		}
		if end+n+2 > len(b) {
			return 0, false
		}
		return end + n + 2 - i, true
	case '*', '~', '>', '%', '|':
		n, ok := num()
		if !ok {
			return -1, false
		}
		if b[i] == '%' || b[i] == '|' {
			n *= 2
		}
		j := end
		for range max(n, 0) {
			l, ok := frameAt(b, j, depth+1)
			if !ok {
				return l, false
			}
			j += l
		}
		return j - i, true
	}
	return -1, false
}

// foldEq compares ASCII case-insensitively; s is lower case.
func foldEq(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// args splits the first request in b into its bulk strings (views into b). ok is false when b does
// not hold a whole well-formed request.
func args(b []byte) (out [][]byte, ok bool) {
	n, i, ok := respInt(b, 0, '*')
	if !ok || n < 1 || n > 64 {
		return nil, false
	}
	out = make([][]byte, 0, n)
	for range n {
		var l int
		if l, i, ok = respInt(b, i, '$'); !ok || l < 0 || i+l+2 > len(b) {
			return nil, false
		}
		out = append(out, b[i:i+l])
		i += l + 2
	}
	return out, true
}

// respInt reads "<prefix><digits>\r\n" at b[i:] and returns the number and the index after it.
func respInt(b []byte, i int, prefix byte) (n, next int, ok bool) {
	if i >= len(b) || b[i] != prefix {
		return 0, 0, false
	}
	i++
	start := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int(b[i]-'0')
		if n > 1<<24 {
			return 0, 0, false
		}
	}
	if i == start || i+1 >= len(b) || b[i] != '\r' || b[i+1] != '\n' {
		return 0, 0, false
	}
	return n, i + 2, true
}

// authArgs returns the username and password an AUTH or HELLO request carries; ok is false when it
// carries none (HELLO without AUTH) or cannot be read.
func authArgs(kind reqKind, b []byte) (user, pass []byte, ok bool) {
	a, ok := args(b)
	if !ok {
		return nil, nil, false
	}
	switch kind {
	case reqAuth: // AUTH password | AUTH username password
		switch len(a) {
		case 2:
			return nil, a[1], true
		case 3:
			return a[1], a[2], true
		}
	case reqHello: // HELLO [protover [AUTH username password] [SETNAME name]]
		for i := 2; i+2 < len(a); i++ {
			if foldEq(a[i], "auth") {
				return a[i+1], a[i+2], true
			}
		}
	}
	return nil, nil, false
}

// appendAuth appends "AUTH username password" as a RESP request.
func appendAuth(b []byte, user, pass string) []byte {
	bulk := func(b []byte, s string) []byte {
		b = append(b, '$')
		b = appendInt(b, len(s))
		b = append(b, "\r\n"...)
		b = append(b, s...)
		return append(b, "\r\n"...)
	}
	if user == "" {
		b = append(b, "*2\r\n"...)
	} else {
		b = append(b, "*3\r\n"...)
	}
	b = bulk(b, "auth")
	if user != "" {
		b = bulk(b, user)
	}
	return bulk(b, pass)
}

func appendInt(b []byte, n int) []byte {
	var d [20]byte
	i := len(d)
	for {
		i--
		d[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(b, d[i:]...)
}

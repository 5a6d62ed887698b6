package entratest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// A small RESP reader: commands from clients (arrays of bulk strings, or inline), and whole replies
// from servers (RESP2 and RESP3), kept as raw bytes so the gateway forwards them untouched.

// errProtocol is a malformed RESP stream; the gateway answers it like Redis and closes.
var errProtocol = errors.New("protocol error")

const (
	maxArgs      = 1 << 20   // arguments per command, like Redis's limit on multibulk length
	maxBulk      = 512 << 20 // bytes of one bulk string (Redis's proto-max-bulk-len default)
	maxNesting   = 128       // depth of nested aggregates in a reply
	maxAggregate = 1 << 28   // elements of one aggregate in a reply
)

// readLine returns the next line without its "\r\n" (a bare "\n" is accepted, as Redis does for
// inline commands). The slice is valid until the next read.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, _, err := readLineCRLF(r)
	return line, err
}

// readLineCRLF is readLine that also tells whether the line ended with "\r\n".
func readLineCRLF(r *bufio.Reader) (line []byte, crlf bool, err error) {
	line, err = r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, false, fmt.Errorf("%w: line too long", errProtocol)
	}
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return nil, false, io.ErrUnexpectedEOF
		}
		return nil, false, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		return line[:n-1], true, nil
	}
	return line, false, nil
}

// parseLen reads the integer after a type byte: a length or count, -1 for null. Like Redis, it
// takes "0" or digits without a sign or a leading zero, and "-1".
func parseLen(b []byte, limit int64) (int64, error) {
	canonical := len(b) > 0 && '1' <= b[0] && b[0] <= '9' || string(b) == "0" || string(b) == "-1"
	n, err := strconv.ParseInt(string(b), 10, 64)
	if !canonical || err != nil || n < -1 || n > limit {
		return 0, fmt.Errorf("%w: invalid length %.20q", errProtocol, b)
	}
	return n, nil
}

// command is one client command: its arguments and its bytes as a RESP array, ready to forward.
type command struct {
	args [][]byte
	raw  []byte
}

// name returns the upper-cased command name.
func (c *command) name() string {
	if len(c.args) == 0 {
		return ""
	}
	return string(bytes.ToUpper(c.args[0]))
}

// encodeCommand writes args as a RESP array of bulk strings.
func encodeCommand(args ...[]byte) []byte {
	n := 16
	for _, a := range args {
		n += len(a) + 16
	}
	b := make([]byte, 0, n)
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}

// readCommand reads one command. Empty inline lines are skipped, as Redis does.
func readCommand(r *bufio.Reader) (*command, error) {
	for {
		line, crlf, err := readLineCRLF(r)
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			continue
		}
		if line[0] == '*' && !strictLine(line, crlf) {
			return nil, fmt.Errorf("%w: request line not terminated by CRLF", errProtocol)
		}
		if line[0] != '*' {
			fields := bytes.Fields(line)
			if len(fields) == 0 {
				continue
			}
			args := make([][]byte, len(fields))
			for i, f := range fields {
				args[i] = bytes.Clone(f)
			}
			return &command{args: args, raw: encodeCommand(args...)}, nil
		}
		n, err := parseLen(line[1:], maxArgs)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			continue // Redis ignores "*0" and "*-1"
		}
		var raw bytes.Buffer
		raw.Write(line)
		raw.WriteString("\r\n")
		// Offsets, not slices: raw's buffer moves while it grows.
		type span struct{ start, end int }
		spans := make([]span, 0, min(n, 64))
		for range n {
			h, crlf, err := readLineCRLF(r)
			if err != nil {
				return nil, unexpected(err)
			}
			if !strictLine(h, crlf) {
				return nil, fmt.Errorf("%w: request line not terminated by CRLF", errProtocol)
			}
			if len(h) == 0 || h[0] != '$' {
				return nil, fmt.Errorf("%w: expected '$', got %.1q", errProtocol, h)
			}
			size, err := parseLen(h[1:], maxBulk)
			if err != nil || size < 0 {
				return nil, fmt.Errorf("%w: invalid bulk length", errProtocol)
			}
			raw.Write(h)
			raw.WriteString("\r\n")
			start := raw.Len()
			if _, err := io.CopyN(&raw, r, size+2); err != nil {
				return nil, unexpected(err)
			}
			b := raw.Bytes()
			if b[len(b)-2] != '\r' || b[len(b)-1] != '\n' {
				return nil, fmt.Errorf("%w: bulk string not terminated by CRLF", errProtocol)
			}
			spans = append(spans, span{start, len(b) - 2})
		}
		buf := raw.Bytes()
		args := make([][]byte, len(spans))
		for i, sp := range spans {
			args[i] = buf[sp.start:sp.end:sp.end]
		}
		return &command{args: args, raw: buf}, nil
	}
}

// strictLine reports whether a line of a RESP request or reply ended with "\r\n" and holds no
// other '\r' (inline commands, like Redis, may end with a bare '\n').
func strictLine(line []byte, crlf bool) bool {
	return crlf && bytes.IndexByte(line, '\r') < 0
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// reply is one whole server reply. For the gateway's checks (markers, unsubscribe counts) it also
// keeps the top-level type and small strings: the payload of a top-level string, and the elements
// of a top-level array or push of at most three. Strings longer than maxSummary are left out (nil).
type reply struct {
	raw   []byte
	kind  byte
	str   []byte
	elems [][]byte
}

const maxSummary = 512

// readReply reads one whole reply, including any attribute ('|') that precedes it.
func readReply(r *bufio.Reader) (*reply, error) {
	rp := &reply{}
	var buf bytes.Buffer
	if err := readValue(r, &buf, rp, 0); err != nil {
		return nil, err
	}
	rp.raw = buf.Bytes()
	return rp, nil
}

// readValue copies one RESP value into buf. top, when not nil, receives the value's summary.
func readValue(r *bufio.Reader, buf *bytes.Buffer, top *reply, depth int) error {
	// Servers always end lines with CRLF, and the raw copy of a reply must be exactly what was read.
	line, crlf, err := readLineCRLF(r)
	if err == nil && !strictLine(line, crlf) {
		err = fmt.Errorf("%w: reply line not terminated by CRLF", errProtocol)
	}
	if err != nil {
		if depth == 0 && buf.Len() == 0 {
			return err // a clean end between replies
		}
		return unexpected(err)
	}
	// Checked once the line is read, as internal/resp does: both fail at the same byte.
	if depth > maxNesting {
		return fmt.Errorf("%w: reply nested too deeply", errProtocol)
	}
	if len(line) == 0 {
		return fmt.Errorf("%w: empty line in reply", errProtocol)
	}
	buf.Write(line)
	buf.WriteString("\r\n")
	kind := line[0]
	if top != nil {
		top.kind = kind
	}
	switch kind {
	case '+', '-', ':', '_', ',', '#', '(':
		if top != nil && len(line) <= maxSummary {
			top.str = bytes.Clone(line[1:])
		}
		return nil
	case '$', '!', '=':
		if kind == '$' && string(line[1:]) == "?" {
			return readChunks(r, buf)
		}
		n, err := parseLen(line[1:], maxBulk)
		if err != nil {
			return err
		}
		if n < 0 {
			if kind != '$' {
				return fmt.Errorf("%w: null %q", errProtocol, kind)
			}
			return nil
		}
		start := buf.Len()
		if err := readBlob(r, buf, n); err != nil {
			return err
		}
		if top != nil && n <= maxSummary {
			top.str = bytes.Clone(buf.Bytes()[start : start+int(n)])
		}
		return nil
	case '*', '~', '>', '%', '|':
		if (kind == '*' || kind == '~' || kind == '%') && string(line[1:]) == "?" {
			return readStreamed(r, buf, depth, kind == '%')
		}
		n, err := parseLen(line[1:], maxAggregate)
		if err != nil {
			return err
		}
		if n < 0 && kind != '*' {
			return fmt.Errorf("%w: null %q", errProtocol, kind)
		}
		if kind == '%' || kind == '|' {
			n *= 2
		}
		for i := int64(0); i < n; i++ {
			var sub *reply
			if top != nil && n <= 3 && (kind == '*' || kind == '>') {
				sub = &reply{}
			}
			if err := readValue(r, buf, sub, depth+1); err != nil {
				return err
			}
			if sub != nil {
				top.elems = append(top.elems, sub.str)
			}
		}
		if kind == '|' {
			// An attribute is out-of-band metadata attached to the value that follows.
			return readValue(r, buf, top, depth+1)
		}
		return nil
	default:
		return fmt.Errorf("%w: unknown reply type %q", errProtocol, kind)
	}
}

// readBlob copies n bytes and the "\r\n" after them.
func readBlob(r *bufio.Reader, buf *bytes.Buffer, n int64) error {
	if _, err := io.CopyN(buf, r, n+2); err != nil {
		return unexpected(err)
	}
	if b := buf.Bytes(); b[len(b)-2] != '\r' || b[len(b)-1] != '\n' {
		return fmt.Errorf("%w: bulk string not terminated by CRLF", errProtocol)
	}
	return nil
}

// readChunks copies the chunks of a RESP3 streamed string ("$?"): ";<n>\r\n<n bytes>\r\n", up to ";0".
func readChunks(r *bufio.Reader, buf *bytes.Buffer) error {
	for {
		line, crlf, err := readLineCRLF(r)
		if err != nil {
			return unexpected(err)
		}
		if !strictLine(line, crlf) || len(line) == 0 || line[0] != ';' {
			return fmt.Errorf("%w: expected a chunk of a streamed string", errProtocol)
		}
		n, err := parseLen(line[1:], maxBulk)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: invalid chunk length", errProtocol)
		}
		buf.Write(line)
		buf.WriteString("\r\n")
		if n == 0 {
			return nil
		}
		if err := readBlob(r, buf, n); err != nil {
			return err
		}
	}
}

// readStreamed copies the elements of a RESP3 streamed aggregate ("*?", "~?", "%?") up to its end
// marker ".", which comes between elements (between pairs, for a map).
func readStreamed(r *bufio.Reader, buf *bytes.Buffer, depth int, pairs bool) error {
	for odd := false; ; odd = pairs && !odd {
		if !odd {
			p, err := r.Peek(1)
			if err != nil {
				return unexpected(err)
			}
			if p[0] == '.' {
				line, crlf, err := readLineCRLF(r)
				if err != nil {
					return unexpected(err)
				}
				if !strictLine(line, crlf) || len(line) != 1 {
					return fmt.Errorf("%w: malformed end of a streamed aggregate", errProtocol)
				}
				buf.WriteString(".\r\n")
				return nil
			}
		}
		if err := readValue(r, buf, nil, depth+1); err != nil {
			return err
		}
	}
}

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// respConn speaks just enough RESP2 for check's steps, one command at a time, so that each step
// (AUTH, PING, SET...) is one visible exchange on the connection check opened: go-redis would fold
// AUTH into its connection handshake.
type respConn struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
}

// replyError is an error reply from the server. Its RedisError method makes retry.Classify and
// go-redis treat it as one.
type replyError struct{ msg string }

func (e *replyError) Error() string { return e.msg }

// RedisError marks the error as the server's reply.
func (e *replyError) RedisError() {}

const maxReplyBulk = 1 << 20 // check's replies are small: a larger one is a protocol mismatch

var errProtocol = errors.New("the server's reply is not RESP: is this a Redis endpoint?")

func newRespConn(c net.Conn, timeout time.Duration) *respConn {
	return &respConn{conn: c, r: bufio.NewReader(c), timeout: timeout}
}

// do sends one command and reads its reply: a string, an int64, nil, or []any. Its errors never
// quote the command (AUTH carries the token).
func (rc *respConn) do(args ...string) (any, error) {
	if err := rc.conn.SetDeadline(time.Now().Add(rc.timeout)); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(rc.conn, b.String()); err != nil {
		return nil, err
	}
	return rc.read(0)
}

func (rc *respConn) read(depth int) (any, error) {
	line, err := rc.r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, err
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" || depth > 8 {
		return nil, errProtocol
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, &replyError{msg: body}
	case ':':
		n, err := strconv.ParseInt(body, 10, 64)
		if err != nil {
			return nil, errProtocol
		}
		return n, nil
	case '_':
		return nil, nil
	case '$':
		n, err := strconv.Atoi(body)
		switch {
		case err != nil || n < -1 || n > maxReplyBulk:
			return nil, errProtocol
		case n == -1:
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rc.r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		switch {
		case err != nil || n < -1 || n > 1024:
			return nil, errProtocol
		case n == -1:
			return nil, nil
		}
		out := make([]any, 0, n)
		for range n {
			v, err := rc.read(depth + 1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, errProtocol
}

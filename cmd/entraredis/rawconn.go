package main

import (
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/entraredis/entraredis/internal/resp"
)

// respConn sends check's steps one command at a time, so that each step (AUTH, PING, SET...) is
// one visible exchange on the connection check opened: go-redis would fold AUTH into its
// connection handshake. The RESP itself is internal/resp's.
type respConn struct {
	conn    net.Conn
	buf     []byte // read, not yet taken
	timeout time.Duration
}

// replyError is an error reply from the server. Its RedisError method makes retry.Classify and
// go-redis treat it as one.
type replyError struct{ msg string }

func (e *replyError) Error() string { return e.msg }

// RedisError marks the error as the server's reply.
func (e *replyError) RedisError() {}

const maxReply = 1 << 20 // check's replies are small: a larger one is a protocol mismatch

var errProtocol = errors.New("the server's reply is not RESP: is this a Redis endpoint?")

func newRespConn(c net.Conn, timeout time.Duration) *respConn {
	return &respConn{conn: c, timeout: timeout}
}

// do sends one command and reads its reply: a string, an int64 or nil. Its errors never quote the
// command (AUTH carries the token).
func (rc *respConn) do(args ...string) (any, error) {
	if err := rc.conn.SetDeadline(time.Now().Add(rc.timeout)); err != nil {
		return nil, err
	}
	if _, err := rc.conn.Write(resp.AppendRequest(nil, args...)); err != nil {
		return nil, err
	}
	frame, err := rc.read()
	if err != nil {
		return nil, err
	}
	switch typ, p := resp.Payload(frame); typ {
	case '+', '$':
		return string(p), nil
	case '-':
		return nil, &replyError{msg: string(p)}
	case ':':
		n, err := strconv.ParseInt(string(p), 10, 64)
		if err != nil {
			return nil, errProtocol
		}
		return n, nil
	case '_':
		return nil, nil
	}
	return nil, errProtocol // check's commands get no aggregate
}

// read returns the next whole reply.
func (rc *respConn) read() ([]byte, error) {
	for {
		n, err := resp.FrameLen(rc.buf)
		if err != nil {
			return nil, errProtocol
		}
		if n > 0 {
			frame := rc.buf[:n]
			rc.buf = rc.buf[n:]
			return frame, nil
		}
		if len(rc.buf) > maxReply {
			return nil, errProtocol
		}
		if cap(rc.buf)-len(rc.buf) < 512 {
			rc.buf = append(make([]byte, 0, 2*cap(rc.buf)+4096), rc.buf...)
		}
		m, err := rc.conn.Read(rc.buf[len(rc.buf):cap(rc.buf)])
		rc.buf = rc.buf[:len(rc.buf)+m]
		if m == 0 && err != nil {
			return nil, err
		}
	}
}

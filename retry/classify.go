package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// Class is what an error calls for.
type Class int

const (
	// Other errors are neither Auth nor Connection: retrying with a new token or connection won't help.
	Other Class = iota
	// Auth errors are Redis's rejections of the credentials: get a fresh token, then retry.
	Auth
	// Connection errors are failures of the transport: the connection is gone, a new one may work.
	Connection
)

// String returns "other", "auth" or "connection".
func (c Class) String() string {
	switch c {
	case Other:
		return "other"
	case Auth:
		return "auth"
	case Connection:
		return "connection"
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// Classify tells what err calls for. It looks at every error in err's tree (%w wrapping,
// errors.Join), so go-redis's typed errors (anything with a RedisError method, such as
// *proto.AuthError and proto.RedisError) are seen wherever they are.
//
// Auth: a reply starting with NOAUTH or WRONGPASS, with or without Azure's "ERR " prefix, or
// containing "invalid username-password pair" or "invalid password". NOPERM (missing rights) is Other.
//
// Connection: io.EOF, io.ErrUnexpectedEOF, net.ErrClosed, a net.Error such as *net.OpError, or
// syscall's ECONNRESET, ECONNREFUSED, EPIPE or ECONNABORTED. Not go-redis's ErrClosed (the
// user closed the client) nor a context error (the caller gave up): those are Other.
func Classify(err error) Class {
	switch {
	case err == nil:
		return Other
	case walk(err, isAuthReply), isAuthText(err.Error()): // a reply in the tree, or the whole message
		return Auth
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, redis.ErrClosed):
		return Other
	case walk(err, isConnection):
		return Connection
	}
	return Other
}

// IsAuth reports whether Classify(err) is Auth.
func IsAuth(err error) bool { return Classify(err) == Auth }

// IsConnection reports whether Classify(err) is Connection.
func IsConnection(err error) bool { return Classify(err) == Connection }

// walk reports whether f holds for err or any error it wraps, depth first like errors.Is.
func walk(err error, f func(error) bool) bool {
	if err == nil {
		return false
	}
	if f(err) {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return walk(u.Unwrap(), f)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if walk(e, f) {
				return true
			}
		}
	}
	return false
}

// isAuthReply matches case-sensitively, as Redis sends replies. Only Redis replies (errors with a
// RedisError method) are read inside the tree; other errors there may not be safe to read from
// several goroutines at once (azidentity's AuthenticationFailedError.Error writes to its response
// body), and one error value reaches many callers of a shared token fetch.
func isAuthReply(err error) bool {
	_, reply := err.(interface{ RedisError() })
	return reply && isAuthText(err.Error())
}

func isAuthText(s string) bool {
	s = strings.TrimPrefix(s, "ERR ")
	return strings.HasPrefix(s, "NOAUTH") || strings.HasPrefix(s, "WRONGPASS") ||
		strings.Contains(s, "invalid username-password pair") || strings.Contains(s, "invalid password")
}

func isConnection(err error) bool {
	switch err {
	case io.EOF, io.ErrUnexpectedEOF, net.ErrClosed,
		syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.EPIPE, syscall.ECONNABORTED:
		return true
	}
	// syscall.Errno has net.Error's methods, yet ENOENT or EACCES say nothing about the network.
	_, errno := err.(syscall.Errno)
	_, netErr := err.(net.Error)
	return netErr && !errno
}

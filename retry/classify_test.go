package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/retry"
)

// genuine collects errors exactly as go-redis v9 returns them from a real redis-server on loopback.
type genuine struct {
	noauth, wrongpass, azureWrongpass, oldInvalidPassword, noperm, syntax, nilReply error
	closed, refused, eof, canceled                                                  error
}

func realErrors(t *testing.T) genuine {
	const pass = "classify-test-password"
	srv := entratest.StartRedis(t, &entratest.RedisOptions{Args: []string{"requirepass " + pass}})
	ctx := t.Context()
	client := func(o redis.Options) *redis.Client {
		o.Addr, o.MaxRetries, o.DialTimeout = srv.Addr(), -1, 2*time.Second
		c := redis.NewClient(&o)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	var g genuine
	g.noauth = client(redis.Options{}).Ping(ctx).Err()
	g.wrongpass = client(redis.Options{Password: "wrong"}).Ping(ctx).Err()

	ok := client(redis.Options{Password: pass})
	// Azure and Redis < 6 word their replies differently; a script makes the server send them.
	reply := func(text string) error { return ok.Eval(ctx, "return redis.error_reply(ARGV[1])", nil, text).Err() }
	g.azureWrongpass = reply("ERR WRONGPASS invalid username-password pair")
	g.oldInvalidPassword = reply("ERR invalid password")
	require.NoError(t, ok.Do(ctx, "ACL", "SETUSER", "limited", "on", ">limited-pass", "~*", "+@all", "-get").Err())
	g.noperm = client(redis.Options{Username: "limited", Password: "limited-pass"}).Get(ctx, "k").Err()
	g.syntax = ok.Do(ctx, "SET", "k", "v", "NX", "XX").Err()
	g.nilReply = ok.Get(ctx, "missing").Err()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	g.canceled = ok.Ping(cctx).Err()

	closed := client(redis.Options{Password: pass})
	require.NoError(t, closed.Close())
	g.closed = closed.Ping(ctx).Err()

	port, err := entratest.FreePort() // nothing listens there
	require.NoError(t, err)
	refused := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
	t.Cleanup(func() { _ = refused.Close() })
	g.refused = refused.Ping(ctx).Err()

	l, err := net.Listen("tcp", "127.0.0.1:0") // hangs up on every connection
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				// The request read first: closed with it unread, the connection would be reset
				// (ECONNRESET, as CI once saw), not ended (EOF).
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Read(make([]byte, 4096))
				_ = c.Close()
			}()
		}
	}()
	hangup := redis.NewClient(&redis.Options{Addr: l.Addr().String(), MaxRetries: -1})
	t.Cleanup(func() { _ = hangup.Close() })
	g.eof = hangup.Ping(ctx).Err()
	return g
}

func TestClassify(t *testing.T) {
	g := realErrors(t)
	opErr := &net.OpError{Op: "read", Net: "tcp", Err: &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}}
	for _, tc := range []struct {
		name string
		err  error
		want retry.Class
	}{
		{"nil", nil, retry.Other},

		{"real NOAUTH", g.noauth, retry.Auth},
		{"real WRONGPASS", g.wrongpass, retry.Auth},
		{"real ERR WRONGPASS (Azure)", g.azureWrongpass, retry.Auth},
		{"real ERR invalid password", g.oldInvalidPassword, retry.Auth},
		{"real NOPERM", g.noperm, retry.Other},
		{"real ERR syntax error", g.syntax, retry.Other},
		{"real redis.Nil", g.nilReply, retry.Other},
		{"real client closed", g.closed, retry.Other},
		{"real context canceled", g.canceled, retry.Other},
		{"real connection refused", g.refused, retry.Connection},
		{"real EOF", g.eof, retry.Connection},

		{"wrapped real NOAUTH", fmt.Errorf("hook: %w", g.noauth), retry.Auth},
		{"twice wrapped real Azure WRONGPASS", fmt.Errorf("a: %w", fmt.Errorf("b: %w", g.azureWrongpass)), retry.Auth},
		{"joined real WRONGPASS", errors.Join(errors.New("first"), g.wrongpass), retry.Auth},
		{"joined real NOPERM and syntax", errors.Join(g.noperm, g.syntax), retry.Other},
		{"auth wins over a context error", errors.Join(context.Canceled, g.wrongpass), retry.Auth},

		{"NOAUTH text", errors.New("NOAUTH Authentication required."), retry.Auth},
		{"WRONGPASS text", errors.New("WRONGPASS invalid username-password pair or user is disabled."), retry.Auth},
		{"ERR NOAUTH text", errors.New("ERR NOAUTH Authentication required."), retry.Auth},
		{"ERR WRONGPASS text", errors.New("ERR WRONGPASS invalid username-password pair"), retry.Auth},
		{"invalid password text", errors.New("ERR invalid password"), retry.Auth},
		{"pair text wrapped with %v", fmt.Errorf("hello: %v", "WRONGPASS invalid username-password pair"), retry.Auth},
		{"lower case is not a reply", errors.New("noauth authentication required"), retry.Other},
		{"NOAUTH not at the start", fmt.Errorf("hello: %v", "NOAUTH Authentication required."), retry.Other},
		{"NOPERM text", errors.New("NOPERM User limited has no permissions to run the 'get' command"), retry.Other},
		{"ERR syntax error text", errors.New("ERR syntax error"), retry.Other},

		{"io.EOF", io.EOF, retry.Connection},
		{"io.ErrUnexpectedEOF", io.ErrUnexpectedEOF, retry.Connection},
		{"wrapped EOF", fmt.Errorf("read reply: %w", io.EOF), retry.Connection},
		{"joined EOF", errors.Join(errors.New("x"), io.EOF), retry.Connection},
		{"net.ErrClosed", net.ErrClosed, retry.Connection},
		{"*net.OpError reset", opErr, retry.Connection},
		{"wrapped *net.OpError", fmt.Errorf("x: %w", opErr), retry.Connection},
		{"*net.DNSError", &net.DNSError{Err: "no such host", Name: "cache.invalid"}, retry.Connection},
		{"i/o timeout", os.ErrDeadlineExceeded, retry.Connection},
		{"ECONNRESET", syscall.ECONNRESET, retry.Connection},
		{"ECONNREFUSED", syscall.ECONNREFUSED, retry.Connection},
		{"EPIPE", syscall.EPIPE, retry.Connection},
		{"ECONNABORTED", syscall.ECONNABORTED, retry.Connection},
		{"wrapped EPIPE", &os.SyscallError{Syscall: "write", Err: syscall.EPIPE}, retry.Connection},
		{"ENOENT is no network error", syscall.ENOENT, retry.Other},
		{"path error", &os.PathError{Op: "open", Path: "/x", Err: syscall.ENOENT}, retry.Other},

		{"redis.ErrClosed", redis.ErrClosed, retry.Other},
		{"wrapped redis.ErrClosed", fmt.Errorf("x: %w", redis.ErrClosed), retry.Other},
		{"redis.ErrClosed joined with EOF", errors.Join(redis.ErrClosed, io.EOF), retry.Other},
		{"redis.ErrPoolTimeout", redis.ErrPoolTimeout, retry.Other},
		{"context.Canceled", context.Canceled, retry.Other},
		{"context.DeadlineExceeded (a net.Error too)", context.DeadlineExceeded, retry.Other},
		{"wrapped deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), retry.Other},
		{"deadline joined with EOF", errors.Join(context.DeadlineExceeded, io.EOF), retry.Other},
		{"plain error", errors.New("boom"), retry.Other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name != "nil" {
				require.Error(t, tc.err)
			}
			got := retry.Classify(tc.err)
			assert.Equal(t, tc.want, got, "error %T %q", tc.err, fmt.Sprint(tc.err))
			assert.Equal(t, tc.want == retry.Auth, retry.IsAuth(tc.err))
			assert.Equal(t, tc.want == retry.Connection, retry.IsConnection(tc.err))
		})
	}
	t.Run("the real replies are go-redis typed errors", func(t *testing.T) {
		for _, err := range []error{g.noauth, g.wrongpass, g.azureWrongpass, g.oldInvalidPassword, g.noperm, g.syntax} {
			var re redis.Error
			assert.True(t, errors.As(err, &re), "%T", err)
		}
		var op *net.OpError
		assert.True(t, errors.As(g.refused, &op))
		assert.ErrorIs(t, g.eof, io.EOF)
		assert.ErrorIs(t, g.closed, redis.ErrClosed)
	})
}

func TestClassString(t *testing.T) {
	for c, want := range map[retry.Class]string{retry.Other: "other", retry.Auth: "auth", retry.Connection: "connection", 7: "Class(7)"} {
		assert.Equal(t, want, c.String())
	}
}

// racyErr stands for azidentity's AuthenticationFailedError, whose Error is not safe for concurrent use.
type racyErr struct{ calls *int }

func (e racyErr) Error() string {
	*e.calls++
	return "AuthenticationFailedError: 503 Service Unavailable"
}

func TestClassifyReadsOnlyRepliesInsideTheTree(t *testing.T) {
	var calls int
	err := fmt.Errorf("provider: no valid token: %w", racyErr{&calls}) // fmt.Errorf reads it once, here
	before := calls
	assert.Equal(t, retry.Other, retry.Classify(err))
	assert.Equal(t, retry.Other, retry.Classify(errors.Join(err, errors.New("x"))))
	assert.Equal(t, before, calls, "Classify called Error on a non-Redis error inside the tree")
}

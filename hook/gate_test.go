package hook

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/resp"
)

// One test per interleaving of go-redis's use of a connection with the guard's.

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	server = <-accepted
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// held waits until someone holds c's read side (a Read blocked on the socket).
func held(t *testing.T, mu interface {
	TryLock() bool
	Unlock()
}) {
	t.Helper()
	require.Eventually(t, func() bool {
		if mu.TryLock() {
			mu.Unlock()
			return false
		}
		return true
	}, 5*time.Second, time.Millisecond)
}

// go-redis's pool health check clears a connection's deadlines (SetDeadline(time.Time{})) without
// asking anyone. Mid-renewal, that must neither unbound the guard's wait for a silent server nor
// be lost: it is applied when the guard hands the connection back.
func TestHealthCheckClearingDeadlinesMidRenewal(t *testing.T) {
	prev := backgroundTimeout
	backgroundTimeout = 300 * time.Millisecond
	t.Cleanup(func() { backgroundTimeout = prev })

	for _, answer := range []bool{true, false} {
		t.Run(map[bool]string{true: "answered", false: "silent server"}[answer], func(t *testing.T) {
			raw, srv := tcpPair(t)
			h := fakeHook(newFakeSource(t, time.Hour), nil)
			defer h.Close()
			c := h.g.wrap(raw, nil).(*sysConn).conn
			done := make(chan bool)
			go func() {
				ran, _ := c.background(pingReq, nil, nil)
				done <- ran
			}()
			buf := make([]byte, 64)
			n, err := srv.Read(buf)
			require.NoError(t, err)
			require.Equal(t, string(pingReq), string(buf[:n]), "the guard's PING is in flight")
			// go-redis's health check, then a command's read deadline, while the guard waits.
			require.NoError(t, c.SetDeadline(time.Time{}))
			require.NoError(t, c.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
			if !answer {
				select {
				case ran := <-done:
					assert.False(t, ran)
				case <-time.After(5 * time.Second):
					t.Fatal("the guard waited past its own deadline: go-redis's clearing reached the socket")
				}
				assert.Equal(t, stateRetired, c.state.Load(), "retired: its next request fails before anything is sent")
				return
			}
			_, err = srv.Write([]byte("+PONG\r\n"))
			require.NoError(t, err)
			require.True(t, <-done)
			// go-redis's deadline is on the socket now: a Read with nothing to read ends at it.
			start := time.Now()
			_, err = c.Read(buf)
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			assert.Less(t, time.Since(start), 2*time.Second)
		})
	}
}

// tlsLike hides the socket's syscall.Conn behind NetConn, as *tls.Conn does: go-redis unwraps it
// to peek at the socket.
type tlsLike struct{ net.Conn }

func (c tlsLike) NetConn() net.Conn { return c.Conn }

// Over TLS go-redis unwraps NetConn() to peek at the TCP socket. What the guarded connection's
// NetConn returns peeks only through its read side: never while the guard's PING is in flight.
func TestTLSPeekDuringBackgroundWork(t *testing.T) {
	raw, srv := tcpPair(t)
	h := fakeHook(newFakeSource(t, time.Hour), nil)
	defer h.Close()
	wrapped := h.g.wrap(tlsLike{raw}, nil)
	_, direct := wrapped.(syscall.Conn)
	require.False(t, direct, "like TLS: no syscall.Conn on the outer connection")
	c := wrapped.(*conn)
	done := make(chan struct{})
	go func() {
		c.background(pingReq, nil, nil)
		close(done)
	}()
	buf := make([]byte, 64)
	_, err := srv.Read(buf)
	require.NoError(t, err)
	peeked := make(chan int, 1)
	go func() {
		// go-redis's underlyingSyscallConn and checkSyscallConn.
		sc, ok := c.NetConn().(syscall.Conn)
		if !assert.True(t, ok) {
			peeked <- -1
			return
		}
		rc, err := sc.SyscallConn()
		if !assert.NoError(t, err) {
			peeked <- -1
			return
		}
		got := -1
		_ = rc.Read(func(fd uintptr) bool {
			var b [1]byte
			got, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return true
		})
		peeked <- got
	}()
	held(t, &c.rmu) // the guard holds the read side ...
	select {
	case <-peeked:
		t.Fatal("the peek ran while the guard's PING was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	_, err = srv.Write([]byte("+PONG\r\n")) // ... until its reply is read
	require.NoError(t, err)
	<-done
	assert.LessOrEqual(t, <-peeked, 0, "the peek found nothing: the reply was the guard's")
}

// A writer and a reader at once: the reader is blocked on the socket (it saw no mark) when the
// writer puts an AUTH ahead of its next command; the server's bytes then hold the earlier reply,
// the AUTH's and the command's in one read. The reader hands go-redis the two replies, not +OK.
func TestReaderAndWriterRacingAnAuthInsertion(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := fakeHook(src, nil)
	defer h.Close()
	fc := &enteringConn{fakeConn: newFakeConn(), entered: make(chan struct{}, 4)}
	c := h.g.wrap(fc, nil).(*conn)
	writeAuth(t, c, testOID, src.token())
	fc.in <- []byte("+OK\r\n")
	_, err := c.Read(make([]byte, 64))
	require.NoError(t, err)
	<-fc.entered
	src.mu.Lock()
	src.life = 2 * time.Hour
	src.mu.Unlock()

	_, err = c.Write(getReq) // on the current token: no AUTH yet
	require.NoError(t, err)
	got := make(chan string)
	go func() {
		var b []byte
		buf := make([]byte, 64)
		for len(b) < 10 {
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			b = append(b, buf[:n]...)
		}
		got <- string(b)
	}()
	<-fc.entered // the reader is in Read, on the socket
	require.NoError(t, src.mint())
	h.g.offer(testOID, src.token())
	before := len(fc.written())
	_, err = c.Write(getReq)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(fc.written()[before:], "*3\r\n$4\r\nauth\r\n"), "the AUTH ahead of the second GET")
	fc.in <- []byte("$-1\r\n+OK\r\n$-1\r\n")
	assert.Equal(t, "$-1\r\n$-1\r\n", <-got)
	assert.Equal(t, src.exp.UnixNano(), c.exp.Load())
	assert.Equal(t, uint64(1), h.Stats().Reauths)
}

// enteringConn tells when a Read reaches the socket.
type enteringConn struct {
	*fakeConn
	entered chan struct{}
}

func (e *enteringConn) Read(b []byte) (int, error) {
	e.entered <- struct{}{}
	return e.fakeConn.Read(b)
}

// subscribed2 is a RESP2 subscriber to channels a and b whose moves dial through redial.
func subscribed2(t *testing.T, redial func(context.Context) (net.Conn, error)) (*Hook, *fakeSource, *fakeConn, *conn) {
	t.Helper()
	src := newFakeSource(t, time.Hour)
	h := fakeHook(src, nil)
	t.Cleanup(func() { h.Close() })
	h.g.mu.Lock()
	h.g.subbed = true // no provider subscription, whose first token would start a move of its own
	h.g.mu.Unlock()
	fc := newFakeConn()
	c := h.g.wrap(fc, redial).(*conn)
	_, err := c.Write(append(req("hello", "2", "auth", testOID, src.token()), req("client", "setname", "worker-7")...))
	require.NoError(t, err)
	reply(t, c, hello2Reply)
	reply(t, c, "+OK\r\n")
	_, err = c.Write(req("subscribe", "a", "b"))
	require.NoError(t, err)
	src.mu.Lock()
	src.life = 2 * time.Hour
	src.mu.Unlock()
	require.NoError(t, src.mint())
	// The newer token, without offer's own move: the tests start the moves.
	exp, life := h.g.tokenTimes(src.token())
	h.g.cur.Store(&creds{exp: exp, life: life, req: resp.AppendRequest(nil, "auth", testOID, src.token())})
	return h, src, fc, c
}

// Two moves of one RESP2 subscriber at once (the timer's and an auth error's): one runs, the
// other leaves it alone; the new connection gets the client name go-redis set.
func TestTwoMovesAtOnce(t *testing.T) {
	var dials atomic.Int32
	release := make(chan struct{})
	nc := newFakeConn()
	_, _, _, c := subscribed2(t, func(context.Context) (net.Conn, error) {
		dials.Add(1)
		<-release
		return nc, nil
	})
	g := c.g
	first := make(chan struct{})
	go func() {
		g.rotatePubSub(g.cur.Load().exp, false)
		close(first)
	}()
	require.Eventually(t, func() bool { return dials.Load() == 1 }, 5*time.Second, time.Millisecond)
	g.rotatePubSub(g.cur.Load().exp, false) // a second one while the first dials
	nc.in <- []byte("+OK\r\n+OK\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")
	close(release)
	<-first
	assert.Equal(t, int32(1), dials.Load(), "one move at a time")
	assert.Equal(t, uint64(1), g.h.Stats().PubSubMoved)
	assert.Zero(t, g.h.Stats().PubSubClosed)
	w := nc.written()
	assert.Contains(t, w, string(req("client", "setname", "worker-7")), "the client name replayed on the new connection")
}

// go-redis's own UNSUBSCRIBE, written just before a move, is confirmed on the old connection:
// that confirmation is go-redis's to read, not one of the guard's.
func TestGoRedisUnsubscribeDuringAMove(t *testing.T) {
	nc := newFakeConn()
	h, _, fc, c := subscribed2(t, func(context.Context) (net.Conn, error) { return nc, nil })
	_, err := c.Write(req("unsubscribe", "a")) // in flight: not confirmed yet
	require.NoError(t, err)
	nc.in <- []byte("+OK\r\n+OK\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:1\r\n")
	before := len(fc.written())
	h.g.rotatePubSub(h.g.cur.Load().exp, false)
	require.Equal(t, uint64(1), h.Stats().PubSubMoved)
	// What the guard wrote on the old connection: PING s1, UNSUBSCRIBE, PING s2.
	s1, s2 := sentinels(t, fc.written()[before:])
	old := "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n" + "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n" +
		"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n" + // go-redis's
		"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nm1\r\n" +
		"*2\r\n$4\r\npong\r\n" + bulk(s1) +
		"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nm2\r\n" + // also on the new connection
		"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n" + // the guard's
		bulk(s2)
	fc.in <- []byte(old)
	nc.in <- []byte("*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nm2\r\n")
	want := "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n" + "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n" +
		"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n" +
		"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nm1\r\n" +
		"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nm2\r\n"
	var got []byte
	buf := make([]byte, 16)
	for len(got) < len(want) {
		n, err := c.Read(buf)
		require.NoError(t, err)
		got = append(got, buf[:n]...)
	}
	assert.Equal(t, want, string(got))
	assert.True(t, fc.isClosed(), "the old connection closed once drained")
}

func bulk(s string) string { return "$" + itoa(len(s)) + "\r\n" + s + "\r\n" }

// sentinels returns the arguments of the two PINGs in w.
func sentinels(t *testing.T, w string) (s1, s2 string) {
	t.Helper()
	var pings []string
	b := []byte(w)
	for len(b) > 0 {
		args, n, err := resp.SplitArgs(b)
		require.NoError(t, err)
		require.NotZero(t, n)
		b = b[n:]
		if strings.EqualFold(string(args[0]), "ping") {
			pings = append(pings, string(args[1]))
		}
	}
	require.Len(t, pings, 2)
	return pings[0], pings[1]
}

// A failed dial for a move is counted, and the subscriber closed so that go-redis reconnects.
func TestMoveDialFailureCounted(t *testing.T) {
	_, _, fc, c := subscribed2(t, func(context.Context) (net.Conn, error) { return nil, errors.New("refused") })
	c.g.rotatePubSub(c.g.cur.Load().exp, false)
	assert.Equal(t, uint64(1), c.g.h.Stats().PubSubMoveFailures)
	assert.Equal(t, uint64(1), c.g.h.Stats().PubSubClosed)
	assert.True(t, fc.isClosed())
}

// Over RESP3 a subscription is answered by pushes, which the count leaves out; but a refused one
// (NOPERM on a channel) is answered by an error reply, which the count did not foresee. The
// guard's AUTH reply is still the one removed, and go-redis's PING reply still delivered.
func TestRESP3RefusedSubscriptionBeforeAnAuth(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := fakeHook(src, nil)
	defer h.Close()
	h.g.mu.Lock()
	h.g.subbed = true
	h.g.mu.Unlock()
	fc := newFakeConn()
	c := h.g.wrap(fc, nil).(*conn)
	_, err := c.Write(req("hello", "3", "auth", testOID, src.token()))
	require.NoError(t, err)
	reply(t, c, hello3Reply)
	for _, r := range [][]byte{req("subscribe", "secret"), req("ping")} {
		_, err = c.Write(r)
		require.NoError(t, err)
	}
	src.mu.Lock()
	src.life = 2 * time.Hour
	src.mu.Unlock()
	require.NoError(t, src.mint())
	exp, life := h.g.tokenTimes(src.token())
	cur := &creds{exp: exp, life: life, req: resp.AppendRequest(nil, "auth", testOID, src.token())}
	c.ps.Load().moving.Store(true)
	require.NoError(t, c.inject(cur))
	fc.in <- []byte("-NOPERM this user has no permissions to access the 'secret' channel\r\n+PONG\r\n+OK\r\n>3\r\n$7\r\nmessage\r\n$1\r\nx\r\n$2\r\nhi\r\n")
	want := "-NOPERM this user has no permissions to access the 'secret' channel\r\n+PONG\r\n>3\r\n$7\r\nmessage\r\n$1\r\nx\r\n$2\r\nhi\r\n"
	var got []byte
	buf := make([]byte, 16)
	for len(got) < len(want) {
		n, err := c.Read(buf)
		require.NoError(t, err)
		got = append(got, buf[:n]...)
	}
	assert.Equal(t, want, string(got))
	assert.Equal(t, exp, c.exp.Load())
	assert.Equal(t, uint64(1), h.Stats().PubSubReauths)
}

// The safety net against a shifted reply: the reply at a guard AUTH's mark is not what AUTH
// answers (+OK or an error), so the count is off; the connection is retired with an error
// go-redis drops it for, never handing that reply to the wrong command.
func TestShiftedReplyAtAnAuthMark(t *testing.T) {
	for _, resp3 := range []bool{false, true} {
		t.Run(map[bool]string{false: "RESP2", true: "RESP3"}[resp3], func(t *testing.T) {
			src := newFakeSource(t, time.Hour)
			h := quietHook(t, src, nil)
			fc := newFakeConn()
			c := h.g.wrap(fc, nil).(*conn)
			proto, hello := "2", hello2Reply
			if resp3 {
				proto, hello = "3", hello3Reply
			}
			_, err := c.Write(req("hello", proto, "auth", testOID, src.token()))
			require.NoError(t, err)
			reply(t, c, hello)
			h.g.cur.Store(newerCreds(t, h, src))
			_, err = c.Write(getReq) // the AUTH ahead of it
			require.NoError(t, err)
			fc.in <- []byte("$3\r\nbar\r\n+OK\r\n") // as if a reply the guard did not foresee came first
			n, err := c.Read(make([]byte, 64))
			require.ErrorIs(t, err, errBadReply)
			assert.Zero(t, n, "nothing handed to go-redis")
			assert.Equal(t, stateRetired, c.state.Load())
		})
	}
}

package hook

import (
	"context"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/testutil"
)

// Where go-redis's use of a connection meets the guard's work, and the hook's Close: findings 7-10
// of guard-2026-12-07.

// holdUntil runs background work on c that waits for release, then runs then (nil: nothing); it
// returns once the work holds the connection, and a channel closed when it has ended.
func holdUntil(t *testing.T, c *conn, release <-chan struct{}, then func()) <-chan struct{} {
	t.Helper()
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		c.hold(nil, func() bool {
			<-release
			if then != nil {
				then()
			}
			return true
		})
	}()
	require.Eventually(t, c.bg.Load, 5*time.Second, time.Millisecond, "the work holds the connection")
	return ended
}

// Finding 7: a request that waited for background work which retired and closed the connection
// fails with ErrConnRetired (sent again by the hook), not "use of closed network connection".
func TestRequestThatWaitedFindsTheConnectionRetired(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h, fc, c := authed(t, src, nil, testOID)
	release := make(chan struct{})
	ended := holdUntil(t, c, release, func() {
		_ = c.retire(c.exp.Load()) // closeIdle's work, or a failed background request
		_ = c.Conn.Close()
	})
	sent := c.sentA.Load()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(getReq)
		errc <- err
	}()
	// The request has passed the state check and published its count: it waits for the work.
	require.Eventually(t, func() bool { return c.sentA.Load() == sent+1 }, 5*time.Second, time.Millisecond)
	close(release)
	<-ended
	err := <-errc
	require.ErrorIs(t, err, ErrConnRetired)
	assert.NotContains(t, fc.written(), string(getReq), "nothing sent")
	assert.Equal(t, uint64(1), h.Stats().ConnsRetired)
}

// Finding 9 (waits): a request or a read meeting background work waits no longer than go-redis's
// deadline for the call (its timeouts, its context's deadline), not for the guard's work.
func TestWaitsForBackgroundWorkHonourDeadlines(t *testing.T) {
	for _, op := range []string{"write", "read"} {
		t.Run(op, func(t *testing.T) {
			src := newFakeSource(t, time.Hour)
			_, fc, c := authed(t, src, nil, testOID)
			release := make(chan struct{})
			ended := holdUntil(t, c, release, nil)
			defer func() { close(release); <-ended }()
			start := time.Now()
			errc := make(chan error, 1)
			go func() {
				var err error
				if op == "write" {
					_ = c.SetWriteDeadline(start.Add(100 * time.Millisecond))
					_, err = c.Write(getReq)
				} else {
					_ = c.SetReadDeadline(start.Add(100 * time.Millisecond))
					_, err = c.Read(make([]byte, 64))
				}
				errc <- err
			}()
			var err error
			select {
			case err = <-errc:
			case <-time.After(5 * time.Second):
				close(release)
				<-ended
				release = make(chan struct{})
				t.Fatal("the call waited for the guard's work past its deadline")
			}
			took := time.Since(start)
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			assert.True(t, ne.Timeout())
			assert.Less(t, took, time.Second, "bounded by the call's deadline")
			assert.NotContains(t, fc.written(), string(getReq))
		})
	}
}

// Finding 10: a connection made unmanaged in the middle of a request (an AUTH written in pieces,
// its name completed by the second) still follows where its requests end, so it is retired at its
// token's end rather than left for the server to close under go-redis.
func TestUnmanagedMidRequestRetiredAtExpiry(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h, fc, c := authed(t, src, nil, testOID)
	auth := string(req("auth", testOID, src.token()))
	cut1 := strings.Index(auth, "$4\r\nauth") + 6 // "*3\r\n$4\r\nau" | "th\r\n$36\r\n<oid>\r\n" | "$N\r\n<token>\r\n"
	cut2 := strings.Index(auth, testOID) + len(testOID) + 2
	for _, piece := range []string{auth[:cut1], auth[cut1:cut2], auth[cut2:]} {
		_, err := c.Write([]byte(piece))
		require.NoError(t, err)
	}
	require.Equal(t, stateUnmanaged, c.state.Load(), "its token is no longer known for sure")
	reply(t, c, "+OK\r\n")
	h.g.raise(&h.g.dead, c.exp.Load()+1) // its token's last moment
	_, err := c.Write(getReq)
	require.ErrorIs(t, err, ErrConnRetired)
	assert.NotContains(t, fc.written(), string(getReq))
}

// Finding 8: a RESP2 subscriber closed (an app's shutdown) while its move's new connection
// subscribes: the new connection is closed too, not left subscribed.
func TestMoveRacingClose(t *testing.T) {
	nc := newFakeConn()
	_, _, _, c := subscribed2(t, func(context.Context) (net.Conn, error) { return nc, nil })
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.g.rotatePubSub(c.g.cur.Load().exp, false)
	}()
	require.Eventually(t, func() bool { return strings.Contains(nc.written(), "subscribe") }, 5*time.Second, time.Millisecond,
		"the new connection subscribes")
	require.NoError(t, c.Close())
	nc.in <- []byte("+OK\r\n+OK\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")
	<-done
	assert.True(t, nc.isClosed(), "the new connection closed with the subscriber")
	assert.Zero(t, c.g.h.Stats().PubSubMoved)
}

// Finding 9: Hook.Close returns within a second while the guard's keep-alive waits on silent
// connections (each would hold it backgroundTimeout, 5 s), and leaves no goroutine behind; a
// connection whose work was cut short is retired, its next request sent again elsewhere.
func TestHookCloseWithStalledConnections(t *testing.T) {
	base := runtime.NumGoroutine()
	src := newFakeSource(t, time.Hour)
	h := newHook(src, &Options{KeepAlive: 40 * time.Millisecond})
	h.g.mu.Lock()
	h.g.subbed = true
	h.g.mu.Unlock()
	var fcs []*fakeConn
	var cs []*conn
	for range 3 {
		fc := newFakeConn()
		c := h.g.wrap(fc, nil).(*conn)
		writeAuth(t, c, testOID, src.token())
		reply(t, c, "+OK\r\n")
		fcs, cs = append(fcs, fc), append(cs, c)
	}
	require.Eventually(t, func() bool {
		for _, fc := range fcs {
			if strings.Contains(fc.written(), string(pingReq)) {
				return true
			}
		}
		return false
	}, 5*time.Second, time.Millisecond, "a keep-alive PING in flight, never answered")
	start := time.Now()
	require.NoError(t, h.Close())
	took := time.Since(start)
	t.Logf("Hook.Close with a keep-alive stalled on one of 3 silent connections: %s", took.Round(time.Millisecond))
	assert.Less(t, took, time.Second)
	for i, c := range cs {
		if strings.Contains(fcs[i].written(), string(pingReq)) {
			_, err := c.Write(getReq)
			assert.ErrorIs(t, err, ErrConnRetired, "its PING's reply may still come: retired")
		}
	}
	for _, c := range cs {
		_ = c.Close()
	}
	testutil.WaitGoroutines(t, base)
}

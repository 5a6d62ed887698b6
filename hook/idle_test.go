package hook

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/resp"
)

// The guard's background work on idle connections (idle.go): renewal after a new token and the
// keep-alive PING, on fake connections with the background work on (fakeHook turns it off), in
// a synctest bubble: minutes of the guard's timers pass at once, and exactly.

// answering is a fakeConn that answers a request written alone, as the guard's own are, as
// redis-server does: PING with PONG, AUTH with OK (or WRONGPASS when refuse is set). What
// go-redis writes in the tests (a GET, an AUTH and a GET in one write) the test answers.
type answering struct {
	*fakeConn
	refuse       bool
	pings, auths atomic.Int32
}

func (a *answering) Write(b []byte) (int, error) {
	n, err := a.fakeConn.Write(b)
	if err != nil {
		return n, err
	}
	name, l, _ := resp.RequestLen(b)
	switch {
	case l != len(b):
	case strings.EqualFold(string(name), "ping"):
		a.pings.Add(1)
		a.in <- []byte("+PONG\r\n")
	case strings.EqualFold(string(name), "auth"):
		a.auths.Add(1)
		if a.refuse {
			a.in <- []byte("-WRONGPASS invalid username-password pair or user is disabled.\r\n")
		} else {
			a.in <- []byte("+OK\r\n")
		}
	}
	return n, err
}

// dialAnswering makes a guarded connection on an answering fake through h's DialHook, and
// authenticates it with src's token (the AUTH answered by the fake).
func dialAnswering(t *testing.T, h *Hook, src *fakeSource) (net.Conn, *answering) {
	t.Helper()
	a := &answering{fakeConn: newFakeConn()}
	c, err := h.DialHook(func(context.Context, string, string) (net.Conn, error) { return a, nil })(context.Background(), "tcp", "x:1")
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	writeAuth(t, c, testOID, src.token())
	readExactly(t, c, "+OK\r\n")
	return c, a
}

// readExactly reads one reply through c and checks it is want, nothing more nor less.
func readExactly(t *testing.T, c net.Conn, want string) {
	t.Helper()
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	require.NoError(t, err)
	require.Equal(t, want, string(buf[:n]))
}

// roundTrip runs a GET through c as go-redis does: the request, then its reply ($-1, queued by the
// test as the server's).
func roundTrip(t *testing.T, c net.Conn, a *answering) {
	t.Helper()
	_, err := c.Write(getReq)
	require.NoError(t, err)
	a.in <- []byte("$-1\r\n")
	readExactly(t, c, "$-1\r\n")
}

// TestKeepAlivePingsIdleConnectionsOnly: over ten minutes, a connection that is never used gets
// a PING at least every KeepAlive (Azure closes one idle for 10 minutes); one used more often
// than KeepAlive/2 gets none. The PONGs are the guard's: go-redis's next read on the idle
// connection is its own reply.
func TestKeepAlivePingsIdleConnectionsOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const keepAlive = 2 * time.Minute
		src := newFakeSource(t, 24*time.Hour)
		h := newHook(src, &Options{KeepAlive: keepAlive})
		defer h.Close()
		idle, ia := dialAnswering(t, h, src)
		busy, ba := dialAnswering(t, h, src)

		const span = 10 * time.Minute
		for end := time.Now().Add(span); time.Now().Before(end); {
			time.Sleep(25 * time.Second) // under KeepAlive/2
			roundTrip(t, busy, ba)
		}
		synctest.Wait()
		t.Logf("%v, KeepAlive %v: %d PINGs on the idle connection, %d on the busy one", span, keepAlive, ia.pings.Load(), ba.pings.Load())
		assert.GreaterOrEqual(t, int(ia.pings.Load()), int(span/keepAlive)-1, "the idle connection is PINGed at least every KeepAlive")
		assert.LessOrEqual(t, int(ia.pings.Load()), int(span/(keepAlive/2)), "at most every KeepAlive/2")
		assert.Zero(t, ba.pings.Load(), "a connection in use is not PINGed")
		assert.Equal(t, uint64(ia.pings.Load()), h.Stats().KeepAlives)
		roundTrip(t, idle, ia) // the PONGs were the guard's to read
		assert.Equal(t, int32(1), ia.auths.Load(), "the handshake's AUTH only")
	})
}

// TestIdleConnectionsRenewedInBackground: after a new token, an idle connection gets an AUTH with
// it from the guard within 30 s, so that it is not retired at its old token's expiry; a
// connection busy with a request is left alone until it is done. An AUTH the server refuses
// leaves the connection on its old token, counted, not tried again with the same token, and
// retired before that token expires.
func TestIdleConnectionsRenewedInBackground(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "accepted", true: "refused"}[refuse], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := newFakeSource(t, time.Hour)
				h := newHook(src, &Options{KeepAlive: -1}) // no PINGs: renewal only
				defer h.Close()
				idle, ia := dialAnswering(t, h, src)
				busy, ba := dialAnswering(t, h, src)
				ia.refuse, ba.refuse = refuse, refuse
				_, oldExp := src.token(), src.exp
				_, err := busy.Write(getReq) // a request whose reply has not come
				require.NoError(t, err)
				busyBefore := ba.written()

				synctest.Wait() // the guard has subscribed to the source
				src.life = 2 * time.Hour
				require.NoError(t, src.Refresh(context.Background()))
				newAuth := string(req("auth", testOID, src.token()))
				time.Sleep(31 * time.Second) // renewals are spread over at most 30 s
				synctest.Wait()

				assert.Equal(t, int32(2), ia.auths.Load(), "the handshake's AUTH, then the guard's")
				assert.Contains(t, ia.written(), newAuth, "the idle connection got the new token")
				assert.Equal(t, busyBefore, ba.written(), "nothing written on a connection waiting for its reply")
				ba.in <- []byte("$-1\r\n")
				readExactly(t, busy, "$-1\r\n")

				before := ia.written()
				roundTrip(t, idle, ia)
				assert.Equal(t, before+string(getReq), ia.written(), "the next request goes as it is, no AUTH ahead of it")
				st := h.Stats()
				if !refuse {
					assert.Equal(t, uint64(1), st.IdleReauths)
					assert.Zero(t, st.ReauthFailures)
					// Past the old token's expiry the connection is on the new one: not retired.
					time.Sleep(time.Until(oldExp) + time.Second)
					roundTrip(t, idle, ia)
					return
				}
				assert.Zero(t, st.IdleReauths)
				assert.Equal(t, uint64(1), st.ReauthFailures, "the refusal is counted")
				// Retired before the old token expires, where the server would close it.
				time.Sleep(time.Until(oldExp) - time.Second)
				before = ia.written()
				_, err = idle.Write(getReq)
				require.ErrorIs(t, err, ErrConnRetired)
				assert.True(t, time.Now().Before(oldExp))
				assert.Equal(t, before, ia.written(), "nothing sent")
				assert.False(t, bytes.Contains([]byte(before), []byte(newAuth+newAuth)), "the refused token was not sent twice in a row")
				assert.Equal(t, int32(2), ia.auths.Load(), "the refused token was not tried again")
			})
		})
	}
}

// closeDead, at a token's last moment with no newer token: an idle connection is closed at once;
// one busy then (a reply not read yet) is closed as soon as it is idle, before the expiry, rather
// than left for the server to close under go-redis.
func TestCloseDeadRetriesBusyConnections(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := fakeHook(src, nil)
	defer h.Close()
	var fcs []*fakeConn
	var cs []*conn
	for range 2 {
		fc := newFakeConn()
		c := h.g.wrap(fc, nil).(*conn)
		writeAuth(t, c, testOID, src.token())
		reply(t, c, "+OK\r\n")
		fcs, cs = append(fcs, fc), append(cs, c)
	}
	_, err := cs[1].Write(getReq) // busy: its reply not read yet
	require.NoError(t, err)
	h.g.closeDead(cs[0].exp.Load())
	assert.True(t, fcs[0].isClosed(), "the idle one closed at once")
	assert.False(t, fcs[1].isClosed(), "not the busy one")
	reply(t, cs[1], "$-1\r\n") // now idle
	require.Eventually(t, fcs[1].isClosed, 2*time.Second, time.Millisecond, "closed once idle, before the expiry")
	assert.Equal(t, uint64(2), h.Stats().ConnsRetired)
	_, err = cs[1].Write(getReq)
	assert.ErrorIs(t, err, ErrConnRetired)
}

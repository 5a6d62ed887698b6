package hook

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/resp"
	"github.com/entraredis/entraredis/internal/testutil"
)

// Subscribers at production's ratio: go-redis's write deadline, set when it subscribed, has long
// lapsed by the time a new token comes.

const (
	newsConfirm3 = ">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
	newsMessage3 = ">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
)

// newerCreds mints a newer token on src and returns it ready to send, without offering it (the
// tests start the renewals).
func newerCreds(t *testing.T, h *Hook, src *fakeSource) *creds {
	t.Helper()
	src.mu.Lock()
	src.life += time.Hour
	src.mu.Unlock()
	require.NoError(t, src.mint())
	exp, life := h.g.tokenTimes(src.token())
	return &creds{exp: exp, life: life, req: resp.AppendRequest(nil, "auth", testOID, src.token())}
}

// quietHook is a fakeHook whose guard does not subscribe to src (whose first token would start a
// renewal of its own), with o's options, closed by t.Cleanup.
func quietHook(t *testing.T, src *fakeSource, o *Options) *Hook {
	t.Helper()
	h := fakeHook(src, o)
	t.Cleanup(func() { h.Close() })
	h.g.mu.Lock()
	h.g.subbed = true
	h.g.mu.Unlock()
	return h
}

// subscribed3 is a RESP3 subscriber to "news" on a fake connection, the confirmation read.
func subscribed3(t *testing.T, h *Hook, src *fakeSource) (*fakeConn, *conn) {
	t.Helper()
	fc := newFakeConn()
	c := h.g.wrap(fc, nil).(*conn)
	_, err := c.Write(req("hello", "3", "auth", testOID, src.token()))
	require.NoError(t, err)
	reply(t, c, hello3Reply)
	_, err = c.Write(req("subscribe", "news"))
	require.NoError(t, err)
	reply(t, c, newsConfirm3)
	return fc, c
}

// readAll reads from c until it has n bytes.
func readAll(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	var got []byte
	buf := make([]byte, 512) // the fake drops what a read does not take
	for len(got) < n {
		k, err := c.Read(buf)
		require.NoError(t, err, "read so far: %q", got)
		got = append(got, buf[:k]...)
	}
	return string(got)
}

// Finding 1 (guard-2026-12-07): the in-place AUTH was written under go-redis's write deadline, set
// for SUBSCRIBE and lapsed since; on a real socket it failed with a timeout, nothing reached the
// server, and the mark and moving stayed. It is written under the guard's deadline now, and
// go-redis's put back after.
func TestRESP3AuthUnderLapsedWriteDeadline(t *testing.T) {
	raw, srv := tcpPair(t)
	src := newFakeSource(t, time.Hour)
	h := quietHook(t, src, nil)
	c := h.g.wrap(raw, nil).(*sysConn).conn
	serverReads := func(want string) {
		t.Helper()
		require.NoError(t, srv.SetReadDeadline(time.Now().Add(5*time.Second)))
		buf := make([]byte, len(want))
		_, err := readFull(srv, buf)
		require.NoError(t, err, "the server reads the request")
		require.True(t, want == string(buf), "the server reads the request") // no token in a failure message
	}
	hello := req("hello", "3", "auth", testOID, src.token())
	_, err := c.Write(hello)
	require.NoError(t, err)
	serverReads(string(hello))
	_, err = srv.Write([]byte(hello3Reply))
	require.NoError(t, err)
	readAll(t, c, len(hello3Reply))

	// go-redis's Subscribe: WithWriter sets now+WriteTimeout, writes, and never refreshes it
	// while the subscriber only reads.
	wd := time.Now().Add(20 * time.Millisecond)
	require.NoError(t, c.SetWriteDeadline(wd))
	_, err = c.Write(req("subscribe", "news"))
	require.NoError(t, err)
	serverReads(string(req("subscribe", "news")))
	_, err = srv.Write([]byte(newsConfirm3))
	require.NoError(t, err)
	readAll(t, c, len(newsConfirm3))
	for time.Now().Before(wd.Add(10 * time.Millisecond)) {
		time.Sleep(5 * time.Millisecond) // until go-redis's write deadline has lapsed
	}

	cur := newerCreds(t, h, src)
	h.g.cur.Store(cur)
	h.g.rotatePubSub(cur.exp, true) // what a new token's offer runs
	serverReads(string(cur.req))
	_, err = srv.Write([]byte("+OK\r\n" + newsMessage3))
	require.NoError(t, err)
	assert.Equal(t, newsMessage3, readAll(t, c, len(newsMessage3)), "the AUTH's reply cut out")
	assert.Equal(t, cur.exp, c.exp.Load())
	assert.Equal(t, uint64(1), h.Stats().PubSubReauths)
	assert.False(t, c.ps.Load().moving.Load())
	// go-redis's own deadline is back on the socket: its next write without a new one fails.
	_, err = raw.Write(pingReq)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "go-redis's lapsed write deadline put back")
}

// readFull reads len(b) bytes from c.
func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// A guard AUTH that could not be written takes back what it announced (the mark, the count,
// moving), is logged and counted; over the offer it leaves the subscriber alone (a later token
// or the margin tries again), at the margin it closes it.
func TestRESP3AuthWriteFailureUndone(t *testing.T) {
	for _, atMargin := range []bool{false, true} {
		t.Run(map[bool]string{false: "offer", true: "margin"}[atMargin], func(t *testing.T) {
			src := newFakeSource(t, time.Hour)
			var logs testutil.SyncBuffer
			h := quietHook(t, src, &Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			fc, c := subscribed3(t, h, src)
			sent := c.sent
			cur := newerCreds(t, h, src)
			h.g.cur.Store(cur)
			fc.mu.Lock()
			fc.writeErr = errors.New("broken pipe")
			fc.mu.Unlock()
			h.g.rotatePubSub(cur.exp, !atMargin)

			assert.Zero(t, c.nmarks.Load(), "the mark taken back")
			assert.Equal(t, sent, c.sent, "the count taken back")
			assert.Equal(t, sent, c.sentA.Load())
			assert.False(t, c.ps.Load().moving.Load(), "moving cleared: a later try can run")
			assert.Equal(t, uint64(1), h.Stats().PubSubMoveFailures, "counted")
			assert.Contains(t, logs.String(), "AUTH could not be written")
			assert.Contains(t, logs.String(), "broken pipe")
			assert.False(t, strings.Contains(logs.String(), src.token()), "no token in the log")
			if atMargin {
				assert.Equal(t, uint64(1), h.Stats().PubSubClosed)
				assert.True(t, fc.isClosed())
				return
			}
			assert.Zero(t, h.Stats().PubSubClosed)
			// A message after it is delivered as it came.
			fc.in <- []byte(newsMessage3)
			assert.Equal(t, newsMessage3, readAll(t, c, len(newsMessage3)))
			// The next try goes through.
			fc.mu.Lock()
			fc.writeErr = nil
			fc.mu.Unlock()
			h.g.rotatePubSub(cur.exp, true)
			assert.True(t, strings.Contains(fc.written(), string(cur.req)), "the AUTH written")
			fc.in <- []byte("+OK\r\n" + newsMessage3)
			assert.Equal(t, newsMessage3, readAll(t, c, len(newsMessage3)))
			assert.Equal(t, cur.exp, c.exp.Load())
		})
	}
}

// Finding 6: at the margin, an AUTH in flight (written, its reply not read yet) is given the time
// a reply takes; answered, the subscriber is renewed, not closed. Never answered, it is closed
// (errAuthUnanswered), counted: the safety net.
func TestRESP3AuthInFlightAtTheMargin(t *testing.T) {
	prev := backgroundTimeout
	backgroundTimeout = 300 * time.Millisecond
	t.Cleanup(func() { backgroundTimeout = prev })
	for _, answered := range []bool{true, false} {
		t.Run(map[bool]string{true: "answered", false: "never answered"}[answered], func(t *testing.T) {
			src := newFakeSource(t, time.Hour)
			h := quietHook(t, src, nil)
			fc, c := subscribed3(t, h, src)
			cur := newerCreds(t, h, src)
			h.g.cur.Store(cur)
			h.g.rotatePubSub(cur.exp, true) // the offer's AUTH, its reply not read yet
			require.True(t, strings.Contains(fc.written(), string(cur.req)), "the AUTH written")
			h.g.rotatePubSub(cur.exp, false) // the margin meets it in flight
			assert.Zero(t, h.Stats().PubSubClosed, "not closed while its AUTH is in flight")
			if answered {
				fc.in <- []byte("+OK\r\n" + newsMessage3)
				assert.Equal(t, newsMessage3, readAll(t, c, len(newsMessage3)))
				assert.Equal(t, cur.exp, c.exp.Load())
				time.Sleep(2 * backgroundTimeout) // past the wait: it must not close a renewed subscriber
				assert.Zero(t, h.Stats().PubSubClosed)
				assert.False(t, fc.isClosed())
				return
			}
			require.Eventually(t, fc.isClosed, 5*time.Second, 5*time.Millisecond, "closed once its AUTH's time is up")
			assert.Equal(t, uint64(1), h.Stats().PubSubClosed)
			assert.Equal(t, uint64(1), h.Stats().PubSubMoveFailures, "the safety net counted")
		})
	}
}

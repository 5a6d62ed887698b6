package hook

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Reply counts that cannot drift: a subscription command's reply is what the server sends
// (pushes, or an error reply), never assumed. Each test is a sequence from the review
// (guard-2026-12-07 findings 3-5) that handed a reply to the wrong reader before.

const (
	noPerm  = "-NOPERM this user has no permissions to access the 'secret' channel\r\n"
	barBulk = "$3\r\nbar\r\n"
)

// managed3 is a managed RESP3 connection (HELLO 3 answered).
func managed3(t *testing.T, h *Hook, src *fakeSource) (*fakeConn, *conn) {
	t.Helper()
	fc := newFakeConn()
	c := h.g.wrap(fc, nil).(*conn)
	_, err := c.Write(req("hello", "3", "auth", testOID, src.token()))
	require.NoError(t, err)
	reply(t, c, hello3Reply)
	return fc, c
}

// Finding 4: over RESP3 (P|S)UNSUBSCRIBE sent with Do on a pooled connection is answered by
// pushes only; counted as one reply, it made the next in-place AUTH's +OK GET's reply.
func TestRESP3UnsubscribeOnAPooledConnection(t *testing.T) {
	for _, tc := range []struct{ cmd, push string }{
		{"unsubscribe", ">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"},
		{"punsubscribe", ">3\r\n$12\r\npunsubscribe\r\n_\r\n:0\r\n"},
		{"sunsubscribe", ">3\r\n$12\r\nsunsubscribe\r\n_\r\n:0\r\n"},
		{"SUNSUBSCRIBE", ">3\r\n$12\r\nsunsubscribe\r\n_\r\n:0\r\n"},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			src := newFakeSource(t, time.Hour)
			h := quietHook(t, src, nil)
			fc, c := managed3(t, h, src)
			_, err := c.Write(req(tc.cmd))
			require.NoError(t, err)
			fc.in <- []byte(tc.push)
			assert.Equal(t, tc.push, readAll(t, c, len(tc.push)), "go-redis's Do gets the push")
			cur := newerCreds(t, h, src)
			h.g.cur.Store(cur)
			before := len(fc.written())
			_, err = c.Write(getReq)
			require.NoError(t, err)
			require.True(t, strings.HasPrefix(fc.written()[before:], "*3\r\n$4\r\nauth\r\n"), "the AUTH ahead of GET")
			fc.in <- []byte("+OK\r\n" + barBulk)
			assert.Equal(t, barBulk, readAll(t, c, len(barBulk)), "GET gets its own reply")
			assert.Equal(t, cur.exp, c.exp.Load())
			assert.Equal(t, uint64(1), h.Stats().Reauths)
			assert.Equal(t, stateManaged, c.state.Load())
		})
	}
}

// Over RESP2, not subscribed, (P)UNSUBSCRIBE gets one reply per channel named.
func TestRESP2UnsubscribeCountsAReplyPerChannel(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := quietHook(t, src, nil)
	fc := newFakeConn()
	c := h.g.wrap(fc, nil).(*conn)
	_, err := c.Write(req("hello", "2", "auth", testOID, src.token()))
	require.NoError(t, err)
	reply(t, c, hello2Reply)
	_, err = c.Write(req("unsubscribe", "a", "b"))
	require.NoError(t, err)
	replies := "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"
	fc.in <- []byte(replies)
	assert.Equal(t, replies, readAll(t, c, len(replies)))
	h.g.cur.Store(newerCreds(t, h, src))
	_, err = c.Write(getReq)
	require.NoError(t, err)
	fc.in <- []byte("+OK\r\n" + barBulk)
	assert.Equal(t, barBulk, readAll(t, c, len(barBulk)), "GET gets its own reply")
	assert.Equal(t, uint64(1), h.Stats().Reauths)
}

// Finding 3: a RESP3 subscription refused with an error reply (NOPERM from a channel rule): the
// error is go-redis's and answers no counted command; the guard's AUTH reply is still the one cut
// out, whether the refusal is read before the AUTH is written (a) or sits just ahead of its reply
// (b).
func TestRESP3RefusedSubscription(t *testing.T) {
	for _, tc := range []struct {
		name        string
		readBefore  bool
		stream, out string
	}{
		{"a: refusal read before the AUTH", true, "+OK\r\n" + newsMessage3, newsMessage3},
		{"b: refusal just ahead of the AUTH's reply", false, noPerm + "+OK\r\n" + newsMessage3, noPerm + newsMessage3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFakeSource(t, time.Hour)
			h := quietHook(t, src, nil)
			fc, c := subscribed3(t, h, src)
			_, err := c.Write(req("subscribe", "secret"))
			require.NoError(t, err)
			if tc.readBefore {
				fc.in <- []byte(noPerm)
				assert.Equal(t, noPerm, readAll(t, c, len(noPerm)), "go-redis gets its error")
			}
			cur := newerCreds(t, h, src)
			h.g.cur.Store(cur)
			h.g.rotatePubSub(cur.exp, true)
			require.True(t, strings.Contains(fc.written(), string(cur.req)), "the AUTH written")
			fc.in <- []byte(tc.stream)
			assert.Equal(t, tc.out, readAll(t, c, len(tc.out)))
			assert.Equal(t, cur.exp, c.exp.Load(), "renewed")
			assert.Equal(t, uint64(1), h.Stats().PubSubReauths)
			assert.Zero(t, h.Stats().ReauthFailures, "the refusal was not the AUTH's")
			assert.False(t, c.ps.Load().moving.Load())
			assert.Zero(t, c.nmarks.Load())
		})
	}
}

// Over RESP3 a subscription to several channels is confirmed by a push per channel; an AUTH
// written between two subscriptions is cut out where it is answered.
func TestRESP3SubscriptionsAroundAnAuth(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := quietHook(t, src, nil)
	fc, c := subscribed3(t, h, src)
	_, err := c.Write(req("subscribe", "a", "b"))
	require.NoError(t, err)
	cur := newerCreds(t, h, src)
	h.g.cur.Store(cur)
	h.g.rotatePubSub(cur.exp, true)
	_, err = c.Write(req("psubscribe", "secret*"))
	require.NoError(t, err)
	confirms := ">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:2\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:3\r\n"
	fc.in <- []byte(confirms + "+OK\r\n" + noPerm + newsMessage3)
	want := confirms + noPerm + newsMessage3
	assert.Equal(t, want, readAll(t, c, len(want)))
	assert.Equal(t, cur.exp, c.exp.Load())
	assert.Zero(t, c.nmarks.Load())
}

// Finding 5: over RESP2 an AUTH the guard wrote ahead of SUBSCRIBE (a newer token arrived between
// the handshake and the subscription) is cut out; go-redis reads the confirmation first.
func TestRESP2AuthAheadOfSubscribe(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := quietHook(t, src, nil)
	fc := newFakeConn()
	c := h.g.wrap(fc, nil).(*conn)
	_, err := c.Write(req("hello", "2", "auth", testOID, src.token()))
	require.NoError(t, err)
	reply(t, c, hello2Reply)
	cur := newerCreds(t, h, src)
	h.g.cur.Store(cur)
	_, err = c.Write(req("subscribe", "a"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(fc.written()[strings.Index(fc.written(), "*2\r\n$9\r\nsubscribe")-len(cur.req):], string(cur.req)), "the AUTH ahead of SUBSCRIBE")
	confirm := "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
	msg := "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"
	fc.in <- []byte("+OK\r\n" + confirm + msg)
	assert.Equal(t, confirm+msg, readAll(t, c, len(confirm+msg)))
	assert.Equal(t, cur.exp, c.exp.Load(), "on the new token")
	assert.Zero(t, c.nmarks.Load())
}

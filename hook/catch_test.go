package hook

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/internal/testutil"
	"github.com/entraredis/entraredis/provider"
)

// Tests that catch bugs the rest of the suite once let through (issue 20), each where the
// behaviour lives: what go-redis and the server see, and the hook's counters.

// realRig is a real redis-server behind entratest's gateway (which closes a connection when its
// token expires), a provider on an issuer of short-lived tokens, and a hook.
type realRig struct {
	iss *entratest.Issuer
	gw  *entratest.Gateway
	p   *provider.Provider
	h   *Hook
}

func newRealRig(t *testing.T, life time.Duration) *realRig {
	t.Helper()
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: life, Key: testKey(t)})
	require.NoError(t, err)
	gw := entratest.StartGateway(t, iss, entratest.StartRedis(t, nil).Addr(), nil)
	p, err := provider.New(iss, nil)
	require.NoError(t, err)
	h := New(p, nil)
	t.Cleanup(func() { _ = h.Close(); _ = p.Close() })
	return &realRig{iss: iss, gw: gw, p: p, h: h}
}

// client returns a client of the rig's hook, closed by t.Cleanup; extra hooks run inside it.
func (r *realRig) client(t *testing.T, proto int, extra ...redis.Hook) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: r.gw.Addr(), Protocol: proto, CredentialsProviderContext: r.p.CredentialsProviderContext})
	rdb.AddHook(r.h)
	for _, x := range extra {
		rdb.AddHook(x)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// within waits, polling, until cond holds; d bounds a wait that only load can lengthen.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// betweenBlocks is a hook inside the guard's: after each block of an XREAD that ended with
// nothing, it runs add (the entry that arrives between two blocks).
type betweenBlocks struct {
	mu     sync.Mutex
	blocks int
	add    func(ctx context.Context)
}

func (*betweenBlocks) DialHook(next redis.DialHook) redis.DialHook { return next }
func (*betweenBlocks) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (b *betweenBlocks) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() != "xread" {
			return err
		}
		b.mu.Lock()
		b.blocks++
		first := b.blocks == 1
		b.mu.Unlock()
		if err == redis.Nil && first {
			b.add(ctx)
		}
		return err
	}
}

func (b *betweenBlocks) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.blocks
}

// TestXReadFromDollarReadsWhatArrivesBetweenBlocks: XREAD BLOCK from "$" that outlasts the
// token is sent as shorter blocks; an entry added after the first block ended and before the
// second started is read by the second. ("$" sent again would mean "after the newest entry now",
// and skip it: the caller would get nil at its timeout.)
func TestXReadFromDollarReadsWhatArrivesBetweenBlocks(t *testing.T) {
	r := newRealRig(t, 2*time.Second)
	ctx := context.Background()
	writer := r.client(t, 3)
	require.NoError(t, writer.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: []any{"n", "0"}}).Err())
	var added string
	bb := &betweenBlocks{add: func(ctx context.Context) {
		id, err := writer.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: []any{"n", "1"}}).Result()
		if assert.NoError(t, err) {
			added = id
		}
	}}
	reader := r.client(t, 3, bb)

	start := time.Now()
	// 4 s: twice the token's life, so at least two blocks; the entry comes after the first.
	res, err := reader.XRead(ctx, &redis.XReadArgs{Streams: []string{"s", "$"}, Block: 4 * time.Second}).Result()
	took := time.Since(start)
	require.NoError(t, err, "the entry added between two blocks was not read (%d blocks, %v)", bb.count(), took)
	require.GreaterOrEqual(t, bb.count(), 2, "the XREAD was split")
	require.Len(t, res, 1)
	require.Len(t, res[0].Messages, 1)
	assert.Equal(t, added, res[0].Messages[0].ID)
	assert.Equal(t, "1", res[0].Messages[0].Values["n"])
	assert.Positive(t, r.h.Stats().BlockingSplits)
	t.Logf("XREAD BLOCK 4000 from $ on a 2 s token: %d blocks, the entry added between the first two read after %v", bb.count(), took.Round(time.Millisecond))
}

// TestRESP2SubscriberMovesKeepPatternsAndShardChannels: a RESP2 subscriber to a channel, a
// pattern and a shard channel on one connection is moved to a new connection before each token
// expires, re-subscribed to all three underneath; no message of any kind is lost through two
// moves (one published during a move may come twice).
func TestRESP2SubscriberMovesKeepPatternsAndShardChannels(t *testing.T) {
	r := newRealRig(t, 2*time.Second)
	ctx := context.Background()
	base := runtime.NumGoroutine()
	sub := r.client(t, 2)
	pub := r.client(t, 3)
	ps := sub.Subscribe(ctx, "news")
	require.NoError(t, ps.PSubscribe(ctx, "pat.*"))
	require.NoError(t, ps.SSubscribe(ctx, "shard"))
	for range 3 { // the three confirmations
		_, err := ps.Receive(ctx)
		require.NoError(t, err)
	}
	kinds := []struct {
		name    string
		publish func(payload string) error
		of      func(m *redis.Message) bool
	}{
		{"channel", func(s string) error { return pub.Publish(ctx, "news", s).Err() }, func(m *redis.Message) bool { return m.Channel == "news" && m.Pattern == "" }},
		{"pattern", func(s string) error { return pub.Publish(ctx, "pat.x", s).Err() }, func(m *redis.Message) bool { return m.Pattern == "pat.*" }},
		{"shard channel", func(s string) error { return pub.SPublish(ctx, "shard", s).Err() }, func(m *redis.Message) bool { return m.Channel == "shard" }},
	}
	var mu sync.Mutex
	got := make([]map[int]bool, len(kinds))
	for i := range got {
		got[i] = map[int]bool{}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ps.Channel() {
			n, _ := strconv.Atoi(m.Payload)
			mu.Lock()
			for i, k := range kinds {
				if k.of(m) {
					got[i][n] = true
				}
			}
			mu.Unlock()
		}
	}()
	has := func(i, n int) bool { mu.Lock(); defer mu.Unlock(); return got[i][n] }

	sent := 0
	publish := func() {
		for _, k := range kinds {
			require.NoError(t, k.publish(strconv.Itoa(sent)))
		}
		sent++
	}
	// Publish until the subscriber has been moved twice: counted, not timed.
	deadline := time.Now().Add(30 * time.Second)
	for r.h.Stats().PubSubMoved < 2 {
		require.True(t, time.Now().Before(deadline), "no two moves within 30 s")
		publish()
		time.Sleep(20 * time.Millisecond)
	}
	publish() // one more on the connection moved to last
	for i, k := range kinds {
		within(t, 5*time.Second, "last "+k.name+" message after two moves", func() bool { return has(i, sent-1) })
	}
	st := r.h.Stats()
	mu.Lock()
	for i, k := range kinds {
		var lost []int
		for n := range sent {
			if !got[i][n] {
				lost = append(lost, n)
			}
		}
		assert.Empty(t, lost, "%s messages lost of %d", k.name, sent)
	}
	mu.Unlock()
	assert.Zero(t, st.PubSubClosed, "moved, never closed for go-redis to reconnect")
	t.Logf("RESP2 subscriber to a channel, a pattern and a shard channel: %d messages of each kind, %d moves, %d closes", sent, st.PubSubMoved, st.PubSubClosed)
	require.NoError(t, ps.Close())
	<-done
	require.NoError(t, sub.Close())
	require.NoError(t, pub.Close())
	testutil.WaitGoroutines(t, base)
}

// TestBackgroundFailureRetiresTheConnection: when the guard's own request on an idle connection
// (the keep-alive PING, or the AUTH renewing it) gets no answer, the connection is lost: the
// next request go-redis writes on it fails in Write with ErrConnRetired (which go-redis drops the
// connection for, and the hook sends the command again on another), nothing of it written.
func TestBackgroundFailureRetiresTheConnection(t *testing.T) {
	cases := []struct {
		name  string
		drive func(t *testing.T, src *fakeSource) // makes the guard send its request
	}{
		{"keep-alive PING unanswered", func(t *testing.T, _ *fakeSource) {
			time.Sleep(2 * time.Minute) // KeepAlive: at most this long idle before a PING
		}},
		{"idle renewal's AUTH unanswered", func(t *testing.T, src *fakeSource) {
			synctest.Wait() // the guard has subscribed to the source
			src.life = 2 * time.Hour
			require.NoError(t, src.Refresh(context.Background()))
			time.Sleep(time.Minute) // idle renewals are spread over at most 30 s
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := newFakeSource(t, time.Hour)
				h := newHook(src, &Options{KeepAlive: 2 * time.Minute}) // background work on
				defer h.Close()
				fc := newFakeConn()
				c, err := h.DialHook(func(context.Context, string, string) (net.Conn, error) { return fc, nil })(context.Background(), "tcp", "x:1")
				require.NoError(t, err)
				defer c.Close()
				writeAuth(t, c, testOID, src.token())
				reply(t, c, "+OK\r\n")
				before := fc.written()

				tc.drive(t, src)
				time.Sleep(backgroundTimeout + time.Second) // the guard's request times out
				synctest.Wait()
				require.NotEqual(t, before, fc.written(), "the guard sent its request")
				sentByGuard := fc.written()

				n, err := c.Write(getReq)
				require.ErrorIs(t, err, ErrConnRetired, "the next request fails before it is sent")
				assert.Zero(t, n)
				assert.Equal(t, sentByGuard, fc.written(), "nothing of the request written")
				_, err = c.Write(getReq)
				require.ErrorIs(t, err, ErrConnRetired, "and so is every later one")
			})
		})
	}
}

// TestRetiredJustBeforeExpiryWithoutANewerToken: with no newer token to renew with, a connection
// is used until just before its token expires, then retired: its next request fails in Write,
// before a byte leaves, rather than reaching a server about to close the connection under it
// (go-redis would send it again, its fate unknown). In a synctest bubble: an hour's token, and
// the moments around its expiry hit exactly.
func TestRetiredJustBeforeExpiryWithoutANewerToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource(t, time.Hour)
		h := fakeHook(src, nil)
		defer h.Close()
		fc := newFakeConn()
		c, err := h.DialHook(func(context.Context, string, string) (net.Conn, error) { return fc, nil })(context.Background(), "tcp", "x:1")
		require.NoError(t, err)
		defer c.Close()
		writeAuth(t, c, testOID, src.token())
		reply(t, c, "+OK\r\n")
		exp := src.exp

		time.Sleep(time.Until(exp) - time.Second)
		_, err = c.Write(getReq)
		require.NoError(t, err, "a second before the expiry the connection is still used")
		reply(t, c, "$-1\r\n")

		time.Sleep(750 * time.Millisecond)
		require.True(t, time.Now().Before(exp))
		before := fc.written()
		n, err := c.Write(getReq)
		require.ErrorIs(t, err, ErrConnRetired, "%v before the expiry", time.Until(exp))
		assert.Zero(t, n)
		assert.Equal(t, before, fc.written(), "nothing sent")
		assert.Equal(t, uint64(1), h.Stats().ConnsRetired)
	})
}

package hook

import (
	"context"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The splitting of each blocking command, on a fake server that answers "nothing yet" until its
// last block (pure logic: every command against redis-server is in the root package's
// TestBlockingCommands; WAITAOF is here only, Debian's redis-server 7.0 predates it).
func TestBlockingSplits(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		cmd    redis.Cmder
		at     int                   // the timeout's index
		ms     bool                  // in milliseconds
		answer func(cmd redis.Cmder) // the last block's answer
	}{
		{redis.NewStringSliceCmd(ctx, "blpop", "a", "b", int64(5)), 3, false, func(c redis.Cmder) { c.(*redis.StringSliceCmd).SetVal([]string{"a", "x"}) }},
		{redis.NewStringSliceCmd(ctx, "brpop", "a", int64(0)), 2, false, func(c redis.Cmder) { c.(*redis.StringSliceCmd).SetVal([]string{"a", "x"}) }},
		{redis.NewStringCmd(ctx, "blmove", "a", "b", "left", "right", int64(5)), 5, false, func(c redis.Cmder) { c.(*redis.StringCmd).SetVal("x") }},
		{redis.NewStringCmd(ctx, "brpoplpush", "a", "b", int64(5)), 3, false, func(c redis.Cmder) { c.(*redis.StringCmd).SetVal("x") }},
		{redis.NewKeyValuesCmd(ctx, "blmpop", int64(5), 1, "a", "left"), 1, false, func(c redis.Cmder) { c.(*redis.KeyValuesCmd).SetVal("a", []string{"x"}) }},
		{redis.NewZWithKeyCmd(ctx, "bzpopmin", "z", int64(5)), 2, false, func(c redis.Cmder) { c.(*redis.ZWithKeyCmd).SetVal(&redis.ZWithKey{Key: "z"}) }},
		{redis.NewZWithKeyCmd(ctx, "bzpopmax", "z", int64(5)), 2, false, func(c redis.Cmder) { c.(*redis.ZWithKeyCmd).SetVal(&redis.ZWithKey{Key: "z"}) }},
		{redis.NewZSliceWithKeyCmd(ctx, "bzmpop", int64(5), 1, "z", "min"), 1, false, func(c redis.Cmder) { c.(*redis.ZSliceWithKeyCmd).SetVal("z", []redis.Z{{Member: "x"}}) }},
		{redis.NewXStreamSliceCmd(ctx, "xreadgroup", "group", "g", "c", "block", int64(5000), "streams", "s", ">"), 5, true, func(c redis.Cmder) { c.(*redis.XStreamSliceCmd).SetVal([]redis.XStream{{Stream: "s"}}) }},
	}
	for _, tc := range cases {
		t.Run(tc.cmd.Name(), func(t *testing.T) {
			src := newFakeSource(t, 2*time.Second) // exp rounded up to a second: blocks of about 1.5-2.5 s
			h := fakeHook(src, nil)
			defer h.Close()
			h.g.offer(testOID, src.token())
			orig := tc.cmd.Args()[tc.at]
			var blocks []time.Duration
			next := func(ctx context.Context, cmd redis.Cmder) error {
				d, ok := duration(cmd.Args()[tc.at], tc.ms)
				require.True(t, ok, "%v", cmd.Args()[tc.at])
				blocks = append(blocks, d)
				if len(blocks) < 3 {
					switch c := cmd.(type) {
					case *redis.IntCmd:
						c.SetVal(0) // WAIT: no replica acknowledged yet
						return nil
					case *redis.IntSliceCmd:
						c.SetVal([]int64{1, 0})
						return nil
					}
					cmd.SetErr(redis.Nil)
					return redis.Nil
				}
				tc.answer(cmd)
				return nil
			}
			require.NoError(t, h.ProcessHook(next)(ctx, tc.cmd))
			require.Len(t, blocks, 3, "two blocks answered nothing yet, the third the element")
			limit := time.Until(time.Unix(0, h.g.cur.Load().exp))
			for _, d := range blocks {
				assert.Positive(t, d)
				assert.Less(t, d, limit, "each block ends before the token must be renewed")
			}
			assert.Equal(t, orig, tc.cmd.Args()[tc.at], "the caller's arguments are restored")
			assert.Equal(t, uint64(2), h.Stats().BlockingSplits)
		})
	}
}

// A block that fits in the token's life is sent as it is; one that times out returns nil at its
// own timeout, in blocks that add up to it. In a synctest bubble: the blocks' sleeps and the
// hook's clock are the same fake clock, so the verdict does not depend on the machine's speed.
func TestBlockingTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		src := newFakeSource(t, time.Hour)
		h := fakeHook(src, nil)
		defer h.Close()
		h.g.offer(testOID, src.token())
		calls := 0
		next := func(ctx context.Context, cmd redis.Cmder) error {
			calls++
			cmd.SetErr(redis.Nil)
			return redis.Nil
		}
		cmd := redis.NewStringSliceCmd(ctx, "blpop", "a", int64(5))
		require.ErrorIs(t, h.ProcessHook(next)(ctx, cmd), redis.Nil)
		assert.Equal(t, 1, calls, "5 s fits in an hour's token")
		assert.Equal(t, int64(5), cmd.Args()[2])

		short := newFakeSource(t, 2*time.Second)
		hs := fakeHook(short, nil)
		defer hs.Close()
		hs.g.offer(testOID, short.token())
		limit := time.Until(short.exp) // the first block ends before the token must be renewed
		var blocks []time.Duration
		next = func(ctx context.Context, cmd redis.Cmder) error {
			f, _ := strconv.ParseFloat(cmd.Args()[2].(string), 64)
			d := time.Duration(f * float64(time.Second))
			blocks = append(blocks, d)
			time.Sleep(d)         // as Redis blocks: the test's subject, not synchronisation
			if len(blocks) == 1 { // meanwhile the provider refreshed, as it does at 50-75% of the life
				short.life = time.Hour // the rest fits in it
				require.NoError(t, short.mint())
				hs.g.offer(testOID, short.token())
			}
			cmd.SetErr(redis.Nil)
			return redis.Nil
		}
		start := time.Now()
		cmd = redis.NewStringSliceCmd(ctx, "blpop", "a", int64(3))
		require.ErrorIs(t, hs.ProcessHook(next)(ctx, cmd), redis.Nil)
		took := time.Since(start)
		t.Logf("BLPOP 3 on a 2 s token: blocks %v, nil after %v", blocks, took)
		require.Len(t, blocks, 2, "one block to the old token's renewal point, the rest on the new one")
		assert.Less(t, blocks[0], limit, "the first block ends before the token expires")
		assert.Greater(t, blocks[0], limit/2, "and not much before it must be renewed")
		assert.Equal(t, 3*time.Second, blocks[0]+blocks[1], "the blocks add up to the caller's timeout")
		assert.Equal(t, 3*time.Second, took, "nil at the caller's own timeout")
		assert.Equal(t, int64(3), cmd.Args()[2], "the caller's arguments are restored")
	})
}

// WAIT and WAITAOF wait for the writes of the connection they run on: they are never sent twice
// (a second block could run on another pooled connection), only capped to end before the token
// must be renewed, and return the count reached then.
func TestBlockingWaitIsCapped(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		cmd redis.Cmder
		at  int
	}{
		{redis.NewIntCmd(ctx, "wait", 1, int64(0)), 2},
		{redis.NewIntSliceCmd(ctx, "waitaof", 1, 1, int64(5000)), 3},
	} {
		t.Run(tc.cmd.Name(), func(t *testing.T) {
			src := newFakeSource(t, 2*time.Second)
			h := fakeHook(src, nil)
			defer h.Close()
			h.g.offer(testOID, src.token())
			orig := tc.cmd.Args()[tc.at]
			calls := 0
			next := func(ctx context.Context, cmd redis.Cmder) error {
				calls++
				d, ok := duration(cmd.Args()[tc.at], true)
				require.True(t, ok)
				assert.Positive(t, d)
				assert.Less(t, d, time.Until(time.Unix(0, h.g.cur.Load().exp)), "ends before the token must be renewed")
				switch c := cmd.(type) {
				case *redis.IntCmd:
					c.SetVal(0) // no replica acknowledged in time
				case *redis.IntSliceCmd:
					c.SetVal([]int64{1, 0})
				}
				return nil
			}
			require.NoError(t, h.ProcessHook(next)(ctx, tc.cmd))
			assert.Equal(t, 1, calls, "one block, on one connection")
			assert.Equal(t, orig, tc.cmd.Args()[tc.at], "the caller's arguments are restored")
			assert.Zero(t, h.Stats().BlockingSplits)
		})
	}
}

// What follows STREAMS are stream names and IDs: a stream called "block" is not a BLOCK option.
func TestBlockingStreamNamedBlock(t *testing.T) {
	_, ok := blockingOf("xread", []any{"xread", "streams", "block", "0"})
	assert.False(t, ok, "XREAD STREAMS block 0: no BLOCK option")
	b, ok := blockingOf("xread", []any{"xread", "count", "1", "block", "0", "streams", "block", "0"})
	require.True(t, ok)
	assert.Equal(t, 4, b.at)
	_, ok = blockingOf("xreadgroup", []any{"xreadgroup", "group", "g", "c", "streams", "block", ">"})
	assert.False(t, ok)
}

// A split whose context ends returns the context's error, not the block's nil: the caller's own
// timeout has not come.
func TestBlockingCancelledContext(t *testing.T) {
	src := newFakeSource(t, 2*time.Second)
	h := fakeHook(src, nil)
	defer h.Close()
	h.g.offer(testOID, src.token())
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	next := func(ctx context.Context, cmd redis.Cmder) error {
		calls++
		cancel() // during the first block
		cmd.SetErr(redis.Nil)
		return redis.Nil
	}
	cmd := redis.NewStringSliceCmd(ctx, "blpop", "a", int64(0))
	err := h.ProcessHook(next)(ctx, cmd)
	require.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, cmd.Err(), context.Canceled)
	assert.Equal(t, 1, calls)
}

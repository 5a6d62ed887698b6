package hook

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// onWrite is a hook whose dialer wraps the raw connection, beneath the guard: the first socket
// write after arm that holds the armed bytes runs the armed function.
type onWrite struct {
	armed atomic.Pointer[func()]
	bytes []byte
}

func (o *onWrite) arm(b []byte, f func()) { o.bytes = b; o.armed.Store(&f) }

func (o *onWrite) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &onWriteConn{Conn: c, o: o}, nil
	}
}
func (*onWrite) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (*onWrite) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type onWriteConn struct {
	net.Conn
	o *onWrite
}

func (c *onWriteConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if f := c.o.armed.Load(); f != nil && bytes.Contains(b, c.o.bytes) && c.o.armed.CompareAndSwap(f, nil) {
		(*f)()
	}
	return n, err
}

// TestNotRetiredWithRepliesDue: a pipeline larger than go-redis's write buffer leaves in several
// socket writes. A connection whose token reaches the guard's retirement line between two of them
// must not be retired there: the commands already written run, and failing the rest with
// ErrConnRetired ("nothing was sent") makes the whole pipeline look unsent, so the hook sends it
// again and the first part runs twice. The guard retires a connection only between requests
// with no reply due, so the pipeline completes on it (renewed in place, here, as a newer token is
// there: it would otherwise be retired at its next request).
//
// Every INCR is 64 bytes (a 43-byte key), so each of go-redis's buffer-sized writes (4 KiB at the
// floor, 128 KiB at the newest) ends at a command's end and the next starts a command.
func TestNotRetiredWithRepliesDue(t *testing.T) {
	for _, newer := range []bool{true, false} {
		t.Run(map[bool]string{true: "newer token", false: "no newer token"}[newer], func(t *testing.T) {
			r := newRealRig(t, time.Hour)
			ow := &onWrite{}
			rdb := r.client(t, 2, ow)
			ctx := context.Background()
			key := strings.Repeat("k", 43)
			require.Equal(t, 64, len("*2\r\n$4\r\nincr\r\n$43\r\n"+key+"\r\n"))
			require.NoError(t, rdb.Ping(ctx).Err())
			_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error { return p.Ping(ctx).Err() })
			require.NoError(t, err, "the connection pipelines take (go-redis v9.24 has a pool of its own for them)")
			info, ok := r.p.Token()
			require.True(t, ok)
			var writes atomic.Int32
			ow.arm([]byte(key), func() { // after the pipeline's first socket write: the token's retirement line
				writes.Add(1)
				if newer {
					r.iss.SetLifetime(2 * time.Hour)
					assert.NoError(t, r.p.Refresh(ctx))
				}
				r.h.g.raise(&r.h.g.dead, info.ExpiresOn.UnixNano()+1)
			})

			const n = 3 * 2048 // 192 KiB: several writes at any buffer size
			cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for range n {
					p.Incr(ctx, key)
				}
				return nil
			})
			require.Equal(t, int32(1), writes.Load())
			next := rdb.Incr(ctx, key).Err() // the connection's next request, nothing due
			r.h.g.dead.Store(0)
			v, gerr := rdb.Get(ctx, key).Int64()
			require.NoError(t, gerr)
			st := r.h.Stats()
			t.Logf("pipeline of %d INCRs: error %v; next INCR: %v; server counter %d; renewed in place %d; retired %d; sent again %d",
				n, err, next, v, st.Reauths, st.ConnsRetired, st.Retries)
			require.NoError(t, err, "the pipeline completes on its connection")
			assert.Equal(t, int64(n), cmds[n-1].(*redis.IntCmd).Val())
			if newer { // renewed in place between two of the pipeline's commands
				require.NoError(t, next)
				assert.Equal(t, int64(n+1), v, "every INCR ran once")
				assert.Equal(t, uint64(1), st.Reauths, "the pipeline's connection")
				// go-redis v9.24 pipelines on connections of their own: the INCR's, still on the
				// old token with nothing due, is retired at it and the INCR sent again.
				assert.LessOrEqual(t, st.ConnsRetired, uint64(1))
				assert.Equal(t, st.ConnsRetired, st.Retries, "only a retired request sent again")
			} else { // retired at its next request (every connection is on that token here)
				require.ErrorIs(t, next, ErrConnRetired)
				assert.Equal(t, int64(n), v, "every INCR of the pipeline ran once, the next not at all")
				assert.NotZero(t, st.ConnsRetired)
			}
		})
	}
}

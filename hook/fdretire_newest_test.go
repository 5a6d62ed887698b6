//go:build goredis_newest

package hook

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// heldReads is a raw connection whose reads wait while held: replies stay in the socket.
type heldReads struct {
	net.Conn
	mu   sync.Mutex
	held chan struct{} // non-nil: reads wait for it to be closed
}

func (c *heldReads) Read(b []byte) (int, error) {
	c.mu.Lock()
	h := c.held
	c.mu.Unlock()
	if h != nil {
		<-h
	}
	return c.Conn.Read(b)
}

func (c *heldReads) hold() {
	c.mu.Lock()
	c.held = make(chan struct{})
	c.mu.Unlock()
}

func (c *heldReads) release() {
	c.mu.Lock()
	if c.held != nil {
		close(c.held)
		c.held = nil
	}
	c.mu.Unlock()
}

// TestFullDuplexNotRetiredWithRepliesDue: go-redis's full-duplex engine writes while replies are
// due, and on a write error closes the connection at once and fails the commands in flight with
// that error. Retired there, commands the server had run would fail with ErrConnRetired, which
// says they were not sent. So with replies due the write goes on (the token is still valid: the
// retirement line is before its expiry), and the connection is retired at the first write with
// none due. A client wired as entraredis.NewClient wires one with FullDuplex in its options (the
// hook's dialer, no process hook); the replies of 8 INCRs are held in the socket while the line
// passes and a ninth is sent.
func TestFullDuplexNotRetiredWithRepliesDue(t *testing.T) {
	r := newRealRig(t, time.Hour)
	var mu sync.Mutex
	var raws []*heldReads // go-redis may dial ahead: every connection's reads are held
	each := func(f func(*heldReads)) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range raws {
			f(c)
		}
	}
	dial := r.h.DialHook(func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		raws = append(raws, &heldReads{Conn: c})
		return raws[len(raws)-1], nil
	})
	rdb := redis.NewClient(&redis.Options{Addr: r.gw.Addr(), Dialer: dial, MaxRetries: -1,
		CredentialsProviderContext: r.p.CredentialsProviderContext,
		AutoPipelineOptions:        &redis.AutoPipelineOptions{FullDuplex: true}})
	t.Cleanup(func() { _ = rdb.Close() })
	ap, err := rdb.AutoPipeline()
	require.NoError(t, err)
	t.Cleanup(func() { _ = ap.Close() })
	ctx := context.Background()
	require.NoError(t, ap.Incr(ctx, "k").Err())
	due := func() bool {
		for _, c := range r.h.g.snapshot() {
			if c.sentA.Load() > c.gotA.Load() {
				return true
			}
		}
		return false
	}
	info, ok := r.p.Token()
	require.True(t, ok)

	each((*heldReads).hold)
	results := make(chan error, 16)
	incr := func() {
		go func() { results <- ap.Incr(ctx, "k").Err() }()
	}
	for range 8 {
		incr()
	}
	check := redis.NewClient(&redis.Options{Addr: r.gw.Addr(), CredentialsProviderContext: r.p.CredentialsProviderContext})
	t.Cleanup(func() { _ = check.Close() })
	within(t, 5*time.Second, "the 8 INCRs run, their replies held", func() bool {
		v, _ := check.Get(ctx, "k").Int64()
		return v == 9 && due()
	})
	r.h.g.raise(&r.h.g.dead, info.ExpiresOn.UnixNano()+1) // the line, no newer token
	incr()
	within(t, 5*time.Second, "the ninth INCR run", func() bool {
		v, _ := check.Get(ctx, "k").Int64()
		return v == 10 || r.h.Stats().ConnsRetired > 0
	})
	each((*heldReads).release)
	var acked, unsent, other int
	for range 9 {
		switch err := <-results; {
		case err == nil:
			acked++
		case errors.Is(err, ErrConnRetired):
			unsent++
		default:
			other++
			t.Logf("error: %v", err)
		}
	}
	v, err := check.Get(ctx, "k").Int64()
	require.NoError(t, err)
	t.Logf("INCRs acknowledged %d, failed as not sent %d, failed otherwise %d; server counter %d (1 before); retired %d",
		acked, unsent, other, v, r.h.Stats().ConnsRetired)
	assert.Equal(t, int64(1+acked), v-int64(other), "an INCR reported as not sent ran")
	assert.Equal(t, 9, acked, "all sent on the connection and answered")

	// The next write, with no reply due, retires the connection: nothing of it is sent.
	err = ap.Incr(ctx, "k").Err()
	assert.ErrorIs(t, err, ErrConnRetired)
	v2, gerr := check.Get(ctx, "k").Int64()
	require.NoError(t, gerr)
	assert.Equal(t, v, v2, "not sent")
	assert.NotZero(t, r.h.Stats().ConnsRetired)
}

package provider

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/auth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/internal/testutil"
)

// valueListener is a listener passed by value: comparable, so it is one listener however often it
// is passed.
type valueListener struct{ n *int }

func (l valueListener) OnNext(auth.Credentials) { *l.n++ }
func (valueListener) OnError(error)             {}

// sliceListener cannot be a map key: comparing it panics.
type sliceListener struct{ seen []string }

func (sliceListener) OnNext(auth.Credentials) {}
func (sliceListener) OnError(error)           {}

func (p *Provider) listeners() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.subs.m)
}

func TestSubscribeListenerSet(t *testing.T) {
	var n int
	r := &recorder{}
	cases := []struct {
		name      string
		listeners []auth.CredentialsListener // subscribed in turn
		want      int                        // listeners held afterwards
		err       string
	}{
		{"one pointer, twice", []auth.CredentialsListener{r, r}, 1, ""},
		{"two pointers", []auth.CredentialsListener{&recorder{}, &recorder{}}, 2, ""},
		{"one value, twice", []auth.CredentialsListener{valueListener{&n}, valueListener{&n}}, 1, ""},
		{"nil", []auth.CredentialsListener{nil}, 0, "non-nil listener"},
		{"not comparable", []auth.CredentialsListener{sliceListener{}}, 0, "comparable listener"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newTest(t, &fakeCred{life: time.Hour}, nil)
			var unsubs []auth.UnsubscribeFunc
			for _, l := range tc.listeners {
				var (
					c     auth.Credentials
					unsub auth.UnsubscribeFunc
					err   error
				)
				require.NotPanics(t, func() { c, unsub, err = p.Subscribe(l) })
				if tc.err != "" {
					require.ErrorContains(t, err, tc.err)
					assert.Nil(t, c)
					continue
				}
				require.NoError(t, err)
				unsubs = append(unsubs, unsub)
			}
			assert.Equal(t, tc.want, p.listeners())
			for _, u := range unsubs {
				require.NoError(t, u())
				require.NoError(t, u(), "a second call is a no-op")
			}
			assert.Zero(t, p.listeners(), "every unsubscribe function ends the subscription")
		})
	}
}

// TestGoRedisUnsubscribesClosedConnections: the listener set holds listeners strongly, which is
// right because go-redis unsubscribes a connection's listener when it closes it, whether the
// client closes, or a connection breaks. Measured with a real redis-server behind entratest's
// gateway and go-redis's own streaming re-authentication (as when the hook's guard is off).
func TestGoRedisUnsubscribesClosedConnections(t *testing.T) {
	testutil.GoRedisNewest(t, "go-redis's streaming re-authentication (at v9.16 it raced with commands here)")
	iss, err := entratest.NewIssuer(nil)
	require.NoError(t, err)
	gw := entratest.StartGateway(t, iss, entratest.StartRedis(t, nil).Addr(), nil)
	p := newTest(t, iss, nil)
	const poolSize = 6
	rdb := redis.NewClient(&redis.Options{Addr: gw.Addr(), PoolSize: poolSize, StreamingCredentialsProvider: p})
	ctx := context.Background()
	busy := func() {
		// Enough concurrent blocking commands to take every connection of the pool.
		var wg sync.WaitGroup
		for range poolSize {
			wg.Go(func() { _ = rdb.Do(ctx, "blpop", "nothing", "0.1").Err() })
		}
		wg.Wait()
	}
	busy()
	open := rdb.PoolStats().TotalConns
	held := p.listeners()
	t.Logf("pool of %d: %d connections open, %d listeners held", poolSize, open, held)
	assert.Equal(t, uint32(poolSize), open)
	assert.Equal(t, int(open), held, "one listener per open connection")

	// Broken connections: go-redis drops them at their next use, and unsubscribes them.
	dropped := gw.DropConnections()
	require.Eventually(t, func() bool {
		busy()
		return p.listeners() == int(rdb.PoolStats().TotalConns)
	}, 10*time.Second, 50*time.Millisecond, "listeners of dropped connections are released")
	t.Logf("after %d connections dropped by the server: %d connections open, %d listeners held",
		dropped, rdb.PoolStats().TotalConns, p.listeners())

	require.NoError(t, rdb.Close())
	assert.Zero(t, p.listeners(), "Close unsubscribes every connection")
}

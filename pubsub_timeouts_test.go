package entraredis

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/testutil"
)

// Production's ratio: go-redis's timeouts (here 200 ms) far shorter than a token's life (here
// 3 s), as 5 s are against an hour. A subscriber writes only when it subscribes, so hours later
// the write deadline go-redis set then has long lapsed: the guard's own writes on it (the RESP3
// in-place AUTH, the RESP2 move's unsubscriptions) must run under the guard's deadline.

// TestPubSubShortTimeoutsAcrossRotations: a subscriber with go-redis timeouts of 200 ms, read
// through ReceiveTimeout, over TLS, across 3 rotations of 3 s tokens, a message published every
// 20 ms. Over RESP3 it is renewed in place at each rotation, over RESP2 moved: one connection
// dialled by go-redis for it (and one per RESP2 move by the guard), nothing lost, Receive never fails.
func TestPubSubShortTimeoutsAcrossRotations(t *testing.T) {
	testutil.Slow(t)
	for _, proto := range []int{3, 2} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			r := newConnRig(t, prodLife, nil, nil)
			// The subscriber's own client, so that its dials are counted apart from the publisher's.
			var subDials atomic.Int64
			d := &tls.Dialer{Config: r.tls}
			subOpt := &redis.Options{
				Addr: r.gw.Addr(), Protocol: proto, PoolSize: 2,
				ReadTimeout: prodTimeout, WriteTimeout: prodTimeout,
				Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
					subDials.Add(1)
					return d.DialContext(ctx, network, addr)
				},
			}
			sub := NewClient(r.h, subOpt)
			defer sub.Close()
			pubOpt := r.options(4) // the publisher is not the subject: default timeouts
			pubOpt.Protocol = proto
			pub := NewClient(r.h, pubOpt)
			defer pub.Close()
			ctx := context.Background()
			ps := sub.Subscribe(ctx, "news")
			defer ps.Close()
			_, err := ps.Receive(ctx) // the subscription's confirmation
			require.NoError(t, err)

			var sent sync.Map // payloads acknowledged by the server
			var nsent atomic.Int64
			stop := make(chan struct{})
			published := make(chan struct{})
			go func() {
				defer close(published)
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					if pub.Publish(ctx, "news", strconv.Itoa(i)).Err() == nil {
						sent.Store(strconv.Itoa(i), true)
						nsent.Add(1)
					}
				}
			}()
			info, ok := r.p.Token()
			require.True(t, ok)
			seen := map[string]int{}
			var recvErrs []string
			receive := func(until func() bool) {
				for !until() {
					m, err := ps.ReceiveTimeout(ctx, time.Second)
					if err != nil {
						recvErrs = append(recvErrs, err.Error())
						continue
					}
					if msg, ok := m.(*redis.Message); ok {
						seen[msg.Payload]++
					} else {
						recvErrs = append(recvErrs, fmt.Sprintf("not a message: %T %v", m, m))
					}
				}
			}
			limit := time.Now().Add(40 * time.Second)
			// Three rotations: three tokens after the first, which has expired; over RESP3 also the
			// third token's AUTH answered, which the subscriber's own reads take in (one nobody reads
			// from keeps the reply unread and is closed at the margin, the safety net), while the
			// publisher still runs; over RESP2 the third move made (the guard spreads the moves over
			// a window after each token: CI once stopped before it, 2 moves, 0 lost).
			receive(func() bool {
				now, _ := r.p.Token()
				require.True(t, time.Now().Before(limit), "3 rotations within 40 s")
				st := r.h.Stats()
				renewed := proto == 3 && st.PubSubReauths >= 3 || proto == 2 && st.PubSubMoved >= 3
				return now.Generation >= info.Generation+3 && time.Now().After(info.ExpiresOn.Add(100*time.Millisecond)) && renewed
			})
			close(stop)
			<-published
			settle := time.Now().Add(3 * time.Second)
			receive(func() bool { return len(seen) >= int(nsent.Load()) || time.Now().After(settle) })
			if proto == 2 { // a move dialled at the end of the window settles
				require.Eventually(t, func() bool {
					st := r.h.Stats()
					return subDials.Load() == int64(1+st.PubSubMoved+st.PubSubMoveFailures+st.PubSubClosed)
				}, 5*time.Second, 10*time.Millisecond)
			}
			lost := 0
			sent.Range(func(k, _ any) bool {
				if seen[k.(string)] == 0 {
					lost++
				}
				return true
			})
			st, gw := r.h.Stats(), r.gw.Stats()
			t.Logf("RESP%d, go-redis timeouts 200 ms, 3 s tokens, 3 rotations: messages %d of %d lost; Receive errors %d %q; subscriber client dials %d; re-AUTHs in place %d, moves %d, closed %d, renewal failures %d; closes at expiry %d",
				proto, lost, nsent.Load(), len(recvErrs), recvErrs, subDials.Load(), st.PubSubReauths, st.PubSubMoved, st.PubSubClosed, st.PubSubMoveFailures, gw.ExpiryCloses)
			assert.Zero(t, lost, "messages lost")
			assert.Empty(t, recvErrs, "Receive errors")
			// go-redis dials the subscriber once; a RESP2 move dials its new connection through the
			// same dialer.
			assert.Equal(t, int64(1+st.PubSubMoved), subDials.Load(), "the subscriber never re-dialled by go-redis")
			assert.Zero(t, st.PubSubClosed, "never closed under go-redis")
			assert.Zero(t, gw.ExpiryCloses, "no connection closed by the server at expiry")
			if proto == 3 {
				assert.GreaterOrEqual(t, st.PubSubReauths, uint64(3), "renewed in place at each rotation")
			} else {
				assert.GreaterOrEqual(t, st.PubSubMoved, uint64(3), "moved at each rotation")
			}
		})
	}
}

// ackedLost returns how many of the payloads the server acknowledged were never seen.
func ackedLost(acked *sync.Map, seen map[string]int) int {
	lost := 0
	acked.Range(func(k, _ any) bool {
		if seen[k.(string)] == 0 {
			lost++
		}
		return true
	})
	return lost
}

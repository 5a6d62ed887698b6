package entraredis

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPubSubMoveDuplicates measures what a RESP2 move costs a subscriber: a publisher sends as
// fast as it can (about a message per millisecond) through several moves; no message may be
// lost, and a message published while both connections were subscribed arrives twice. The
// figure (duplicates per move) is in the README's pub/sub row.
func TestPubSubMoveDuplicates(t *testing.T) {
	r := newConnRig(t, prodLife, nil, nil)
	opt := prodRatio(r.options(4))
	opt.Protocol = 2
	opt.ClientName = "subscriber-7"
	rdb := NewClient(r.h, opt)
	defer rdb.Close()
	ctx := context.Background()
	sub := rdb.Subscribe(ctx, "moves")
	defer sub.Close()
	_, err := sub.Receive(ctx)
	require.NoError(t, err)

	stop := make(chan struct{})
	var sent atomic.Int64
	var acked sync.Map // payloads the server acknowledged
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if rdb.Publish(ctx, "moves", i).Err() == nil {
				sent.Add(1)
				acked.Store(strconv.Itoa(i), true)
			}
			time.Sleep(time.Millisecond) // a steady publisher, not synchronisation
		}
	}()
	seen := map[string]int{}
	deadline := time.Now().Add(8 * time.Second) // three rotations
	for time.Now().Before(deadline) {
		m, err := sub.ReceiveTimeout(ctx, time.Second)
		require.NoError(t, err)
		msg, ok := m.(*redis.Message)
		require.True(t, ok, "Receive got %T %v, not a message", m, m)
		seen[msg.Payload]++
	}
	close(stop)
	<-published
	for ackedLost(&acked, seen) > 0 { // one that timed out at 200 ms may have gone through too
		m, err := sub.ReceiveTimeout(ctx, time.Second)
		require.NoError(t, err)
		seen[m.(*redis.Message).Payload]++
	}
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	st, gw := r.h.Stats(), r.gw.Stats()
	perMove := float64(dups) / float64(max(st.PubSubMoved, 1))
	t.Logf("messages %d distinct of %d sent, %d twice; moves %d (%.1f duplicates per move), failed dials %d, closes %d; closes at expiry %d",
		len(seen), sent.Load(), dups, st.PubSubMoved, perMove, st.PubSubMoveFailures, st.PubSubClosed, gw.ExpiryCloses)
	assert.Zero(t, ackedLost(&acked, seen), "none lost")
	assert.GreaterOrEqual(t, st.PubSubMoved, uint64(2))
	assert.Zero(t, st.PubSubClosed)
	assert.Zero(t, gw.ExpiryCloses)

	// The connection the subscriber reads from now was opened by the guard: it has the client
	// name go-redis gave the first one.
	list, err := rdb.ClientList(ctx).Result()
	require.NoError(t, err)
	named := 0
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); slices.Contains(f, "name=subscriber-7") && slices.Contains(f, "sub=1") {
			named++
		}
	}
	assert.Equal(t, 1, named, "the moved subscriber keeps its client name:\n%s", list)
}

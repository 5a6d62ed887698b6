package entratest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/testutil"
)

func TestCluster(t *testing.T) {
	testutil.Slow(t)
	requireRedisServer(t)
	iss := newTestIssuer(t, nil)
	start := time.Now()
	cl := StartCluster(t, iss, nil)
	t.Logf("cluster ready in %s", time.Since(start))
	require.Len(t, cl.Addrs(), 3)
	require.Len(t, cl.Nodes(), 3)

	tok, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()[:1], Username: iss.ObjectID(), Password: tok})
	defer c.Close()
	ctx := context.Background()
	for i := range 100 {
		require.NoError(t, c.Set(ctx, fmt.Sprint("key-", i), i, 0).Err())
	}
	for i := range 100 {
		v, err := c.Get(ctx, fmt.Sprint("key-", i)).Int()
		require.NoError(t, err)
		assert.Equal(t, i, v)
	}
	// Clients reach every node, and only through the gateways.
	for _, g := range cl.Gateways() {
		assert.Positive(t, g.Stats().AuthAccepted, "gateway %s used", g.Addr())
	}
	slots, err := c.ClusterSlots(ctx).Result()
	require.NoError(t, err)
	gw := map[string]bool{}
	for _, a := range cl.Addrs() {
		gw[a] = true
	}
	for _, s := range slots {
		for _, n := range s.Nodes {
			assert.True(t, gw[n.Addr], "slot owner announced at %s", n.Addr)
		}
	}

	plain := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), MaxRedirects: 1})
	defer plain.Close()
	assert.ErrorContains(t, plain.Get(ctx, "key-1").Err(), "NOAUTH")
	assert.Equal(t, int64(0), cl.Stats().ExpiryCloses)
}

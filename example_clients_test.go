package entraredis_test

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

// A cluster client (Azure Managed Redis with the OSS cluster policy, a clustered Azure Cache for
// Redis), with a hook made by hook.New: that is how to choose the hook's options (fewer retries,
// its events) and read its counters; every constructor takes it in place of the provider. Here
// entratest runs a cluster of 3 real redis-server masters, each behind a gateway that checks
// tokens as Azure does; on Azure the address is "<name>.<region>.redis.azure.net:10000" and TLS
// is turned on for it.
func ExampleNewClusterClient() {
	iss, err := entratest.NewIssuer(nil)
	if err != nil {
		panic(err)
	}
	defer iss.Close()
	cluster, err := entratest.RunCluster(iss, nil)
	if err != nil {
		panic(err)
	}
	defer cluster.Close()

	p, err := provider.New(iss, nil) // on Azure: provider.NewManagedIdentity(nil, nil), ...
	if err != nil {
		panic(err)
	}
	defer p.Close()
	h := hook.New(p, &hook.Options{
		MaxRetries: 2,
		OnEvent: func(e hook.Event) {
			if e.Kind == hook.EventGaveUp {
				fmt.Println("gave up on", e.Command, e.Err)
			}
		},
	})
	rdb := entraredis.NewClusterClient(h, &redis.ClusterOptions{Addrs: cluster.Addrs()})
	defer rdb.Close()

	ctx := context.Background()
	for _, key := range []string{"a", "b", "c"} { // one key on each master
		if err := rdb.Set(ctx, key, "v-"+key, 0).Err(); err != nil {
			panic(err)
		}
	}
	fmt.Println(rdb.Get(ctx, "a").Val(), rdb.Get(ctx, "b").Val(), rdb.Get(ctx, "c").Val())
	authed := 0
	for _, gw := range cluster.Gateways() {
		if gw.Stats().AuthAccepted > 0 {
			authed++
		}
	}
	fmt.Println("masters reached with a token:", authed, "retries:", h.Stats().Retries)
	// Output:
	// v-a v-b v-c
	// masters reached with a token: 3 retries: 0
}

// A ring of shards, each authenticating with the provider's tokens: the hook is on every shard
// client. Here two in-memory servers behind entratest's gateways stand in for the caches.
func ExampleNewRing() {
	iss, err := entratest.NewIssuer(nil)
	if err != nil {
		panic(err)
	}
	defer iss.Close()
	addrs := map[string]string{}
	var gateways []*entratest.Gateway
	for _, name := range []string{"shard1", "shard2"} {
		srv, err := miniredis.Run()
		if err != nil {
			panic(err)
		}
		defer srv.Close()
		gw, err := entratest.NewGateway(iss, srv.Addr(), nil)
		if err != nil {
			panic(err)
		}
		defer gw.Close()
		addrs[name] = gw.Addr()
		gateways = append(gateways, gw)
	}

	p, err := provider.New(iss, nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	rdb := entraredis.NewRing(p, &redis.RingOptions{Addrs: addrs})
	defer rdb.Close()

	ctx := context.Background()
	for i := range 10 {
		if err := rdb.Set(ctx, fmt.Sprint("key", i), i, 0).Err(); err != nil {
			panic(err)
		}
	}
	fmt.Println(gateways[0].Stats().AuthAccepted > 0, gateways[1].Stats().AuthAccepted > 0)
	// Output: true true
}

// The universal client picks the client type from the options, as redis.NewUniversalClient does:
// one address makes a *redis.Client, several (or IsClusterMode) a *redis.ClusterClient, a
// MasterName a Sentinel-managed one; each is built as this package's matching constructor does.
func ExampleNewUniversalClient() {
	iss, err := entratest.NewIssuer(nil)
	if err != nil {
		panic(err)
	}
	defer iss.Close()
	srv, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	gw, err := entratest.NewGateway(iss, srv.Addr(), nil)
	if err != nil {
		panic(err)
	}
	defer gw.Close()

	p, err := provider.New(iss, nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	rdb := entraredis.NewUniversalClient(p, &redis.UniversalOptions{Addrs: []string{gw.Addr()}})
	defer rdb.Close()

	_, single := rdb.(*redis.Client)
	n, err := rdb.Incr(context.Background(), "visits").Result()
	fmt.Println(single, n, err)
	// Output: true 1 <nil>
}

// A Sentinel-managed deployment (self-hosted: Azure offers no Sentinel) whose servers accept Entra
// ID tokens: the master's connections authenticate with the provider's tokens and carry the hook;
// the Sentinels keep SentinelUsername and SentinelPassword. Not run: it needs Sentinels.
func ExampleNewFailoverClient() {
	p, err := provider.NewManagedIdentity(nil, nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	rdb := entraredis.NewFailoverClient(p, &redis.FailoverOptions{
		MasterName:    "mymaster",
		SentinelAddrs: []string{"sentinel-0:26379", "sentinel-1:26379", "sentinel-2:26379"},
	})
	defer rdb.Close()
	fmt.Println(rdb.Ping(context.Background()).Err())
}

// NewFailoverClusterClient is NewFailoverClient with reads routed to replicas (RouteRandomly or
// RouteByLatency); the hook is on the client of every node. Not run: it needs Sentinels.
func ExampleNewFailoverClusterClient() {
	p, err := provider.NewManagedIdentity(nil, nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	rdb := entraredis.NewFailoverClusterClient(p, &redis.FailoverOptions{
		MasterName:     "mymaster",
		SentinelAddrs:  []string{"sentinel-0:26379", "sentinel-1:26379", "sentinel-2:26379"},
		RouteByLatency: true,
	})
	defer rdb.Close()
	fmt.Println(rdb.Get(context.Background(), "key").Val())
}

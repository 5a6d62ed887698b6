package entraredis_test

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/provider"
)

// A client authenticating with Entra ID tokens. On Azure the credential is an azidentity one
// (azidentity.NewDefaultAzureCredential, a managed identity, ...) and the address the cache's host
// name; here entratest's issuer mints the tokens and its gateway checks them as Azure does, in front
// of an in-memory server.
func Example() {
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

	p, err := provider.New(iss, nil) // on Azure: provider.NewManagedIdentity(nil, nil), provider.FromEnv(nil), ...
	if err != nil {
		panic(err)
	}
	defer p.Close()
	rdb := entraredis.NewClient(p, &redis.Options{Addr: gw.Addr()})
	defer rdb.Close()

	n, err := rdb.Incr(context.Background(), "visits").Result()
	fmt.Println(n, err, gw.Stats().AuthAccepted)
	// Output: 1 <nil> 1
}

func ExampleIsAzureHost() {
	for _, addr := range []string{"mycache.redis.cache.windows.net:6380", "mycache.westeurope.redis.azure.net:10000", "127.0.0.1:6379"} {
		fmt.Println(addr, entraredis.IsAzureHost(addr))
	}
	// Output:
	// mycache.redis.cache.windows.net:6380 true
	// mycache.westeurope.redis.azure.net:10000 true
	// 127.0.0.1:6379 false
}

package entraredis_test

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

// fixedToken is a credential that always returns the same token, so that the example's server
// can be told which password to expect.
type fixedToken azcore.AccessToken

func (f fixedToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken(f), nil
}

// A client authenticating with Entra ID tokens. On Azure the credential is an azidentity one
// (azidentity.NewDefaultAzureCredential, a managed identity, ...) and the address the cache's
// host name; here a local emulator mints the token and an in-memory server checks it.
func Example() {
	iss, err := entratest.NewIssuer(nil)
	if err != nil {
		panic(err)
	}
	tok, exp, err := iss.Mint(time.Hour)
	if err != nil {
		panic(err)
	}
	srv := miniredis.NewMiniRedis()
	if err := srv.Start(); err != nil {
		panic(err)
	}
	defer srv.Close()
	srv.RequireUserAuth(iss.ObjectID(), tok) // Azure: username = the token's oid, password = the token

	p, err := provider.New(fixedToken{Token: tok, ExpiresOn: exp}, nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	rdb := entraredis.NewClient(p, &redis.Options{Addr: srv.Addr()})
	defer rdb.Close()

	n, err := rdb.Incr(context.Background(), "visits").Result()
	fmt.Println(n, err)
	// Output: 1 <nil>
}

// With chooses the hook's options: fewer retries, and the hook's events for metrics.
func ExampleWith() {
	p, err := provider.NewDefault(nil, nil)
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
	rdb := entraredis.With(h).NewClusterClient(&redis.ClusterOptions{
		Addrs: []string{"mycache.westeurope.redis.azure.net:10000"}, // TLS is turned on for Azure hosts
	})
	defer rdb.Close()
	fmt.Println(h.Stats().Retries)
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

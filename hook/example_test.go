package hook_test

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

// fixedToken always returns the same token, so that the example's server knows the password.
type fixedToken azcore.AccessToken

func (f fixedToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken(f), nil
}

// Installing the hook by hand on a go-redis client (entraredis.NewClient does this for you), and
// reading its counters.
func ExampleNew() {
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
	srv.RequireUserAuth(iss.ObjectID(), tok)

	p, err := provider.New(fixedToken{Token: tok, ExpiresOn: exp}, nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	h := hook.New(p, &hook.Options{
		OnEvent: func(e hook.Event) { fmt.Println("event:", e.Kind, e.Command) },
	})
	defer h.Close()

	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), CredentialsProviderContext: p.CredentialsProviderContext})
	rdb.AddHook(h)
	defer rdb.Close()

	err = rdb.Set(context.Background(), "greeting", "hello", 0).Err()
	fmt.Println(err, h.Stats().Dials, h.Stats().Retries)
	// Output: <nil> 1 0
}

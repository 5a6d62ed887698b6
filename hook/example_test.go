package hook_test

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

// Installing the hook by hand on a go-redis client (entraredis.NewClient does this for you), and
// reading its counters. entratest's gateway checks the tokens as Azure does.
func ExampleNew() {
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
	h := hook.New(p, &hook.Options{
		OnEvent: func(e hook.Event) { fmt.Println("event:", e.Kind, e.Command) },
	})
	defer h.Close()

	rdb := redis.NewClient(&redis.Options{Addr: gw.Addr(), CredentialsProviderContext: p.CredentialsProviderContext})
	rdb.AddHook(h)
	defer rdb.Close()

	err = rdb.Set(context.Background(), "greeting", "hello", 0).Err()
	fmt.Println(err, h.Stats().Dials, h.Stats().Retries)
	// Output: <nil> 1 0
}

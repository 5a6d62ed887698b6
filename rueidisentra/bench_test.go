package rueidisentra

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/entraredis/entraredis/internal/acltest"
	"github.com/entraredis/entraredis/provider"
)

// BenchmarkAuthCredentialsFn: the cost of one call with a token cached (each connection calls it
// once per token).
func BenchmarkAuthCredentialsFn(b *testing.B) {
	env := acltest.Start(b, &acltest.Options{Lifetime: time.Hour})
	p, err := provider.New(env, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	fn := AuthCredentialsFn(p)
	if _, err := fn(rueidis.AuthCredentialsContext{}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := fn(rueidis.AuthCredentialsContext{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommands: GET and SET of 100 bytes from 1 and 8 goroutines, rueidis with a static
// password next to rueidis through NewClient, both on one real redis-server that checks the
// tokens through its ACL (no proxy in between).
func BenchmarkCommands(b *testing.B) {
	env := acltest.Start(b, &acltest.Options{Lifetime: time.Hour})
	ctx := context.Background()
	tok, _, err := env.Issuer().Mint(time.Hour) // the static password is a token too: AUTH of one size
	if err != nil {
		b.Fatal(err)
	}
	if err := env.Admin(0).Do(ctx, "acl", "setuser", "static", "on", ">"+tok, "~*", "&*", "+@all").Err(); err != nil {
		b.Fatal(err)
	}
	static, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{env.Addr()}, Username: "static", Password: tok})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(static.Close)
	p, err := provider.New(env, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	entra, err := NewClient(p, rueidis.ClientOption{InitAddress: []string{env.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(entra.Close)
	val := strings.Repeat("v", 100)
	for _, c := range []rueidis.Client{static, entra} {
		if err := c.Do(ctx, c.B().Set().Key("bench:get").Value(val).Build()).Error(); err != nil {
			b.Fatal(err)
		}
	}
	ops := []struct {
		name string
		cmd  func(c rueidis.Client) rueidis.Completed
	}{
		{"get", func(c rueidis.Client) rueidis.Completed { return c.B().Get().Key("bench:get").Build() }},
		{"set", func(c rueidis.Client) rueidis.Completed { return c.B().Set().Key("bench:set").Value(val).Build() }},
	}
	for _, op := range ops {
		for _, g := range []int{1, 8} {
			for _, c := range []struct {
				name string
				c    rueidis.Client
			}{{"static", static}, {"rueidisentra", entra}} {
				b.Run(fmt.Sprintf("op=%s/g=%d/client=%s", op.name, g, c.name), func(b *testing.B) {
					b.ReportAllocs()
					var next atomic.Int64
					var wg sync.WaitGroup
					n := int64(b.N)
					b.ResetTimer()
					for range g {
						wg.Go(func() {
							for next.Add(1) <= n {
								if err := c.c.Do(ctx, op.cmd(c.c)).Error(); err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					wg.Wait()
				})
			}
		}
	}
}

package bench

import (
	"context"
	"testing"
	"time"

	"github.com/entraredis/entraredis/provider"
)

// BenchmarkCredentials measures the warm path go-redis takes for each new connection: the
// provider's CredentialsProviderContext with a valid token cached (client=entraredis), next to a
// closure returning two constant strings (client=plain), the least any credentials function costs.
// Target: <= 10 ns/op and 0 allocs/op.
func BenchmarkCredentials(b *testing.B) {
	iss := newIssuer(b, time.Hour)
	p, err := provider.New(iss, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	ctx := context.Background()
	user, pass, err := p.CredentialsProviderContext(ctx)
	if err != nil {
		b.Fatal(err)
	}
	static := func(context.Context) (string, string, error) { return user, pass, nil }
	fns := []client[func(context.Context) (string, string, error)]{
		{"plain", static},
		{"entraredis", p.CredentialsProviderContext},
	}
	b.Run("path=serial", func(b *testing.B) {
		for _, c := range ordered(fns) {
			b.Run("client="+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, _, err := c.v(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	})
	b.Run("path=parallel", func(b *testing.B) {
		for _, c := range ordered(fns) {
			b.Run("client="+c.name, func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, _, err := c.v(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	})
}

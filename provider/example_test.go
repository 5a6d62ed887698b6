package provider_test

import (
	"context"
	"fmt"
	"log"

	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/provider"
)

// A provider turns any azcore.TokenCredential into go-redis credentials. Here a local entratest
// issuer stands in for azidentity.NewManagedIdentityCredential(nil), so the example runs offline.
func Example() {
	issuer, err := entratest.NewIssuer(&entratest.IssuerOptions{ObjectID: "11111111-2222-3333-4444-555555555555"})
	if err != nil {
		log.Fatal(err)
	}
	defer issuer.Close()

	p, err := provider.New(issuer, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	user, _, err := p.CredentialsProviderContext(context.Background())
	fmt.Println("username:", user, err)

	// Plain go-redis wiring; entraredis.NewClient does this and adds the hook.
	opt := &redis.Options{
		Addr:                         "mycache.redis.cache.windows.net:6380",
		CredentialsProviderContext:   p.CredentialsProviderContext, // new connections
		StreamingCredentialsProvider: p,                            // re-AUTH of open connections
	}
	_ = opt
	// Output: username: 11111111-2222-3333-4444-555555555555 <nil>
}

// FromEnv picks the identity from Service Connector's variables: a service principal, a
// user-assigned managed identity or DefaultAzureCredential.
func ExampleFromEnv() {
	p, err := provider.FromEnv(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
}

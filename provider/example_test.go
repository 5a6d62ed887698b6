package provider_test

import (
	"context"
	"fmt"
	"log"
	"os"

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

	// The provider alone, for a framework that takes only go-redis options: new connections get
	// the token, and go-redis's streaming re-authentication renews open ones (less well than the
	// hook: see docs/behaviour.md). entraredis.NewClient sets only CredentialsProviderContext and renews
	// open connections with its hook instead (StreamingCredentialsProvider only with a negative
	// hook.Options.GuardMargin).
	opt := &redis.Options{
		Addr:                         "mycache.redis.cache.windows.net:6380",
		CredentialsProviderContext:   p.CredentialsProviderContext, // new connections
		StreamingCredentialsProvider: p,                            // re-AUTH of open connections
	}
	_ = opt
	// Output: username: 11111111-2222-3333-4444-555555555555 <nil>
}

// FromEnv picks the identity from Service Connector's variables: with AZURE_REDIS_CLIENTSECRET a
// service principal, with AZURE_REDIS_CLIENTID alone that user-assigned managed identity (here),
// with none DefaultAzureCredential. entratest's managed-identity endpoint stands in for Azure's.
func ExampleFromEnv() {
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{ObjectID: "11111111-2222-3333-4444-555555555555"})
	if err != nil {
		log.Fatal(err)
	}
	defer iss.Close()
	iss.AddManagedIdentity(entratest.ManagedIdentity{ClientID: "22222222-0000-0000-0000-000000000001", ObjectID: "22222222-0000-0000-0000-000000000002"})
	restore, err := iss.ExportManagedIdentityEnv()
	if err != nil {
		log.Fatal(err)
	}
	defer restore()
	os.Setenv("AZURE_REDIS_CLIENTID", "22222222-0000-0000-0000-000000000001") // Service Connector sets it
	defer os.Unsetenv("AZURE_REDIS_CLIENTID")

	p, err := provider.FromEnv(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	user, _, err := p.CredentialsProviderContext(context.Background())
	fmt.Println("username:", user, err)
	// Output: username: 22222222-0000-0000-0000-000000000002 <nil>
}

package entratest_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/entratest"
)

// newCacheClient is the code under test: it connects to a cache with tokens from any azidentity
// credential, as an application would (username: the identity's object ID, password: the token).
func newCacheClient(cred azcore.TokenCredential, username, addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: addr,
		CredentialsProviderContext: func(ctx context.Context) (string, string, error) {
			tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{entratest.Scope}})
			return username, tok.Token, err
		},
	})
}

// Test your own code against Entra ID rules without Azure: an Issuer stands in for the credential,
// and a Gateway in front of a Redis server (here miniredis; in a test, entratest.StartRedis runs a
// real redis-server) checks the tokens as Azure does.
func Example() {
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: time.Minute})
	if err != nil {
		panic(err)
	}
	defer iss.Close()
	backend, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer backend.Close()
	gw, err := entratest.NewGateway(iss, backend.Addr(), nil)
	if err != nil {
		panic(err)
	}
	defer gw.Close()
	ctx := context.Background()

	rdb := newCacheClient(iss, iss.ObjectID(), gw.Addr())
	defer rdb.Close()
	fmt.Println(rdb.Set(ctx, "greeting", "hello", 0).Err())
	fmt.Println(rdb.Get(ctx, "greeting").Val())

	// The gateway refuses what Azure refuses: here, a username that is not the token's oid.
	wrong := newCacheClient(iss, "someone-else", gw.Addr())
	defer wrong.Close()
	fmt.Println(wrong.Ping(ctx).Err())

	// Injected identity-provider faults reach the code under test.
	iss.FailNext(1, 503)
	fresh := newCacheClient(iss, iss.ObjectID(), gw.Addr())
	defer fresh.Close()
	fmt.Println(fresh.Ping(ctx).Err() != nil)

	st := gw.Stats()
	fmt.Println("accepted:", st.AuthAccepted, "refused:", st.AuthRefused)
	// Output:
	// <nil>
	// hello
	// ERR WRONGPASS invalid username-password pair
	// true
	// accepted: 1 refused: 2
}

// The real azidentity.ManagedIdentityCredential gets its tokens from the issuer's App Service
// managed-identity endpoint. In a test, iss.SetManagedIdentityEnv(t) sets the environment and
// restores it afterwards.
func ExampleIssuer_ServeManagedIdentity() {
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: 2 * time.Minute})
	if err != nil {
		panic(err)
	}
	defer iss.Close()
	endpoint, header, err := iss.ServeManagedIdentity()
	if err != nil {
		panic(err)
	}
	for k, v := range map[string]string{"IDENTITY_ENDPOINT": endpoint, "IDENTITY_HEADER": header} {
		old, had := os.LookupEnv(k)
		os.Setenv(k, v)
		defer func() {
			if had {
				os.Setenv(k, old)
			} else {
				os.Unsetenv(k)
			}
		}()
	}

	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		panic(err)
	}
	tok, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{entratest.Scope}})
	if err != nil {
		panic(err)
	}
	fmt.Println(time.Until(tok.ExpiresOn).Round(time.Minute))
	fmt.Println("served:", iss.Stats().Served)
	// Output:
	// 2m0s
	// served: 1
}

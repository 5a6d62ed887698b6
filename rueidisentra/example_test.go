package rueidisentra_test

import (
	"context"
	"fmt"
	"log"

	"github.com/redis/rueidis"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/provider"
	"github.com/entraredis/entraredis/rueidisentra"
)

// A rueidis client on Entra ID. On Azure the credential is an azidentity one (for instance
// azidentity.NewManagedIdentityCredential(nil)) and the address the cache's host name, which gets
// TLS; here entratest's issuer and gateway stand in for them, so the example runs offline.
func Example() {
	issuer, err := entratest.NewIssuer(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer issuer.Close()
	srv, err := entratest.RunRedis(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	gw, err := entratest.NewGateway(issuer, srv.Addr(), nil) // Azure's rules: tokens, oid, expiry
	if err != nil {
		log.Fatal(err)
	}
	defer gw.Close()

	p, err := provider.New(issuer, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	client, err := rueidisentra.NewClient(p, rueidis.ClientOption{InitAddress: []string{gw.Addr()}})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx := context.Background()
	err = client.Do(ctx, client.B().Set().Key("greeting").Value("hello").Build()).Error()
	fmt.Println("SET:", err)
	v, err := client.Do(ctx, client.B().Get().Key("greeting").Build()).ToString()
	fmt.Println("GET:", v, err)
	// Output:
	// SET: <nil>
	// GET: hello <nil>
}

// AuthCredentialsFn alone, for options built elsewhere (set TLSConfig for Azure yourself).
func ExampleAuthCredentialsFn() {
	var p *provider.Provider // provider.New(azidentity credential, nil)
	opt := rueidis.ClientOption{
		InitAddress:       []string{"mycache.redis.azure.net:10000"},
		AuthCredentialsFn: rueidisentra.AuthCredentialsFn(p),
	}
	_ = opt
}

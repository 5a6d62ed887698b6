package entraredis_test

import (
	"context"
	"fmt"
	"os"

	"github.com/alicebob/miniredis/v2"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/entratest"
)

// A client from Service Connector's variables. On Azure, Service Connector sets AZURE_REDIS_HOST
// (and AZURE_REDIS_CLIENTID for a user-assigned identity); here entratest's managed-identity
// endpoint and gateway stand in for Azure, through the real azidentity credential.
func ExampleNewClientFromEnv() {
	iss, err := entratest.NewIssuer(nil)
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
	restore, err := iss.ExportManagedIdentityEnv()
	if err != nil {
		panic(err)
	}
	defer restore()
	os.Setenv("AZURE_REDIS_HOST", gw.Addr())
	os.Setenv("AZURE_REDIS_CLIENTID", entratest.DefaultAppID)
	defer os.Unsetenv("AZURE_REDIS_HOST")
	defer os.Unsetenv("AZURE_REDIS_CLIENTID")

	rdb, p, err := entraredis.NewClientFromEnv(nil, nil)
	if err != nil {
		panic(err)
	}
	defer p.Close()
	defer rdb.Close()
	fmt.Println(rdb.Set(context.Background(), "greeting", "hello", 0).Err())

	os.Unsetenv("AZURE_REDIS_HOST")
	_, _, err = entraredis.NewClientFromEnv(nil, nil)
	fmt.Println(err)
	// Output:
	// <nil>
	// entraredis: environment variable not set: AZURE_REDIS_HOST: connect the app to the cache with Service Connector, or set it to the cache's host name (<name>.redis.cache.windows.net)
}

// docs/rueidis-valkey.md's rueidis snippet, byte for byte (internal/readme checks it is here): it compiles
// with this module's dependencies, not the root module's.

package rueidisentra_test

import (
	"context"
	"log"

	"github.com/redis/rueidis" // valkey-go: "github.com/valkey-io/valkey-go"

	"github.com/entraredis/entraredis/provider"
	"github.com/entraredis/entraredis/rueidisentra" // valkey-go: ".../valkeyentra"
)

func main() {
	p, err := provider.NewManagedIdentity(nil, nil) // or provider.New(anyAzCredential, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	// valkey-go: valkeyentra.NewClient(p, valkey.ClientOption{...}), the same otherwise.
	client, err := rueidisentra.NewClient(p, rueidis.ClientOption{InitAddress: []string{"mycache.redis.azure.net:10000"}})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	if err := client.Do(ctx, client.B().Set().Key("key").Value("value").Build()).Error(); err != nil {
		log.Fatal(err)
	}
}
